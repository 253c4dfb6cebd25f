"""Supervising a handful of tasks: the first to finish or fail decides, the rest are cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


async def first_of(*coroutines: Coroutine[Any, Any, T]) -> T:
    """Run the coroutines as tasks; return (or raise) what the first to finish gives.

    The others are cancelled and awaited before this returns, also when this task itself is
    cancelled, so nothing started here outlives it.
    """
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # Of several finished at once, the earliest given wins: the order is the priority.
        first = next(task for task in tasks if task in done)
        return first.result()
    finally:
        await _cancel(tasks)


async def all_of(*coroutines: Coroutine[Any, Any, Any]) -> list[Any]:
    """Run the coroutines as tasks until all finish; the first failure cancels the rest."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task in done and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        await _cancel(tasks)


async def _cancel(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    # Wait for the children even through further cancellations of the caller (then re-raise
    # once they are done), so that nothing started by first_of/all_of outlives it.
    children = asyncio.gather(*tasks, return_exceptions=True)
    interrupted = False
    while not children.done():
        try:
            await asyncio.shield(children)
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError
