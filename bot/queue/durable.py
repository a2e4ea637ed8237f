"""The durable job queue: Procrastinate's tables in the bot's PostgreSQL database.

An export's follow is a ``nemobot.follow_export`` job on the queue ``exports-<platform>`` (only a process that
can speak on that platform takes it), with the lock ``chat:<key>``: Procrastinate runs the jobs of one lock
one at a time, in the order they were queued, whichever process runs them. Each worker writes a heartbeat;
the jobs of a worker silent for ``stalled_seconds`` are run again by any live one (Procrastinate leaves
finding them to the application: ``get_stalled_jobs`` then ``retry_job``), and a job stopped by a shutdown is
retried by its retry strategy. Either way the job runs twice, so it is idempotent (:mod:`bot.exports`).

An accepted platform update is a ``nemobot.handle_update`` job on the queue ``updates-<platform>`` with the lock
``messages:<chat>`` (not the exports' lock: a chat is answered while its export renders). It ends when the
message's work has ended or is durably handed on, so the chat's next message waits for it, in any process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import procrastinate
import psycopg
from procrastinate.job_context import JobContext
from procrastinate.schema import SchemaManager

from bot.messages import ChatKey
from bot.queue import DURABLE_PLATFORMS, FollowJob, QueueSettings, UpdateJob

log = logging.getLogger(__name__)

TASK_NAME = "nemobot.follow_export"
UPDATE_TASK_NAME = "nemobot.handle_update"
# Any constant of this application's own: it serialises the first start of several processes.
_SCHEMA_LOCK = 0x6E656D6F
# How often, and how many times, a finished job is looked at until its end is recorded (_wake_next).
_WAKE_LOOK_SECONDS = 0.02
_WAKE_LOOKS = 100
# A job that failed by surprise (or was stopped by a shutdown) is tried again, a few seconds later.
_RETRY = procrastinate.RetryStrategy(max_attempts=20, wait=5)


def queue_name(platform: str) -> str:
    return f"exports-{platform}"


def updates_queue_name(platform: str) -> str:
    return f"updates-{platform}"


def messages_lock(chat: ChatKey) -> str:
    return f"messages:{chat}"


def exports_lock(chat: ChatKey) -> str:
    return f"chat:{chat}"


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
        self._update_runners: dict[str, UpdateJob] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._waking: set[asyncio.Task[None]] = set()
        self._name = f"{socket.gethostname()}-{os.getpid()}"

        async def follow_export(context: JobContext, platform: str, render_id: str, status_id: str | None) -> None:
            run = self._runners.get(platform)
            if run is None:
                # Not reached: a process listens only to the queues of the platforms it serves.
                raise RuntimeError(f"no sending side for {platform} in this process")
            try:
                await run(render_id, status_id, context.job.attempts > 0)
            finally:
                self._wake_next(context)

        self._task = app.task(name=TASK_NAME, pass_context=True, retry=_RETRY)(follow_export)

        async def handle_update(context: JobContext, platform: str, update: dict[str, Any]) -> None:
            run = self._update_runners.get(platform)
            if run is None:
                raise RuntimeError(f"no receiving side for {platform} in this process")
            try:
                await run(update, context.job.attempts > 0)
            finally:
                self._wake_next(context)

        # Retried only when stopped by a shutdown (or found stalled): a handler's own failure was answered.
        self._update_task = app.task(name=UPDATE_TASK_NAME, pass_context=True, retry=_RETRY)(handle_update)

    @classmethod
    async def connect(cls, url: str, settings: QueueSettings) -> ProcrastinateQueue:
        await apply_schema(url)
        # A pool of its own: a worker's listener holds one connection for as long as it runs.
        connector = procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=4 + 4 * len(DURABLE_PLATFORMS),
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
            lock=exports_lock(chat), queueing_lock=queueing_lock, queue=queue_name(chat.platform)
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
        self._run_worker(platform, queue_name(platform), self._settings.concurrency)

    async def defer_update(self, chat: ChatKey, update: dict[str, Any]) -> int | None:
        lock = messages_lock(chat)
        deferrer = self._update_task.configure(lock=lock, queue=updates_queue_name(chat.platform))
        job_id = await deferrer.defer_async(platform=chat.platform, update=update)
        found = await self._app.connector.execute_query_one_async(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE lock = %(lock)s AND status IN ('todo', 'doing') "
            "AND id < %(id)s", lock=lock, id=job_id,
        )
        ahead = int(found["n"])
        log.info("queue.update_deferred job=%d chat=%s ahead=%d", job_id, chat, ahead)
        return ahead

    async def cancel_chat(self, chat: ChatKey) -> int:
        rows = await self._app.connector.execute_query_all_async(
            "SELECT id, status FROM procrastinate_jobs WHERE lock IN (%(messages)s, %(exports)s) "
            "AND status IN ('todo', 'doing') ORDER BY id", messages=messages_lock(chat), exports=exports_lock(chat),
        )
        reached = 0
        manager = self._app.job_manager
        for row in rows:
            # A job still to do is dropped; a running one is aborted: Procrastinate cancels its asyncio task in the
            # process that runs it (at once on the notification, or at the next abort poll).
            running = row["status"] == "doing"
            if await manager.cancel_job_by_id_async(row["id"], abort=running, delete_job=not running):
                reached += 1
        log.info("queue.chat_cancelled chat=%s jobs=%d", chat, reached)
        return reached

    def serve_updates(self, platform: str, run: UpdateJob) -> None:
        key = f"updates-{platform}"
        if key in self._workers:
            return
        self._update_runners[platform] = run
        self._run_worker(key, updates_queue_name(platform), self._settings.update_concurrency)

    async def take_queued_updates(
        self, chat: ChatKey, match: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        """Take out of the queue the chat's updates still waiting there that ``match`` (the rest of an album
        whose first item is being handled), in the order they came; each is taken by one process only."""
        rows = await self._app.connector.execute_query_all_async(
            "SELECT id, args FROM procrastinate_jobs WHERE lock = %(lock)s AND status = 'todo' "
            "AND task_name = %(task)s ORDER BY id", lock=messages_lock(chat), task=UPDATE_TASK_NAME,
        )
        taken: list[dict[str, Any]] = []
        for row in rows:
            update = row["args"].get("update")
            if isinstance(update, dict) and match(update):
                # Cancelling a job still to do succeeds once: whoever cancels it has it.
                if await self._app.job_manager.cancel_job_by_id_async(row["id"], delete_job=True):
                    taken.append(update)
        return taken

    def _wake_next(self, context: JobContext) -> None:
        """Procrastinate wakes its workers when a job is inserted, not when a finished job lets a waiting one of
        the same lock run: the chat's next message would wait for the next poll (``poll_seconds``). Once this
        job is recorded finished, the workers of its queue are told as for a new job."""
        job = context.job
        if job.lock is None or job.id is None:
            return
        task = asyncio.create_task(self._wake_when_finished(job.id, job.lock, job.queue))
        self._waking.add(task)
        task.add_done_callback(self._waking.discard)

    async def _wake_when_finished(self, job_id: int, lock: str, queue: str) -> None:
        connector = self._app.connector
        try:
            waiting = await connector.execute_query_one_async(
                "SELECT count(*) AS n FROM procrastinate_jobs WHERE lock = %(lock)s AND status = 'todo'", lock=lock
            )
            if not waiting["n"]:
                return
            for _ in range(_WAKE_LOOKS):
                # The worker records the job's end just after the task returns.
                await asyncio.sleep(_WAKE_LOOK_SECONDS)
                found = await connector.execute_query_one_async(
                    "SELECT count(*) AS n FROM procrastinate_jobs WHERE id = %(id)s AND status = 'doing'", id=job_id
                )
                if not found["n"]:
                    break
            payload = json.dumps({"type": "job_inserted", "job_id": job_id})
            await connector.execute_query_async(
                "SELECT pg_notify(%(channel)s, %(payload)s)", channel=f"procrastinate_queue_v1#{queue}",
                payload=payload,
            )
        except Exception as exc:
            # The poll still finds it.
            log.debug("queue.wake_failed error=%s", type(exc).__name__)

    def _run_worker(self, key: str, queue: str, concurrency: int) -> None:
        settings = self._settings
        self._workers[key] = asyncio.create_task(self._app.run_worker_async(
            queues=[queue], name=f"{self._name}-{key}", concurrency=concurrency,
            install_signal_handlers=False, delete_jobs="successful",
            fetch_job_polling_interval=settings.poll_seconds, abort_job_polling_interval=settings.poll_seconds,
            update_heartbeat_interval=settings.heartbeat_seconds, stalled_worker_timeout=settings.stalled_seconds,
            # On the way out, running jobs are stopped at once (and retried by another process): an export's
            # wait is minutes long.
            shutdown_graceful_timeout=0,
        ))
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._retry_stalled())
        log.info("queue.serving queue=%s concurrency=%d", queue, concurrency)

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
        tasks = [*self._workers.values(), *([self._watcher] if self._watcher is not None else []), *self._waking]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._workers.clear()
        self._watcher = None
        await self._app.close_async()
