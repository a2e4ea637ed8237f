"""Waiting with a deadline, for the tests and the platform stand-ins: never a fixed sleep.

``wait_for`` re-checks a condition until it holds or the deadline passes. Given a ``Changes`` (what a
stand-in notifies whenever its state moves), it sleeps until the next notification instead of polling;
without one it polls every ``POLL_SECONDS``. ``await_within`` awaits one awaitable with a deadline.
A missed deadline raises ``WaitTimeout`` naming what was awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, overload

T = TypeVar("T")

POLL_SECONDS = 0.01
DEFAULT_WITHIN = 10.0


class WaitTimeout(AssertionError, TimeoutError):
    """A deadline passed: a failed test assertion, and a TimeoutError for code that catches one."""


class Changes:
    """Wakes waiters whenever the owner's state changes; ``notify`` may be called from sync code."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        # A fresh Event per change: waiters hold the old one, so a sync caller can signal without a lock.
        self._event.set()
        self._event = asyncio.Event()

    def ticket(self) -> asyncio.Event:
        """Set by the next ``notify``; take it *before* looking at the state, so no change is missed."""
        return self._event

    @staticmethod
    async def wait(ticket: asyncio.Event, seconds: float) -> bool:
        """Wait until ``ticket`` is set (True) or ``seconds`` pass (False)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ticket.wait(), max(0.0, seconds))
            return True
        return False


@overload
async def wait_for(
    condition: Callable[[], Awaitable[T | None]],
    *,
    within: float = ...,
    what: str = ...,
    changes: Changes | None = ...,
    details: Callable[[], str] | None = ...,
) -> T: ...


@overload
async def wait_for(
    condition: Callable[[], T | None],
    *,
    within: float = ...,
    what: str = ...,
    changes: Changes | None = ...,
    details: Callable[[], str] | None = ...,
) -> T: ...


async def wait_for(
    condition: Callable[[], Any],
    *,
    within: float = DEFAULT_WITHIN,
    what: str = "condition",
    changes: Changes | None = None,
    details: Callable[[], str] | None = None,
) -> Any:
    """Return the condition's first truthy value, re-checked on every change (or every POLL_SECONDS).

    The condition may be sync or async. ``details`` adds context to the timeout message (e.g. a stand-in's
    last calls).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        ticket = changes.ticket() if changes is not None else None
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        remaining = deadline - loop.time()
        if remaining <= 0:
            message = f"timed out after {within:g}s waiting for {what}"
            if details is not None:
                message += f"; {details()}"
            raise WaitTimeout(message)
        if ticket is None:
            await asyncio.sleep(min(POLL_SECONDS, remaining))
        else:
            await Changes.wait(ticket, remaining)


async def await_within(
    awaitable: Awaitable[T],
    *,
    within: float = DEFAULT_WITHIN,
    what: str = "a result",
    watch: Iterable[asyncio.Future[Any]] = (),
) -> T:
    """Await with a deadline. If a watched task (e.g. the client under test) ends first, its error is raised."""
    waiter = asyncio.ensure_future(awaitable)
    watched = set(watch)
    done, _ = await asyncio.wait({waiter, *watched}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    if waiter in done:
        return waiter.result()
    waiter.cancel()
    for task in done:
        task.result()
    raise WaitTimeout(f"timed out after {within:g}s waiting for {what}")
