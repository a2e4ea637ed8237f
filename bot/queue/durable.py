"""The durable job queue: Procrastinate's tables in the bot's PostgreSQL database.

An export's follow is a ``nemobot.follow_export`` job on the queue ``exports-<platform>`` (only a process that
can speak on that platform takes it), with the lock ``chat:<key>``: Procrastinate runs the jobs of one lock
one at a time, in the order they were queued, whichever process runs them. Each worker writes a heartbeat;
the jobs of a worker silent for ``stalled_seconds`` are run again by any live one (Procrastinate leaves
finding them to the application: ``get_stalled_jobs`` then ``retry_job``), and a job stopped by a shutdown is
retried by its retry strategy. Either way the job runs twice, so it is idempotent (:mod:`bot.exports`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import timedelta

import procrastinate
import psycopg
from procrastinate.job_context import JobContext
from procrastinate.schema import SchemaManager

from bot.messages import ChatKey
from bot.queue import DURABLE_PLATFORMS, FollowJob, QueueSettings

log = logging.getLogger(__name__)

TASK_NAME = "nemobot.follow_export"
# Any constant of this application's own: it serialises the first start of several processes.
_SCHEMA_LOCK = 0x6E656D6F
# A job that failed by surprise (or was stopped by a shutdown) is tried again, a few seconds later.
_RETRY = procrastinate.RetryStrategy(max_attempts=20, wait=5)


def queue_name(platform: str) -> str:
    return f"exports-{platform}"


async def apply_schema(url: str) -> bool:
    """Create Procrastinate's tables in the database unless they are there. True when it made them.
    Procrastinate's schema script is not idempotent, so it runs once, under a lock that a second process
    starting at the same time waits for."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        row = await (await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).fetchone()
        if row is not None and row[0]:
            return False
        await conn.execute(SchemaManager.get_schema().encode())
        log.info("queue.schema_applied")
        return True


class ProcrastinateQueue:
    """Export jobs in PostgreSQL, run by every process that serves their platform."""

    def __init__(self, app: procrastinate.App, settings: QueueSettings) -> None:
        self._app = app
        self._settings = settings
        self._runners: dict[str, FollowJob] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._name = f"{socket.gethostname()}-{os.getpid()}"

        async def follow_export(context: JobContext, platform: str, render_id: str, status_id: str | None) -> None:
            run = self._runners.get(platform)
            if run is None:
                # Not reached: a process listens only to the queues of the platforms it serves.
                raise RuntimeError(f"no sending side for {platform} in this process")
            await run(render_id, status_id, context.job.attempts > 0)

        self._task = app.task(name=TASK_NAME, pass_context=True, retry=_RETRY)(follow_export)

    @classmethod
    async def connect(cls, url: str, settings: QueueSettings) -> ProcrastinateQueue:
        await apply_schema(url)
        # A pool of its own: a worker's listener holds one connection for as long as it runs.
        connector = procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=4 + 2 * len(DURABLE_PLATFORMS),
                                                   name="nemobot-queue")
        app = procrastinate.App(connector=connector)
        await app.open_async()
        return cls(app, settings)

    @property
    def claim_lease(self) -> timedelta | None:
        return timedelta(seconds=self._settings.claim_lease_seconds)

    async def follow_export(self, chat: ChatKey, render_id: str, status_id: str | None) -> bool:
        if chat.platform not in DURABLE_PLATFORMS:
            return False
        queueing_lock = f"export:{render_id}"
        # A resumed export whose job is still queued or running (in a live process) needs no second one.
        live = await self._app.connector.execute_query_one_async(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE queueing_lock = %(lock)s "
            "AND status IN ('todo', 'doing')", lock=queueing_lock,
        )
        if live["n"]:
            log.info("queue.already_queued render=%s", render_id)
            return True
        deferrer = self._task.configure(
            lock=f"chat:{chat}", queueing_lock=queueing_lock, queue=queue_name(chat.platform)
        )
        try:
            job_id = await deferrer.defer_async(platform=chat.platform, render_id=render_id, status_id=status_id)
        except procrastinate.exceptions.AlreadyEnqueued:
            log.info("queue.already_queued render=%s", render_id)
            return True
        log.info("queue.deferred job=%d render=%s chat=%s", job_id, render_id, chat)
        return True

    def serve(self, platform: str, run: FollowJob) -> None:
        if platform not in DURABLE_PLATFORMS or platform in self._workers:
            return
        self._runners[platform] = run
        settings = self._settings
        self._workers[platform] = asyncio.create_task(self._app.run_worker_async(
            queues=[queue_name(platform)], name=f"{self._name}-{platform}", concurrency=settings.concurrency,
            install_signal_handlers=False, delete_jobs="successful",
            fetch_job_polling_interval=settings.poll_seconds, abort_job_polling_interval=settings.poll_seconds,
            update_heartbeat_interval=settings.heartbeat_seconds, stalled_worker_timeout=settings.stalled_seconds,
            # On the way out, running jobs are stopped at once (and retried by another process): an export's
            # wait is minutes long.
            shutdown_graceful_timeout=0,
        ))
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._retry_stalled())
        log.info("queue.serving platform=%s concurrency=%d", platform, settings.concurrency)

    async def retry_stalled(self) -> int:
        """Queue again the jobs of workers that stopped saying they are alive; how many."""
        manager = self._app.job_manager
        retried = 0
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=self._settings.stalled_seconds):
            try:
                await manager.retry_job(job)
            except Exception:
                # Another process retried it first.
                log.debug("queue.retry_stalled.skipped job=%s", job.id, exc_info=True)
                continue
            retried += 1
            log.info("queue.stalled_job_retried job=%s task=%s lock=%s", job.id, job.task_name, job.lock)
        return retried

    async def _retry_stalled(self) -> None:
        while True:
            await asyncio.sleep(self._settings.stalled_seconds / 2)
            try:
                await self.retry_stalled()
            except Exception:
                log.warning("queue.retry_stalled.failed", exc_info=True)

    async def close(self) -> None:
        tasks = [*self._workers.values(), *([self._watcher] if self._watcher is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._workers.clear()
        self._watcher = None
        await self._app.close_async()
