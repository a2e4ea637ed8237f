"""Forgetting what nobody can use any more, at start and then every ``prune_interval_seconds``: finished export
jobs older than their result link's lifetime (with their result files), expired tokens, and the partial files
of renders a killed server left behind (at start only, before any render runs), and, with render workers, the
shared sources that no waiting or running render needs and that nobody exported for an hour.

Cheap on purpose: one pass over the jobs and tokens in memory; the store writes what was forgotten in its
next batch.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from localnemo.quota import unlink_quietly
from localnemo.runtime import Runtime

if TYPE_CHECKING:
    from localnemo.renderqueue import RenderQueue

log = logging.getLogger(__name__)

#: A shared source no render needs is kept this long after it was last shared: an export asked again soon
#: (another size, a retry) finds it there.
MEDIA_UNUSED_SECONDS = 3600.0


def _stale_partials(folder: Path) -> list[Path]:
    try:
        return [entry for entry in folder.iterdir() if entry.name.startswith(".")]
    except OSError:
        return []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        unlink_quietly(path)


class Housekeeping:
    """Prunes the runtime's store; ``on_startup`` prunes once and starts the periodic pass."""

    def __init__(self, runtime: Runtime, queue: RenderQueue | None = None) -> None:
        self.runtime = runtime
        self.queue = queue
        self.config = runtime.config
        self.state = runtime.state

    async def on_startup(self, app: web.Application) -> None:
        # Renders of this run have not started yet: every partial file there is a killed run's. Not so with
        # render workers, which write there while this server starts (each cleans up after its own).
        if self.config.queue_db is None:
            for path in await asyncio.to_thread(_stale_partials, self.config.renders_dir):
                await asyncio.to_thread(_remove, path)
        await self.prune()
        self.runtime.spawn(self._every_interval(), "localnemo-housekeeping")

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.config.prune_interval_seconds)
            try:
                await self.prune()
                if self.queue is not None:
                    await self.queue.prune_media(MEDIA_UNUSED_SECONDS)
            except Exception:
                log.exception("localnemo.prune.failed")

    async def prune(self) -> None:
        """Forget finished jobs older than a result link lives (and remove their files), and expired tokens."""
        cutoff_ms = (time.time() - self.config.result_link_hours * 3600) * 1000
        old = [
            job for job in self.state.jobs.values()
            if job.finished and (job.completed_at_ms or job.created_at_ms) < cutoff_ms
        ]  # fmt: skip
        for job in old:
            # The files first: a job that is gone from the state has no file left behind it.
            if job.output_path is not None:
                await asyncio.to_thread(unlink_quietly, job.output_path)
                await asyncio.to_thread(unlink_quietly, job.output_path.with_suffix(".srt"))
            self.state.remove_job(job)
        tokens = self.state.prune_tokens()
        if old or tokens:
            log.info("localnemo.pruned jobs=%s tokens=%s", len(old), tokens)
