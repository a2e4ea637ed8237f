"""The disk quota of the data folder: its size, and removing the least recently used idle sessions (their
uploads and renders) when an upload or a render would not fit under ``max_disk_mb``. Uploads are checked
chunk by chunk while they stream (``admit``), so a body with no declared length cannot fill the disk."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localnemo.config import LocalNemoConfig
from localnemo.envelope import ApiError
from localnemo.state import LocalNemoState, SessionRecord

log = logging.getLogger(__name__)

# A streaming upload re-measures the data folder at least once per this many bytes it writes, so that files
# written meanwhile by others (renders, other uploads) are seen.
_RESCAN_BYTES = 64 * 1024 * 1024
# Below this share of the limit, a measure younger than _RESCAN_SECONDS (plus what uploads wrote since) stands in
# for walking the folder again: with a thousand sessions, a walk per upload and per export was most of the
# server's work. Near the limit, and for whatever renders wrote meanwhile, the folder is measured again.
_HEADROOM = 0.9
_RESCAN_SECONDS = 5.0


class DiskQuota:
    """Keeps the files under ``config.data_dir`` within ``config.max_disk_mb``."""

    def __init__(self, config: LocalNemoConfig, state: LocalNemoState) -> None:
        self.config = config
        self.state = state
        # The folder's size at the last measure, and what streaming uploads wrote since.
        self._measured: int | None = None
        self._measured_at = 0.0
        self._written_since = 0
        # Sessions an upload is streaming into: never idle, whatever their jobs say.
        self._uploading: Counter[str] = Counter()

    @contextmanager
    def uploading(self, session: SessionRecord) -> Iterator[None]:
        """While an upload streams into ``session``, its folder is not removed to make room."""
        self._uploading[session.session_id] += 1
        try:
            yield
        finally:
            self._uploading[session.session_id] -= 1
            if self._uploading[session.session_id] <= 0:
                del self._uploading[session.session_id]

    async def admit(self, size: int, *, keep: SessionRecord | None = None) -> None:
        """Before a streaming upload writes ``size`` more bytes: make room for them, or ApiError 507. Cheap
        while the folder is clearly under the limit; measured again near it, and every so often."""
        limit = self.config.max_disk_mb * 1024 * 1024
        if limit <= 0:
            return
        if (
            self._measured is None
            or self._measured + self._written_since + size > limit
            or self._written_since >= _RESCAN_BYTES
        ):
            await self.make_room(size, keep=keep)
        self._written_since += size

    async def make_room(self, needed: int, *, keep: SessionRecord | None = None) -> None:
        """Keep the data folder under ``max_disk_mb``: remove the least recently used idle sessions (their
        uploads and renders) until ``needed`` more bytes fit; ApiError 507 when they cannot."""
        limit = self.config.max_disk_mb * 1024 * 1024
        if limit <= 0:
            return
        if (
            self._measured is not None
            and time.monotonic() - self._measured_at < _RESCAN_SECONDS
            and self._measured + self._written_since + needed <= _HEADROOM * limit
        ):
            return
        used = await asyncio.to_thread(folder_size, self.config.data_dir)
        self._measured, self._written_since, self._measured_at = used, 0, time.monotonic()
        if used + needed <= limit:
            return
        for session in sorted(self.state.sessions.values(), key=lambda s: s.last_active):
            if used + needed <= limit:
                break
            if session is keep or not self._idle(session):
                continue
            used -= await self._remove_session(session)
        self._measured = used
        if used + needed > limit:
            log.warning("localnemo.disk.full used=%s needed=%s limit=%s", used, needed, limit)
            raise ApiError(507, 507, "not enough space on this server: try again later or send a smaller file")

    def _idle(self, session: SessionRecord) -> bool:
        if self._uploading[session.session_id] > 0 or self.state.active_runs.get(session.session_id, 0) > 0:
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
                await asyncio.to_thread(unlink_quietly, path.with_suffix(".srt"))
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
