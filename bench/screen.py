"""The screen model's work on the event loop, in process: ``python -m bench.screen``.

A session's frames are replayed into a real :class:`~terminals.session.screen.ScreenWorker`
(default step, rate and burst, an 80x24 terminal) on a simulated clock: frames arrive at the
times a session at full speed would send them (``STREAM_RATE``), the loop is free between two
frames (the worker may take a step), and the worker's budget refills by that clock. Nothing
else runs, so the figures are the screen work alone, without the noise of a whole server.

1. **CPU per MiB of output**: the CPU time spent in the extractor's calls (queueing a frame,
   a worker's step, a snapshot), and the bytes fed to pyte, per MiB of output, for output
   nobody reads a line from: ``cat`` of a large file after one Enter; a full-screen program
   redrawing after each key (no Enter); output with a resize every 64 KiB. Then what an Enter
   and a watcher's snapshot cost after such a burst.
2. **Index precision under the budget**: commands typed key by key (echoed), each followed by
   a burst of output of a given size; the share recorded exactly (the command as typed, shown,
   not marked).

Imported by ``bench.commands``, which reports it beside its measurements through the stack.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import inspect
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from terminals.audit.commands import CommandExtractor, CommandLine, ScreenModel
from terminals.session.screen import ScreenWorker

MIB = 2**20
FRAME = 16 * 1024  # an output frame (a PTY read, merged: the pump stores up to 64 KiB)
STREAM_RATE = 40 * MIB  # bytes a second: one session at full speed through Daphne
KEY_INTERVAL = 0.1  # seconds between a typist's keys
SIZE = (80, 24)
PROMPT = b"\x1b[01;32muser@pod\x1b[00m:\x1b[01;34m~\x1b[00m$ "
BURSTS = (0, 64 * 1024, MIB, 16 * MIB)  # output after each command in the precision runs
COMMANDS = 20  # per burst size


class Timeline:
    """Simulated time: the worker's budget reads it, its waits end when the replay moves it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._moved = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        while self.now < until:
            self._moved.clear()
            await self._moved.wait()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._moved.set()


class Meter:
    """CPU time in the extractor's public calls (outermost only) and bytes fed to pyte."""

    def __init__(self) -> None:
        self.cpu_ns = 0
        self.fed = 0
        self._depth = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[Meter]:
        patched: list[tuple[type, str, Any]] = []
        for name, member in vars(CommandExtractor).items():
            if name.startswith("_") or not inspect.isfunction(member):
                continue
            patched.append((CommandExtractor, name, member))
            setattr(CommandExtractor, name, self._timed(member))
        feed = ScreenModel.feed
        patched.append((ScreenModel, "feed", feed))

        def counted(model: ScreenModel, data: bytes) -> None:
            self.fed += len(data)
            feed(model, data)

        setattr(ScreenModel, "feed", counted)  # noqa: B010 (mypy refuses the assignment)
        try:
            yield self
        finally:
            for owner, name, original in patched:
                setattr(owner, name, original)

    def _timed(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth += 1
            t0 = time.thread_time_ns()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.cpu_ns += time.thread_time_ns() - t0

        return timed


class Replay:
    """One session's frames into a :class:`ScreenWorker`, on a :class:`Timeline`."""

    def __init__(self) -> None:
        self.timeline = Timeline()
        self.rows: list[CommandLine] = []
        self.worker = ScreenWorker(
            CommandExtractor(*SIZE),
            self.rows.extend,
            clock=self.timeline,
            sleep=self.timeline.sleep,
        )
        self.seq = 0
        self.output_bytes = 0

    async def out(self, data: bytes) -> None:
        self.worker.output(data, self.seq)
        self.seq += 1
        self.output_bytes += len(data)
        await self._pass(len(data) / STREAM_RATE)

    async def key(self, data: bytes, echo: bytes | None = None) -> None:
        self.worker.stdin(data, int(self.timeline.now * 1e6))
        self.seq += 1
        await self._pass(KEY_INTERVAL / 2)
        await self.out(data if echo is None else echo)
        await self._pass(KEY_INTERVAL / 2)

    async def resize(self, cols: int, rows: int) -> None:
        self.worker.resize(cols, rows)
        self.seq += 1
        await self._pass(0.0)

    async def burst(self, size: int, frame: bytes) -> None:
        for _ in range(size // len(frame)):
            await self.out(frame)

    async def command(self, line: str, burst: int, frame: bytes, *, keys: bool = True) -> None:
        """A command at a prompt, typed key by key (else in one frame, as pasted), its echo,
        then ``burst`` bytes of output."""
        await self.out(PROMPT)
        if keys:
            for char in line.encode():
                await self.key(bytes([char]))
            await self.key(b"\r", b"\r\n")
        else:
            await self.key(line.encode() + b"\r", line.encode() + b"\r\n")
        await self.burst(burst, frame)

    async def snapshot(self) -> bytes:
        # A snapshot built on demand where the worker has one (else: as far as it was fed).
        taken = getattr(self.worker, "fresh_snapshot", self.worker.snapshot)(SIZE[1])
        if inspect.isawaitable(taken):
            waiting = asyncio.ensure_future(taken)
            while not waiting.done():
                await self._pass(0.01)
            taken = waiting.result()
        return bytes(taken.screen)

    async def settle(self) -> None:
        """Let simulated time pass until the worker has nothing left to do (at most 10 min)."""
        for _ in range(6000):
            await asyncio.sleep(0)
            if not self.worker.extractor.busy:
                break
            await self._pass(0.1)
        await self.worker.idle()

    async def _pass(self, seconds: float) -> None:
        self.timeline.advance(seconds)
        await asyncio.sleep(0)  # the loop is free: the worker may take a step


def lines_frame(seed: int = 1) -> bytes:
    """A frame of base64 lines as a cooked TTY shows them (``\\r\\n``)."""
    raw = base64.encodebytes(random.Random(seed).randbytes(FRAME * 3 // 4))
    return raw.replace(b"\n", b"\r\n")[:FRAME]


def redraw_frame(n: int) -> bytes:
    """What a full-screen program writes after a key: every row of an 80x24 screen redrawn."""
    rows = [b"\x1b[%d;1H\x1b[K%s" % (y + 1, (b"%06d " % (n + y)) * 11) for y in range(SIZE[1])]
    return b"".join(rows) + b"\x1b[24;1H"


async def cpu_per_mib(mib: int) -> dict[str, Any]:
    """The screen work per MiB of output nobody reads a line from, then an Enter, a snapshot."""
    results: dict[str, Any] = {}
    frame = lines_frame()

    async def cat(replay: Replay) -> None:
        await replay.command("cat big.txt", 0, frame)
        await replay.burst(mib * MIB, frame)

    async def fullscreen(replay: Replay) -> None:
        await replay.command("vi notes", 0, frame)
        await replay.out(b"\x1b[?1049h\x1b[H\x1b[2J")
        n = 0
        while replay.output_bytes < mib * MIB:
            await replay.key(b"j", redraw_frame(n))
            n += 1

    async def resizes(replay: Replay) -> None:
        await replay.command("cat big.txt", 0, frame)
        for n in range(mib * MIB // (64 * 1024)):
            await replay.resize(80 + n % 2, 24)
            await replay.burst(64 * 1024, frame)

    for name, scenario in [("cat", cat), ("fullscreen_keys", fullscreen), ("resizes", resizes)]:
        replay = Replay()
        with Meter().installed() as meter:
            await scenario(replay)
            await replay.settle()
            results[name] = per_mib(meter, replay.output_bytes)
    # After such a burst: a watcher's snapshot; the next command (its line is read then).
    for name in ("cat_then_snapshot", "cat_then_enter"):
        replay = Replay()
        with Meter().installed() as meter:
            await cat(replay)
            await replay.settle()
            if name == "cat_then_snapshot":
                results[name] = await cost(meter, replay, replay.snapshot)
            else:
                enter = functools.partial(replay.command, "uptime", 0, frame)
                results[name] = await cost(meter, replay, enter)
                results[name]["recorded"] = [row.text for row in replay.rows]
    return results


def per_mib(meter: Meter, output: int) -> dict[str, Any]:
    mib = output / MIB
    return {
        "mib": round(mib, 2),
        "cpu_ms_per_mib": round(meter.cpu_ns / 1e6 / mib, 3),
        "fed_bytes_per_mib": round(meter.fed / mib),
    }


async def cost(meter: Meter, replay: Replay, action: Callable[[], Any]) -> dict[str, Any]:
    """CPU and bytes fed for ``action`` and the work it leaves."""
    cpu, fed = meter.cpu_ns, meter.fed
    await action()
    await replay.settle()
    return {"cpu_ms": round((meter.cpu_ns - cpu) / 1e6, 2), "fed_bytes": meter.fed - fed}


async def precision() -> dict[str, Any]:
    """Commands typed after bursts of output: the share the index records exactly."""
    results: dict[str, Any] = {}
    frame = lines_frame()
    for burst, keys in [(burst, True) for burst in BURSTS] + [(MIB, False), (16 * MIB, False)]:
        replay = Replay()
        lines = [f"echo command-{n} --burst={burst}" for n in range(COMMANDS)]
        t0 = time.perf_counter()
        for line in lines:
            await replay.command(line, burst, frame, keys=keys)
        await replay.out(PROMPT)
        await replay.settle()
        replay.worker.close()
        exact = [
            row
            for row in replay.rows
            if row.text in lines and row.typed == row.text and row.echoed and not row.mismatch
        ]
        typed = "keys" if keys else "pasted"
        results[f"{typed}_then_{burst // 1024}_kib"] = {
            "commands": len(lines),
            "exact": len({row.text for row in exact}),
            "rows": len(replay.rows),
            "marked": sum(row.mismatch or not row.echoed for row in replay.rows),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return results


async def run_all(mib: int = 16) -> dict[str, Any]:
    return {"cpu_per_mib": await cpu_per_mib(mib), "precision": await precision()}


def render(result: dict[str, Any]) -> list[str]:
    lines = ["  screen work in process (80x24, simulated full-speed output):"]
    for name, figures in result["cpu_per_mib"].items():
        if "cpu_ms_per_mib" in figures:
            lines.append(
                f"    {name}: {figures['cpu_ms_per_mib']} ms CPU per MiB, "
                f"{figures['fed_bytes_per_mib']} bytes fed to pyte per MiB"
            )
        else:
            lines.append(
                f"    {name}: {figures['cpu_ms']} ms CPU, {figures['fed_bytes']} bytes fed"
            )
    for name, figures in result["precision"].items():
        lines.append(
            f"    precision, {name}: {figures['exact']}/{figures['commands']} exact, "
            f"{figures['rows']} rows, {figures['marked']} marked"
        )
    return lines


def main() -> int:
    result = asyncio.run(run_all())
    print("\n".join(render(result)))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
