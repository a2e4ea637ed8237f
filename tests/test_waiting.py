"""The tests' one way to wait: a condition with a deadline, woken by changes or by polling."""

from __future__ import annotations

import asyncio

import pytest

from tests.waiting import Changes, WaitTimeout, await_within, wait_for


async def test_returns_the_first_truthy_value_of_a_sync_or_async_condition() -> None:
    seen: list[int] = []
    loop = asyncio.get_running_loop()
    loop.call_soon(seen.append, 7)
    assert await wait_for(lambda: list(seen), what="a value") == [7]

    async def ready() -> str:
        return "yes"

    assert await wait_for(ready) == "yes"


async def test_a_missed_deadline_names_what_was_awaited_and_the_details() -> None:
    with pytest.raises(WaitTimeout, match=r"waiting for the moon; last calls: none") as caught:
        await wait_for(lambda: False, within=0.05, what="the moon", details=lambda: "last calls: none")
    assert isinstance(caught.value, AssertionError)
    assert isinstance(caught.value, TimeoutError)


async def test_changes_wake_a_waiter_without_polling() -> None:
    changes = Changes()
    state = {"done": False}
    checks = 0

    def done() -> bool:
        nonlocal checks
        checks += 1
        return state["done"]

    waiter = asyncio.create_task(wait_for(done, changes=changes, what="done"))
    await wait_for(lambda: checks == 1)
    state["done"] = True
    changes.notify()
    assert await waiter is True
    assert checks == 2


async def test_await_within_raises_the_error_of_a_watched_task_that_ended_first() -> None:
    async def crash() -> None:
        raise RuntimeError("client died")

    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(RuntimeError, match="client died"):
        await await_within(never, watch=[asyncio.create_task(crash())])
    with pytest.raises(WaitTimeout, match="waiting for READY"):
        await await_within(asyncio.get_running_loop().create_future(), within=0.05, what="READY")
