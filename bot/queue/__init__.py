"""Where an export's long work runs: the job queue seam.

Following a render and delivering its result is the bot's durable work. Two implementations keep one promise
(every export is followed and delivered, a chat's exports one at a time and in order):

- :class:`InProcessQueue` (SQLite, one bot process): the export is followed by a background task of the
  process that took the message, tracked per chat by :class:`bot.scheduler.Scheduler` — as it always was. A
  restart resumes what was owed (:meth:`bot.exports.Exports.resume`).
- :class:`bot.queue.durable.ProcrastinateQueue` (NEMOBOT_DB is a ``postgresql://`` URL): a ``follow_export``
  job in Procrastinate's tables of the same database, which any bot process or ``nemobot worker`` of the
  platform runs. A chat's jobs share the lock ``chat:<key>``, so they run one at a time, in order, across
  every process; a job whose worker died is run again, so jobs are idempotent (the delivery claim in storage
  makes a retried job find the export delivered, or claim it once the dead process's lease is over).

The same queue carries a platform's incoming updates where several receivers share the work (Telegram's webhook
behind a load balancer): a receiver accepts an update once (storage's ``accept_update``) and queues it with the
lock ``messages:<chat>``, so whichever process runs it, a chat's messages are handled one at a time, in the
order they came, and one whose process died is handled again by another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.messages import ChatKey
from storage import is_postgres_url

#: Runs one ``follow_export`` job in this process: the render id, the id of the status message already sent
#: for it (None: none), and whether this is a second run (its first one's process died).
FollowJob = Callable[[str, str | None, bool], Awaitable[None]]

#: Handles one platform update taken from the durable queue, in this process: the update as the platform sent
#: it, and whether this is a second run (the process that ran it first died). Returns when the message's work
#: is finished or durably handed on (an export queued), so that the chat's next update waits for it.
UpdateJob = Callable[[dict[str, Any], bool], Awaitable[None]]

#: The platforms whose results any process can deliver (each builds the platform's sending side), so their
#: exports go to the durable queue; the others (the terminal) are followed by the process that took them.
DURABLE_PLATFORMS = frozenset({"tg", "dc"})


class QueueSettings(BaseSettings):
    """The durable job queue (PostgreSQL only); SQLite runs every job in its one process."""

    model_config = SettingsConfigDict(env_prefix="NEMOBOT_QUEUE_", env_file=".env", extra="ignore")

    concurrency: int = Field(8, ge=1, description="Export jobs one process follows at once, per platform.")
    claim_lease_seconds: float = Field(
        60.0, gt=0, description="A delivery claim not renewed for this long is a dead process's: free again."
    )
    heartbeat_seconds: float = Field(5.0, gt=0, description="How often a worker says it is alive.")
    stalled_seconds: float = Field(
        30.0, gt=0, description="A worker silent for this long is dead: its jobs are run again elsewhere."
    )
    poll_seconds: float = Field(5.0, gt=0, description="Longest wait for a new job when a notification is missed.")
    update_concurrency: int = Field(
        32, ge=1, description="Chats whose messages one process handles at once, per platform."
    )


class JobQueue(Protocol):
    @property
    def claim_lease(self) -> timedelta | None:
        """How long a delivery claim holds unless renewed; None: until released (one process)."""
        ...

    async def follow_export(self, chat: ChatKey, render_id: str, status_id: str | None) -> bool:
        """Hand the export to the durable queue: True when queued there; False when the caller follows it
        in this process."""
        ...

    def serve(self, platform: str, run: FollowJob) -> None:
        """Run the platform's export jobs in this process too (its sending side is here)."""
        ...

    async def defer_update(self, chat: ChatKey, update: dict[str, Any]) -> int | None:
        """Queue an accepted platform update behind the chat's earlier ones (some process serving the platform's
        updates handles it): how many of them are still waiting or running ahead of it. None: not queued, the
        caller handles it itself."""
        ...

    async def cancel_chat(self, chat: ChatKey) -> int:
        """/cancel: drop the chat's queued messages and exports and stop the running ones, in whichever
        process they run. How many jobs it reached."""
        ...

    def serve_updates(self, platform: str, run: UpdateJob) -> None:
        """Handle the platform's queued updates in this process too (it receives that platform)."""
        ...

    async def take_queued_updates(
        self, chat: ChatKey, match: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        """Take the chat's updates still waiting in the queue that ``match`` (the rest of an album), in order."""
        ...

    async def close(self) -> None: ...


class InProcessQueue:
    """One process: every export is followed where it was taken (see the module's docstring)."""

    @property
    def claim_lease(self) -> timedelta | None:
        return None

    async def follow_export(self, chat: ChatKey, render_id: str, status_id: str | None) -> bool:
        return False

    def serve(self, platform: str, run: FollowJob) -> None:
        return None

    async def defer_update(self, chat: ChatKey, update: dict[str, Any]) -> int | None:
        return None

    async def cancel_chat(self, chat: ChatKey) -> int:
        return 0

    def serve_updates(self, platform: str, run: UpdateJob) -> None:
        return None

    async def take_queued_updates(
        self, chat: ChatKey, match: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        return []

    async def close(self) -> None:
        return None


@asynccontextmanager
async def open_job_queue(db: str, settings: QueueSettings | None = None) -> AsyncIterator[JobQueue]:
    """The queue that fits NEMOBOT_DB: Procrastinate in a PostgreSQL database (its schema made there at the
    first start), else in-process."""
    if not is_postgres_url(db):
        yield InProcessQueue()
        return
    # Imported here: Procrastinate is not loaded by a bot that keeps its data in SQLite.
    from bot.queue.durable import ProcrastinateQueue

    queue = await ProcrastinateQueue.connect(db, settings or QueueSettings())
    try:
        yield queue
    finally:
        await queue.close()


__all__ = [
    "DURABLE_PLATFORMS", "FollowJob", "InProcessQueue", "JobQueue", "QueueSettings", "UpdateJob", "open_job_queue",
]
