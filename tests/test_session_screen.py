"""The screen worker: one session's screen work runs in steps, within its budget, and never
holds the event loop for more than a step while other sessions wait."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from terminals.audit.commands import (
    CELLS_PER_UNIT,
    LAZY_EVENTS,
    READ_COST,
    RESIZE_COST,
    SCREENFUL,
    CommandExtractor,
)
from terminals.session.screen import Budget, ScreenWorker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def hostile(worker: ScreenWorker, enters: int) -> None:
    """A session printing bulk output and pressing Enter, as fast as it can."""
    for n in range(enters):
        worker.output(b"0123456789abcdef\r\n" * 4000 + b"$ ", n)
        worker.stdin(b"ls\r", n)
        worker.output(b"ls\r\n", n)


def test_the_budget_refills_at_its_rate_up_to_its_burst():
    clock = Clock()
    budget = Budget(rate=1000, burst=3000, clock=clock)
    assert budget.take(5000) == 3000
    assert budget.take(10) == 0
    assert budget.wait(500) == pytest.approx(0.5)
    clock.now = 10.0
    assert budget.take(5000) == 3000  # no more than the burst, however long it waited


async def test_a_session_gets_no_more_than_its_rate(monkeypatch):
    clock = Clock()
    done: list[int] = []
    work = CommandExtractor.work

    def counted(self: CommandExtractor, budget: int) -> Any:
        used, found = work(self, budget)
        done.append(used)
        return used, found

    monkeypatch.setattr(CommandExtractor, "work", counted)
    rows: list[Any] = []
    worker = ScreenWorker(
        CommandExtractor(1000, 1000), rows.extend, step=1024, rate=8192, burst=16384,
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    hostile(worker, 20)
    await worker.idle()
    assert sum(done) <= 16384 + 8192 * clock.now + 1024 + READ_COST + RESIZE_COST
    assert max(done) <= 1024 + READ_COST
    assert [row.text for row in rows].count("ls") >= 1  # it still gets its commands, later


async def test_other_sessions_run_between_any_two_steps(monkeypatch):
    turns = 0
    seen: list[int] = []
    work = CommandExtractor.work

    def noted(self: CommandExtractor, budget: int) -> Any:
        seen.append(turns)
        return work(self, budget)

    monkeypatch.setattr(CommandExtractor, "work", noted)

    async def other_session() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_session())
    await asyncio.sleep(0)
    worker = ScreenWorker(CommandExtractor(1000, 1000), lambda rows: None, burst=10**9)
    hostile(worker, 10)
    await worker.idle()
    other.cancel()
    assert len(seen) > 10
    # Between two steps of the hostile session, the other one always had a turn.
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))


async def test_a_failure_in_extraction_is_logged_and_extraction_goes_on(monkeypatch, caplog):
    rows: list[Any] = []
    worker = ScreenWorker(CommandExtractor(), rows.extend, name="s1")
    work = CommandExtractor.work
    calls = 0

    def fails_once(self: CommandExtractor, budget: int) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return work(self, budget)

    monkeypatch.setattr(CommandExtractor, "work", fails_once)
    worker.output(b"$ ", 0)
    worker.stdin(b"one\r", 1)
    await worker.idle()
    assert "Command extraction failed in session s1" in caplog.text
    worker.output(b"$ ", 2)
    worker.stdin(b"two\r", 3)
    worker.output(b"two\r\n", 4)
    await worker.idle()
    assert [row.text for row in rows] == ["[the screen model failed: 1 line(s) not indexed]", "two"]


async def test_closing_records_the_waiting_enter_and_stops_the_work():
    rows: list[Any] = []
    worker = ScreenWorker(CommandExtractor(), rows.extend)
    worker.output(b"$ ", 0)
    worker.stdin(b"hidden\r", 1)
    await worker.idle()
    hostile(worker, 3)
    worker.close()
    assert rows[0].typed == "hidden"
    assert rows[-1].text.startswith("[the session ended before the index caught up")
    await asyncio.sleep(0)
    assert worker._task is not None and worker._task.done()


# Lazy work: the worker runs only when something needs the screen.

LINES = b"".join(b"%07d 0123456789abcdef0123456789abcdef\r\n" % n for n in range(2000))  # 90 kB


async def test_output_keys_and_resizes_without_an_enter_start_no_work():
    worker = ScreenWorker(CommandExtractor(), lambda rows: None)
    for n in range(LAZY_EVENTS - 1):
        worker.output(LINES, n)
        worker.stdin(b"j", n)
        worker.resize(80 + n % 2, 24)
    await asyncio.sleep(0)
    assert worker._task is None and worker.steps == 0


async def test_a_fresh_snapshot_is_fed_in_budgeted_steps_and_draws_the_last_output(monkeypatch):
    clock = Clock()
    done: list[int] = []
    work = CommandExtractor.work

    def counted(self: CommandExtractor, budget: int) -> Any:
        used, found = work(self, budget)
        done.append(used)
        return used, found

    monkeypatch.setattr(CommandExtractor, "work", counted)
    worker = ScreenWorker(CommandExtractor(), lambda rows: None, clock=clock, sleep=clock.sleep)
    for n in range(10):
        worker.output(LINES, n)
    worker.output(b"user@pod:~$ ", 10)
    assert b"user@pod" not in worker.snapshot(24).screen  # as fed: nothing was
    snapshot = await worker.fresh_snapshot(24)
    assert snapshot.seq == 10 and b"user@pod:~$" in snapshot.screen
    assert b"0001999 0123" in snapshot.screen  # the line above it
    assert max(done) <= 1024 + 80 * 24 // CELLS_PER_UNIT  # one step at a time
    assert sum(done) <= SCREENFUL * 80 * 24 + 80 * 24 // CELLS_PER_UNIT  # a screenful, drawn


async def test_a_fresh_snapshot_waiting_when_the_session_ends_is_answered():
    clock = Clock()
    worker = ScreenWorker(
        CommandExtractor(), lambda rows: None, rate=1, burst=0, clock=clock, sleep=Clock().sleep
    )  # no budget: the snapshot cannot be built in time
    worker.output(b"$ ", 0)
    asking = asyncio.ensure_future(worker.fresh_snapshot())
    await asyncio.sleep(0)
    assert not asking.done()
    worker.close()
    snapshot = await asking
    assert snapshot.seq == -1  # the screen as it was, and the frame it includes: none
    assert (await worker.fresh_snapshot()).seq == 0  # after the end: at once, as it is


async def test_a_session_out_of_budget_sheds_output_and_still_reads_its_lines():
    clock = Clock()
    rows: list[Any] = []
    worker = ScreenWorker(
        CommandExtractor(), rows.extend, rate=8192, burst=16384, clock=clock, sleep=clock.sleep
    )
    fed = 0
    feed = worker.extractor.screen.feed

    def counted(data: bytes) -> None:
        nonlocal fed
        fed += len(data)
        feed(data)

    worker.extractor.screen.feed = counted  # type: ignore[method-assign]
    worker.output(b"$ ", 0)
    for n in range(20):  # commands in one frame each, each printing 360 kB
        worker.stdin(b"cat log-%d\r" % n, n)
        worker.output(b"cat log-%d\r\n" % n + LINES * 4 + b"$ ", n)
        for _ in range(3):
            await asyncio.sleep(0)  # the worker's turns (a step, or a wait for its budget)
    await worker.idle()
    assert [(row.text, row.mismatch, row.echoed) for row in rows] == [
        (f"cat log-{n}", False, True) for n in range(20)
    ]
    # About its burst's worth, then only the last lines (a screenful per command otherwise).
    assert fed < 2 * 16384
