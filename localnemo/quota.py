"""The disk quota of the data folder: its size, and removing the least recently used idle sessions (their
uploads and renders) when an upload or a render would not fit under ``max_disk_mb``."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

from localnemo.config import LocalNemoConfig
from localnemo.envelope import ApiError
from localnemo.state import LocalNemoState, SessionRecord

log = logging.getLogger(__name__)


class DiskQuota:
    """Keeps the files under ``config.data_dir`` within ``config.max_disk_mb``."""

    def __init__(self, config: LocalNemoConfig, state: LocalNemoState) -> None:
        self.config = config
        self.state = state

    async def make_room(self, needed: int, *, keep: SessionRecord | None = None) -> None:
        """Keep the data folder under ``max_disk_mb``: remove the least recently used idle sessions (their
        uploads and renders) until ``needed`` more bytes fit; ApiError 507 when they cannot."""
        limit = self.config.max_disk_mb * 1024 * 1024
        if limit <= 0:
            return
        used = await asyncio.to_thread(folder_size, self.config.data_dir)
        if used + needed <= limit:
            return
        for session in sorted(self.state.sessions.values(), key=lambda s: s.last_active):
            if used + needed <= limit:
                break
            if session is keep or not self._idle(session):
                continue
            used -= await self._remove_session(session)
        if used + needed > limit:
            log.warning("localnemo.disk.full used=%s needed=%s limit=%s", used, needed, limit)
            raise ApiError(507, 507, "not enough space on this server: try again later or send a smaller file")

    def _idle(self, session: SessionRecord) -> bool:
        if self.state.active_runs.get(session.session_id, 0) > 0:
            return False
        return all(job.finished for job in self.state.jobs.values() if job.session_id == session.session_id)

    async def _remove_session(self, session: SessionRecord) -> int:
        freed = await asyncio.to_thread(folder_size, session.folder)
        await asyncio.to_thread(shutil.rmtree, session.folder, True)
        for job in self.state.jobs.values():
            if job.session_id == session.session_id and job.output_path is not None:
                path, job.output_path = job.output_path, None
                freed += await asyncio.to_thread(file_size, path)
                await asyncio.to_thread(unlink_quietly, path)
                if job.status == "completed":
                    job.status, job.error = "failed", "the exported video was removed to free space; export again"
                self.state.job_changed(job)
        self.state.sessions.pop(session.session_id, None)
        # Gone from disk too: a restarted server must not bring back a session whose files are deleted.
        self.state.session_removed(session.session_id)
        log.info("localnemo.disk.session_removed session_id=%s freed=%s", session.session_id, freed)
        return freed


def unlink_quietly(path: Path) -> None:
    """Remove a file if it is there (blocking: run it in a thread); a failure is logged, not raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.warning("localnemo.cleanup.failed path=%s", path.name)


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def folder_size(folder: Path) -> int:
    """Bytes of every file under ``folder`` (blocking: run it in a thread)."""
    total = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total
