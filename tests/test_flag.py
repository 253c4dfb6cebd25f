"""terminals.flag.Flag: asyncio.Event's meaning, without its deque."""

from __future__ import annotations

import asyncio
import sys

import pytest

from terminals.flag import Flag


async def test_wait_returns_at_once_when_set():
    flag = Flag()
    flag.set()
    assert flag.is_set()
    assert await flag.wait() is True


async def test_set_wakes_every_waiter():
    flag = Flag()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)  # they wait
    assert not any(waiter.done() for waiter in waiters)

    flag.set()

    assert await asyncio.gather(*waiters) == [True, True, True]
    assert flag._waiters is None  # nobody waits: no list kept


async def test_a_waiter_woken_returns_even_if_cleared_before_it_runs():
    flag = Flag()
    waiter = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    flag.set()
    flag.clear()
    assert await waiter is True
    assert not flag.is_set()


async def test_clear_makes_wait_block_again():
    flag = Flag()
    flag.set()
    flag.clear()
    waiter = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    flag.set()
    assert await waiter is True


async def test_a_cancelled_waiter_is_forgotten_and_the_others_still_woken():
    flag = Flag()
    gone = asyncio.ensure_future(flag.wait())
    staying = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert flag._waiters is not None and len(flag._waiters) == 1

    flag.set()

    assert await staying is True
    assert flag._waiters is None


async def test_a_timeout_around_wait_leaves_nothing_behind():
    flag = Flag()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await flag.wait()
    assert flag._waiters is None
    flag.set()
    assert await flag.wait() is True


def test_it_is_smaller_than_asyncios_event():
    def size(event: object) -> int:
        waiters = getattr(event, "_waiters", None)
        return sys.getsizeof(event) + (sys.getsizeof(waiters) if waiters is not None else 0)

    assert size(Flag()) * 4 < size(asyncio.Event())
