"""Watchdog: idle and maximum-duration deadlines, on a fake clock that only sleeping moves."""

from __future__ import annotations

from terminals.protocol import CloseCode
from terminals.session.watchdog import MIN_NAP, Watchdog


class FakeTime:
    """A clock and a sleep: each nap is recorded and moves the clock on by its length.

    ``activity_at`` are the moments the user types (or output arrives): a nap that spans one
    stops the clock there, touches the watchdog, then goes on to its end. ``short_by`` makes
    every nap wake that much early (a clock of coarse resolution).
    """

    def __init__(self, activity_at: list[float] | None = None, short_by: float = 0.0) -> None:
        self.now = 0.0
        self.naps: list[float] = []
        self.activity_at = sorted(activity_at or [])
        self.short_by = short_by
        self.watchdog: Watchdog | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        if len(self.naps) > 100:
            raise AssertionError("the watchdog keeps napping and never decides")
        end = self.now + seconds - self.short_by
        while self.activity_at and self.activity_at[0] <= end:
            self.now = self.activity_at.pop(0)
            assert self.watchdog is not None
            self.watchdog.touch()
        self.now = end


def watchdog_on(time: FakeTime, idle_limit: float, duration_limit: float) -> Watchdog:
    time.watchdog = Watchdog(idle_limit, duration_limit, clock=time.clock, sleep=time.sleep)
    return time.watchdog


async def test_a_session_without_activity_ends_as_idle_at_the_idle_deadline():
    time = FakeTime()

    ending = await watchdog_on(time, idle_limit=10, duration_limit=100).run()

    assert ending.code == CloseCode.IDLE == 4408
    assert ending.reason == "idle"
    assert ending.message == "No input or output for 10 s."
    assert time.now == 10
    assert time.naps == [10], "one nap, straight to the idle deadline"


async def test_activity_pushes_the_idle_deadline_back():
    time = FakeTime(activity_at=[7, 15])

    ending = await watchdog_on(time, idle_limit=10, duration_limit=100).run()

    assert ending.code == CloseCode.IDLE
    assert time.now == 25, "idle 10 s after the last activity at 15 s"
    # Woken at the old deadline, it sleeps only until the deadline the activity set.
    assert time.naps == [10, 7, 8]


async def test_the_maximum_duration_ends_even_a_busy_session():
    time = FakeTime(activity_at=[float(t) for t in range(3, 200, 3)])

    ending = await watchdog_on(time, idle_limit=10, duration_limit=25).run()

    assert ending.code == CloseCode.MAX_DURATION == 4410
    assert ending.reason == "max_duration"
    assert ending.message == "The session reached its maximum of 25 s."
    assert time.now == 25
    # Idle deadlines at 10 and 19 (activity at 9, 18), then the duration deadline at 25.
    assert time.naps == [10, 9, 6]


async def test_touch_before_run_counts_from_the_touch():
    time = FakeTime()
    watchdog = watchdog_on(time, idle_limit=10, duration_limit=100)
    time.now = 6
    watchdog.touch()

    ending = await watchdog.run()

    assert ending.code == CloseCode.IDLE
    assert time.now == 16
    assert time.naps == [10]


async def test_a_clock_that_wakes_early_costs_one_min_nap_not_a_busy_loop():
    time = FakeTime(short_by=1e-9)

    ending = await watchdog_on(time, idle_limit=10, duration_limit=100).run()

    assert ending.code == CloseCode.IDLE
    assert time.naps == [10, MIN_NAP]


async def test_a_tiny_idle_limit_naps_min_nap_not_less():
    time = FakeTime()

    ending = await watchdog_on(time, idle_limit=0.01, duration_limit=100).run()

    assert ending.code == CloseCode.IDLE
    assert time.naps == [MIN_NAP]
