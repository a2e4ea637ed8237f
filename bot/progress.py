"""One status message per operation, edited in place, throttled to the adapter's limits, with a
"still working" note after each stretch of silence.

Platforms punish chatty bots (Telegram answers 429 to edits that come too fast), and users complain most
about progress edits that trigger flood waits: so intermediate states may be skipped, the final one never.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from types import TracebackType

from bot.messages import Button, MessageHandle, Replies
from bot.texts import BUTTON_LABELS, t
from bot.textsplit import split_text

log = logging.getLogger(__name__)


def buttons(lang: str, *commands: str) -> list[Button]:
    """The buttons under a status message: by default what one usually does next."""
    chosen = commands or ("/export", "/status", "/credits", "/new")
    return [Button(BUTTON_LABELS[c][1 if lang == "zh" else 0], c) for c in chosen]


def join_text(prefix: str, text: str) -> str:
    """A status message that keeps what was said before (an upload's note above the edit's result)."""
    return f"{prefix}\n\n{text}" if prefix else text


class StatusMessage:
    """The one message that shows an operation's state. ``show`` may skip states; ``finish`` does not."""

    def __init__(self, replies: Replies, handle: MessageHandle | None = None) -> None:
        """``handle``: the message to go on editing, sent earlier (by another process, say)."""
        self._replies = replies
        self._handle: MessageHandle | None = handle
        self._shown: tuple[str, tuple[Button, ...]] | None = None
        self._wanted: tuple[str, tuple[Button, ...]] | None = None
        self._last_edit = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def sent(self) -> bool:
        return self._handle is not None

    @property
    def handle(self) -> MessageHandle | None:
        return self._handle

    @property
    def _interval(self) -> float:
        return self._replies.capabilities.edit_interval_seconds

    async def show(self, text: str, *, buttons: Sequence[Button] = ()) -> None:
        self._wanted = (self._fit(text), tuple(buttons))
        if self._handle is None or not self._replies.capabilities.can_edit:
            await self._flush()
            return
        wait = self._last_edit + self._interval - time.monotonic()
        if wait <= 0:
            await self._flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later(wait))

    async def finish(self, text: str, *, buttons: Sequence[Button] = ()) -> None:
        """Show the final state, waiting out the throttle if needed."""
        self._wanted = (self._fit(text), tuple(buttons))
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        caps = self._replies.capabilities
        if self._handle is not None and caps.can_edit and caps.edits_rate_limited:
            wait = self._last_edit + self._interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        await self._flush(final=True)

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    async def _flush_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        await self._flush()

    async def _flush(self, *, final: bool = False) -> None:
        async with self._lock:
            wanted = self._wanted
            if wanted is None or wanted == self._shown:
                return  # identical text: platforms refuse "not modified" edits
            text, buttons = wanted
            caps = self._replies.capabilities
            if self._handle is None or not caps.can_edit:
                if not caps.can_edit and not final and self._handle is not None:
                    return  # without edits, only the first and the last state are worth a message
                self._handle = await self._replies.send_text(text, buttons=buttons)
            else:
                try:
                    await self._replies.edit_text(self._handle, text, buttons=buttons)
                except Exception:
                    if not final:
                        log.warning("progress.edit.failed", exc_info=True)
                        return
                    log.warning("progress.edit.failed final=1; sending it as a new message", exc_info=True)
                    self._handle = await self._replies.send_text(text, buttons=buttons)
            self._shown = wanted
            self._last_edit = time.monotonic()

    def _fit(self, text: str) -> str:
        return split_text(text, self._replies.capabilities.max_message_length, max_parts=1)[0]


class Progress:
    """A status message plus the "still working" note after each ``still_working_seconds`` of silence."""

    def __init__(self, replies: Replies, lang: str, still_working_seconds: float) -> None:
        self.status = StatusMessage(replies)
        self._lang = lang
        self._quiet_for = still_working_seconds
        self._started = time.monotonic()
        self._last_activity = self._started
        self._ticker: asyncio.Task[None] | None = None
        self.still_working_notes = 0

    async def __aenter__(self) -> Progress:
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.status.close()

    async def update(self, text: str, *, buttons: Sequence[Button] = ()) -> None:
        self._last_activity = time.monotonic()
        await self.status.show(text, buttons=buttons)

    async def finish(self, text: str, *, buttons: Sequence[Button] = ()) -> None:
        self._last_activity = time.monotonic()
        if self._ticker is not None:
            self._ticker.cancel()
        await self.status.finish(text, buttons=buttons)

    async def _tick(self) -> None:
        while True:
            wait = self._last_activity + self._quiet_for - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            elapsed = time.monotonic() - self._started
            self.still_working_notes += 1
            self._last_activity = time.monotonic()
            try:
                await self.status.show(t("still_working", self._lang, elapsed=_elapsed(elapsed, self._lang)))
            except Exception:
                log.warning("progress.still_working.failed", exc_info=True)


def _elapsed(seconds: float, lang: str) -> str:
    if seconds < 60:
        return t("elapsed_seconds", lang, n=math.ceil(seconds))
    return t("elapsed_minutes", lang, n=round(seconds / 60))
