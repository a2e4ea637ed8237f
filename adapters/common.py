"""What the composition root hands every platform adapter, so that none reaches through the engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from bot.queue import JobQueue
from bot.sessions import SessionPolicy


@dataclass(frozen=True)
class AdapterContext:
    http: httpx.AsyncClient  # the process's one HTTP client, for downloading users' files
    sessions: SessionPolicy  # which session a message belongs to (per user or shared in groups)
    max_upload_bytes: int  # the largest file the backend accepts: larger downloads stop early
    temp_dir: str | None = None  # where downloads are staged (None: the system's temp dir)
    # (bot id, update id) → True the first time any process sharing the database is handed that update, so an
    # update delivered twice (a platform's retry, a load balancer's) is handled once. None: every one is new.
    accept_update: Callable[[str, int], Awaitable[bool]] | None = None
    # The durable queue (NEMOBOT_DB is PostgreSQL): a receiver that several processes share the updates of
    # queues each accepted update there, and every such process handles the chat's queued ones in turn.
    # None: updates are handled where they arrive (one process).
    queue: JobQueue | None = None


class PlatformFailure(Exception):
    """A chat platform refused the bot or could not be reached. Its text is one plain line for the person
    running the bot, saying what to do; it never holds a token or a URL that contains one."""

    #: True when trying again later may work (the network, the platform's servers); False when a setting
    #: must change first (a rejected token, an intent not enabled, another process polling).
    transient = False


class PlatformRejected(PlatformFailure):
    """The platform said no: retrying with the same settings cannot help."""


class PlatformUnreachable(PlatformFailure):
    """The platform did not answer (refused connection, timeout, a server error): worth retrying."""

    transient = True


#: How an adapter reports a failure that ends it after it started (e.g. another process began polling).
FatalCallback = Callable[[PlatformFailure], None]
