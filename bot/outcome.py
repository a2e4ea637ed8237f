"""What became of one message: an :class:`Operation` the engine hands back, settled with an :class:`Outcome`.

Adapters ignore it (the user has been answered either way); a caller that must act on the result — the
one-shot ``nemobot edit`` — awaits it instead of reading the transcript. An export's operation settles
when the result was delivered (or failed), not when the render was submitted.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable


class Outcome(enum.Enum):
    DONE = "done"  # it did what was asked (an export: the result was delivered)
    UNCHANGED = "unchanged"  # an edit that ran but changed nothing (not understood, or already so)
    FAILED = "failed"  # it did not; the user was told why
    CANCELLED = "cancelled"  # /cancel, or the engine closed, before it finished
    DUPLICATE = "duplicate"  # a redelivered message: handled before, nothing done now
    QUEUED = "queued"  # an export handed to the durable job queue: some process will deliver it


class Operation:
    """The outcome of one message, settled once (later settlements are ignored)."""

    def __init__(self) -> None:
        self._done = asyncio.Event()
        self._outcome: Outcome | None = None
        self._callbacks: list[Callable[[Operation], None]] = []

    @classmethod
    def settled(cls, outcome: Outcome) -> Operation:
        operation = cls()
        operation.settle(outcome)
        return operation

    @property
    def outcome(self) -> Outcome | None:
        """The outcome, or None while it is still running or queued."""
        return self._outcome

    def settle(self, outcome: Outcome) -> None:
        if self._outcome is None:
            self._outcome = outcome
            self._done.set()
            for callback in self._callbacks:
                callback(self)
            self._callbacks.clear()

    def on_settle(self, callback: Callable[[Operation], None]) -> None:
        """Call ``callback(self)`` once settled (at once if it already is)."""
        if self._outcome is not None:
            callback(self)
        else:
            self._callbacks.append(callback)

    async def wait(self) -> Outcome:
        """Wait until the operation is settled; return its outcome."""
        await self._done.wait()
        assert self._outcome is not None
        return self._outcome


__all__ = ["Operation", "Outcome"]
