"""The session's screen model and command extraction, off the hot path and within a budget.

A session hands every frame to its :class:`ScreenWorker` as it goes (cheap: the extractor
only queues). The costly part, pyte and the line editor, runs only when something needs the
screen (an Enter, a watcher's snapshot, the session's end: output nobody reads a line from
costs no pyte work, see ``terminals.audit.commands``), in a task of its own, in steps of at
most ``step`` work units (about a byte fed to pyte each, ~1.4 µs), yielding to the event loop
after each, and within a token bucket of ``rate`` units a second (``burst`` at once). So one
session's screen work holds the loop for at most one step at a time, and takes at most its
rate's share of it over time, whatever its terminal's size or output. A session that runs out
of budget sheds its queued output down to what the lines to be read need (the tail of each
run of output), which costs that session's screen (a snapshot shows less), and if it goes on,
its index precision; never another session's latency.

The defaults: a step of 1 KiB is about 1.5 ms; 32 KiB a second is about 5 % of a core per
session at most; a burst of 96 KiB lets the first Enter after bulk output be read at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..audit.commands import CommandExtractor, CommandLine

logger = logging.getLogger(__name__)

STEP = 1024
RATE = 32 * 1024
BURST = 96 * 1024


class Budget:
    """A token bucket of work units, with an injectable clock."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self.tokens = burst
        self._at = clock()

    def take(self, most: int) -> int:
        """Up to ``most`` units available now (taken)."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        granted = max(0, min(most, int(self.tokens)))
        self.tokens -= granted
        return granted

    def give_back(self, units: int) -> None:
        self.tokens = min(self.burst, self.tokens + units)

    def spend(self, units: int) -> None:
        """Units used beyond what was taken (a step may overshoot by one line read)."""
        self.tokens -= units

    def wait(self, want: int) -> float:
        """Seconds until ``want`` units will be available."""
        return max(0.0, (want - self.tokens) / self.rate)


@dataclass(frozen=True)
class Snapshot:
    screen: bytes
    seq: int  # the last output frame the screen includes
    size: tuple[int, int]  # the model's (cols, rows)


class ScreenWorker:
    """Feeds a :class:`CommandExtractor` in budgeted steps; ``record`` takes the rows found."""

    def __init__(
        self,
        extractor: CommandExtractor,
        record: Callable[[list[CommandLine]], None],
        *,
        name: str = "",
        step: int = STEP,
        rate: float = RATE,
        burst: float = BURST,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.extractor = extractor
        self._record = record
        self._name = name
        self._step = step
        self.budget = Budget(rate, burst, clock)
        self._sleep = sleep  # waits for the budget (tests pass one that moves their clock)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.steps = 0  # steps done (for tests and benchmarks)

    # Frames, in order; each only queues.

    def stdin(self, data: bytes, offset_us: int) -> None:
        self._took(self.extractor.stdin(data, offset_us))

    def output(self, data: bytes, seq: int | None = None) -> None:
        self._took(self.extractor.output(data, seq))

    def resize(self, cols: int, rows: int) -> None:
        self._took(self.extractor.resize(cols, rows))

    def snapshot(self, rows: int | None = None) -> Snapshot:
        """The screen as far as it has been fed (see ``CommandExtractor.snapshot``)."""
        screen, seq = self.extractor.snapshot(rows)
        return Snapshot(screen, seq, self.extractor.screen.size)

    async def fresh_snapshot(self, rows: int | None = None) -> Snapshot:
        """The screen with all the output given so far: fed on demand, in steps, within the
        budget (after any Enter queued before, a screenful of each run of output at most,
        then drawn once)."""
        if self._closed:
            return self.snapshot(rows)
        taken: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()

        def answer(screen: bytes, seq: int) -> None:
            if not taken.done():
                taken.set_result(Snapshot(screen, seq, self.extractor.screen.size))

        self._took(self.extractor.want_snapshot(rows, answer))
        return await taken

    def close(self) -> None:
        """The session ends: stop working, record the Enter still waiting."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        self._recorded(self.extractor.finish())

    async def idle(self) -> None:
        """Return once nothing is queued (tests)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    # The work.

    def _took(self, commands: list[CommandLine]) -> None:
        self._recorded(commands)
        running = self._task is not None and not self._task.done()
        if self.extractor.busy and not running and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"screen {self._name}"
            )

    async def _run(self) -> None:
        while self.extractor.busy and not self._closed:
            granted = self.budget.take(self._step)
            if granted < self._step:
                self.budget.give_back(granted)
                # The session used its share: it keeps only what the lines to be read need,
                # and waits its turn (this is the budget's clock).
                self.extractor.shed()
                await self._sleep(self.budget.wait(self._step))
                continue
            try:
                used, commands = self.extractor.work(granted)
            except Exception:
                logger.exception("Command extraction failed in session %s", self._name)
                self._recorded(self.extractor.reset())
                return
            self.steps += 1
            if used < granted:
                self.budget.give_back(granted - used)
            else:
                self.budget.spend(used - granted)
            self._recorded(commands)
            await asyncio.sleep(0)  # every other session's callbacks run between two steps

    def _recorded(self, commands: list[CommandLine]) -> None:
        if commands:
            self._record(commands)
