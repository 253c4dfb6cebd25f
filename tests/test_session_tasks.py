"""first_of and all_of: the first to finish (or fail) decides, and nothing started outlives them.

Each child is a :class:`FakeChild` the test drives by hand: it finishes or fails when the test
says so, and on cancellation it can hold its clean-up until the test releases it, which shows
whether the supervisor really waited for its children.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from terminals.session.tasks import all_of, first_of


async def run_ready_tasks(turns: int = 10) -> None:
    """Let every task that can run do so; no time passes (each turn is one loop iteration).

    Used only to show that something has *not* happened: there is no event to await for that.
    """
    for _ in range(turns):
        await asyncio.sleep(0)


class FakeChild:
    """A supervised task's body: finishes or fails when told; logs its end and its clean-up."""

    def __init__(self, name: str, log: list[str], *, slow_cleanup: bool = False) -> None:
        self.name = name
        self.log = log
        self.outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.started = asyncio.Event()
        self.cleaning = asyncio.Event()
        self.release = asyncio.Event()
        if not slow_cleanup:
            self.release.set()

    def finish(self, value: Any) -> None:
        self.outcome.set_result(value)

    def fail(self, error: BaseException) -> None:
        self.outcome.set_exception(error)

    async def run(self) -> Any:
        self.started.set()
        try:
            value = await self.outcome
        except asyncio.CancelledError:
            self.cleaning.set()
            await self.release.wait()
            self.log.append(f"{self.name} cancelled")
            raise
        except Exception:
            self.log.append(f"{self.name} failed")
            raise
        self.log.append(f"{self.name} finished")
        return value


class StoreDown(Exception):
    """A child's failure."""


# first_of


async def test_first_of_returns_what_the_first_to_finish_gives_and_cancels_the_others():
    log: list[str] = []
    shell, watchdog, notices = (
        FakeChild("shell", log),
        FakeChild("watchdog", log),
        FakeChild("notices", log),
    )
    running = asyncio.create_task(first_of(shell.run(), watchdog.run(), notices.run()))
    await watchdog.started.wait()

    watchdog.finish("idle")

    assert await running == "idle"
    assert sorted(log) == ["notices cancelled", "shell cancelled", "watchdog finished"]


async def test_first_of_returns_only_after_the_others_have_finished_being_cancelled():
    log: list[str] = []
    quick, stubborn = FakeChild("quick", log), FakeChild("stubborn", log, slow_cleanup=True)
    running = asyncio.create_task(first_of(quick.run(), stubborn.run()))
    await stubborn.started.wait()

    quick.finish("exit 0")
    await stubborn.cleaning.wait()
    await run_ready_tasks()
    assert not running.done(), "first_of returned while a child was still cleaning up"

    stubborn.release.set()
    assert await running == "exit 0"
    assert log == ["quick finished", "stubborn cancelled"]


async def test_first_of_raises_the_first_failure_and_cancels_the_rest():
    log: list[str] = []
    pump, watchdog = FakeChild("pump", log), FakeChild("watchdog", log, slow_cleanup=True)
    running = asyncio.create_task(first_of(pump.run(), watchdog.run()))
    await watchdog.started.wait()

    pump.fail(StoreDown("the audit store is down"))
    await watchdog.cleaning.wait()
    await run_ready_tasks()
    assert not running.done()
    watchdog.release.set()

    with pytest.raises(StoreDown, match="the audit store is down"):
        await running
    assert log == ["pump failed", "watchdog cancelled"]


async def test_cancelling_first_of_cancels_every_child_and_waits_for_them():
    log: list[str] = []
    shell, watchdog = FakeChild("shell", log, slow_cleanup=True), FakeChild("watchdog", log)
    running = asyncio.create_task(first_of(shell.run(), watchdog.run()))
    await watchdog.started.wait()

    running.cancel()
    await shell.cleaning.wait()
    await run_ready_tasks()
    assert not running.done(), "first_of gave up its children before they were cancelled"
    shell.release.set()

    with pytest.raises(asyncio.CancelledError):
        await running
    assert sorted(log) == ["shell cancelled", "watchdog cancelled"]


async def test_a_second_cancellation_of_first_of_still_waits_for_the_children():
    log: list[str] = []
    shell, watchdog = FakeChild("shell", log, slow_cleanup=True), FakeChild("watchdog", log)
    running = asyncio.create_task(first_of(shell.run(), watchdog.run()))
    await watchdog.started.wait()

    running.cancel()
    await shell.cleaning.wait()
    running.cancel()  # e.g. the session ending while the server stops
    await run_ready_tasks()

    assert not running.done(), "first_of returned while the shell was still cleaning up"
    shell.release.set()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert log == ["watchdog cancelled", "shell cancelled"]


@pytest.mark.parametrize(
    ("earlier_outcome", "later_outcome", "expected"),
    [
        ("exit", "idle", "exit"),
        ("idle", "exit", "idle"),
        (StoreDown("store down"), "exit", StoreDown),
        ("exit", StoreDown("store down"), "exit"),
    ],
    ids=["result-over-result", "result-over-result-swapped", "failure-first", "result-first"],
)
async def test_of_children_finishing_in_the_same_iteration_the_earlier_argument_decides(
    earlier_outcome, later_outcome, expected
):
    log: list[str] = []
    earlier, later = FakeChild("earlier", log), FakeChild("later", log)
    running = asyncio.create_task(first_of(earlier.run(), later.run()))
    await later.started.wait()

    # The later argument is settled first, and both finish before first_of looks.
    for child, outcome in ((later, later_outcome), (earlier, earlier_outcome)):
        if isinstance(outcome, BaseException):
            child.fail(outcome)
        else:
            child.finish(outcome)

    if expected is StoreDown:
        with pytest.raises(StoreDown):
            await running
    else:
        assert await running == expected
    assert log[0].startswith("later "), "the later argument really did finish first"


# all_of


async def test_all_of_waits_for_every_child_and_returns_results_in_argument_order():
    log: list[str] = []
    reader, forwarder = FakeChild("reader", log), FakeChild("forwarder", log)
    running = asyncio.create_task(all_of(reader.run(), forwarder.run()))
    await forwarder.started.wait()

    forwarder.finish("status")
    await run_ready_tasks()
    assert not running.done(), "all_of returned before the reader finished"
    reader.finish(None)

    assert await running == [None, "status"]
    assert log == ["forwarder finished", "reader finished"]


async def test_all_of_raises_the_first_failure_and_cancels_the_rest_before_returning():
    log: list[str] = []
    reader, forwarder = FakeChild("reader", log, slow_cleanup=True), FakeChild("forwarder", log)
    running = asyncio.create_task(all_of(reader.run(), forwarder.run()))
    await forwarder.started.wait()

    forwarder.fail(StoreDown("commit failed"))
    await reader.cleaning.wait()
    await run_ready_tasks()
    assert not running.done(), "all_of returned while the reader was still cleaning up"
    reader.release.set()

    with pytest.raises(StoreDown, match="commit failed"):
        await running
    assert log == ["forwarder failed", "reader cancelled"]


async def test_cancelling_all_of_cancels_every_child_and_waits_for_them():
    log: list[str] = []
    reader, forwarder = FakeChild("reader", log), FakeChild("forwarder", log, slow_cleanup=True)
    running = asyncio.create_task(all_of(reader.run(), forwarder.run()))
    await forwarder.started.wait()

    running.cancel()
    await forwarder.cleaning.wait()
    await run_ready_tasks()
    assert not running.done()
    forwarder.release.set()

    with pytest.raises(asyncio.CancelledError):
        await running
    assert sorted(log) == ["forwarder cancelled", "reader cancelled"]


async def test_of_failures_in_the_same_iteration_all_of_raises_the_earlier_arguments():
    log: list[str] = []
    earlier, later = FakeChild("earlier", log), FakeChild("later", log)
    running = asyncio.create_task(all_of(earlier.run(), later.run()))
    await later.started.wait()

    later.fail(StoreDown("later"))
    earlier.fail(StoreDown("earlier"))

    with pytest.raises(StoreDown, match="earlier"):
        await running
    assert log == ["later failed", "earlier failed"]
