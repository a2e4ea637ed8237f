"""Who runs when: per chat in arrival order and one at a time, across chats within a global bound.

Work that changes a chat's project is queued per chat and run by one worker task; a job that arrives
while another runs is told it is next. Reads run at once beside the queue. An export's long wait is
tracked per chat so that /cancel, ``join`` and ``close`` reach it. At most ``max_in_flight`` backend
operations run at once over all chats. A chat's state is dropped as soon as nothing of it is running,
queued or exporting, so the map does not grow with every chat ever seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Work = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class _Chat:
    queue: deque[Work] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    current: asyncio.Task[None] | None = None
    exports: set[asyncio.Task[None]] = field(default_factory=set)
    reads: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def busy(self) -> bool:
        return self.worker is not None and not self.worker.done()

    @property
    def idle(self) -> bool:
        return not self.busy and not self.queue and not self.exports and not self.reads


class Scheduler:
    def __init__(self, max_in_flight: int) -> None:
        self._chats: dict[str, _Chat] = {}
        # The global bound: held while a job runs and while a result is downloaded and sent.
        self.slots = asyncio.Semaphore(max_in_flight)
        self._closing = False

    @property
    def active_chats(self) -> int:
        """How many chats have something running, queued or exporting."""
        return len(self._chats)

    def exporting(self, key: str | None = None) -> bool:
        """Whether an export of the chat (or of any chat) is being followed."""
        chats = [self._chats.get(key)] if key is not None else list(self._chats.values())
        return any(chat is not None and any(not task.done() for task in chat.exports) for chat in chats)

    async def submit(self, key: str, work: Work, *, notice: Callable[[], Awaitable[None]]) -> None:
        """Queue ``work`` behind the chat's earlier jobs; ``notice`` tells the user when it has to wait."""
        # Queue first, then speak: the job's place must not depend on how long the notice takes to send,
        # and a notice that fails to send must not lose the job.
        chat = self._chats.setdefault(key, _Chat())
        was_busy = chat.busy
        chat.queue.append(work)
        if not was_busy:
            chat.worker = asyncio.create_task(self._work(chat))
            chat.worker.add_done_callback(lambda _: self._trim(key))
        else:
            await notice()

    def read(self, key: str, work: Awaitable[None]) -> None:
        """Run at once, beside the queue (a read changes nothing)."""
        self._track(key, "reads", work)

    def track_export(self, key: str, work: Awaitable[None]) -> None:
        self._track(key, "exports", work)

    def cancel(self, key: str) -> bool:
        """Drop the chat's queue and stop its running job and exports. True when there was something."""
        chat = self._chats.get(key)
        if chat is None:
            return False
        cancelled = bool(chat.queue)
        chat.queue.clear()
        if chat.current is not None and not chat.current.done():
            chat.current.cancel()
            cancelled = True
        for task in list(chat.exports):
            task.cancel()
            cancelled = True
        return cancelled

    async def join(self, key: str | None = None) -> None:
        """Wait until the chat (or every chat) has nothing running, queued or being exported."""
        while True:
            chats = [self._chats.get(key)] if key is not None else list(self._chats.values())
            tasks: list[asyncio.Task[None]] = []
            for state in chats:
                if state is None:
                    continue
                if state.worker is not None and not state.worker.done():
                    tasks.append(state.worker)
                tasks.extend(task for task in (*state.exports, *state.reads) if not task.done())
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop every task."""
        self._closing = True
        tasks = [t for c in self._chats.values() for t in (c.worker, *c.exports, *c.reads) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _work(self, chat: _Chat) -> None:
        while chat.queue:
            work = chat.queue.popleft()
            async with self.slots:
                chat.current = asyncio.create_task(work())
                try:
                    await chat.current
                except asyncio.CancelledError:
                    # /cancel stops the job, not the worker: the next job (if any) still runs.
                    if self._closing:
                        raise
                finally:
                    chat.current = None

    def _track(self, key: str, kind: str, work: Awaitable[None]) -> None:
        chat = self._chats.setdefault(key, _Chat())
        tasks: set[asyncio.Task[None]] = chat.exports if kind == "exports" else chat.reads
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            tasks.discard(finished)
            self._trim(key)

        task.add_done_callback(done)

    def _trim(self, key: str) -> None:
        chat = self._chats.get(key)
        if chat is not None and chat.idle:
            del self._chats[key]
