"""The screen worker: one session's screen work runs in steps, within its budget, and never
holds the event loop for more than a step while other sessions wait."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from terminals.audit.commands import READ_COST, RESIZE_COST, CommandExtractor
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
