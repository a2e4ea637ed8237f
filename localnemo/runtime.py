"""What every handler of localnemo shares: the settings, the in-memory store, the background tasks, and
who is asking (a bearer token's user, a session that user owns, the base of the URLs handed out)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from localnemo.config import LocalNemoConfig
from localnemo.envelope import ApiError
from localnemo.persist import StateStore
from localnemo.sse import StreamFault
from localnemo.state import LocalNemoState, SessionRecord, UserRecord

log = logging.getLogger(__name__)


def _no_stream_fault() -> StreamFault | None:
    return None


class Runtime:
    """The state and the background work of one running application."""

    def __init__(self, config: LocalNemoConfig) -> None:
        self.config = config
        # What the last run left in the data folder (nothing, for a new folder).
        self.store = StateStore(config.data_dir)
        self.state = LocalNemoState(
            config.data_dir,
            initial_credits=config.initial_credits,
            token_ttl_seconds=config.token_ttl_seconds,
            store=self.store,
            renders_dir=config.renders_dir,
        )
        self.state.load()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = asyncio.Event()
        # How the next message stream should misbehave: never, unless localnemo.testing installs its
        # fault plan here.
        self.stream_fault: Callable[[], StreamFault | None] = _no_stream_fault

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def on_shutdown(self, app: web.Application) -> None:
        self.closing.set()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def on_cleanup(self, app: web.Application) -> None:
        await self.store.close()

    def base_url(self, request: web.Request) -> str:
        if self.config.public_base_url:
            return self.config.public_base_url
        return f"{request.scheme}://{request.host}"

    def user(self, request: web.Request) -> UserRecord:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        user = self.state.user_for_token(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError(401, 1001, "token expired")
        return user

    def session(self, user: UserRecord, session_id: Any) -> SessionRecord:
        session = self.state.owned_session(user, session_id) if isinstance(session_id, str) else None
        if session is None:
            raise ApiError(404, 1002, "session not found")
        session.touch()
        return session
