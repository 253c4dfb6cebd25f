"""Typing crowds through the real stack: the typing ramp, and typists beside a streaming session.

**Added keystroke latency.** Each window runs web-shell typists and, in the same worker
processes at the same time, a few typists straight to kubesim (``bench.direct``). A figure of
added latency is the web shell's percentile minus the direct typists' same percentile in the
same window: what the web shell adds to what the machine, kubesim, the pod's PTY and the bench
client take anyway under that load. Keys are typed open loop (on schedule whether or not the
last one came back); a key not back within the drain timeout counts as slower than all others.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from . import database
from .client import RAW
from .crowd import START_DELAY, Crowd, Target, workers_for
from .measures import WEB, DataFile, await_sessions_ended, endpoint, open_terminal, spread
from .stack import CpuMeter, Stack, cpu_ticks, listen_overflows, load_1min, stolen_percent

KEY_INTERVAL = 0.2  # 5 keys/s per typist
ADDED_P99_LIMIT_MS = 20.0  # the knee: the largest N whose added p99 stays within this
HARNESS_TYPISTS = 500  # the target: the ramp measures the machine without Daphne at it


def direct_typists(web: int) -> int:
    """Direct typists beside ``web`` ones: enough for a p99, few enough to add little load."""
    return max(10, web // 20)


def target(stack: Stack) -> Target:
    return Target(stack.daphne.ws_url, WEB, stack.cookie, endpoint(stack))


def added(window: dict[str, Any], p: str) -> float | None:
    """The web shell's percentile minus the direct typists' (None if either has none)."""
    web, bare = window["web"][f"{p}_ms"], window["direct"][f"{p}_ms"]
    return round(web - bare, 3) if web is not None and bare is not None else None


async def typing_window(
    stack: Stack,
    crowd: Crowd,
    seconds: float,
    postgres: bool,
    streamer: Streamer | None = None,
    *,
    direct_only: bool = False,
) -> dict[str, Any]:
    """Every typist of the crowd (or only the direct ones) types for ``seconds``; the servers'
    CPU (and a streamer's output) over exactly then. The database is settled first
    (``database.settle``)."""
    settled = await asyncio.to_thread(database.settle)
    meter = CpuMeter(stack, database.PG_NAME if postgres else None)
    start_at = time.monotonic() + START_DELAY
    typing = crowd.type(start_at, seconds, KEY_INTERVAL, direct_only=direct_only)
    await asyncio.sleep(start_at - time.monotonic())
    meter.start()
    ticks = cpu_ticks()
    streamed = streamer.bytes if streamer else 0
    await asyncio.sleep(seconds)
    cpu = meter.stop(seconds)
    stolen = stolen_percent(ticks, cpu_ticks())
    streamed = streamer.bytes - streamed if streamer else 0
    load = load_1min()
    window = await typing
    if streamer:
        window["stream_mib_per_s"] = round(streamed / 2**20 / seconds, 1)
    echoed = window["web"]["echoed_per_s"] * seconds
    return {
        **window,
        "added_p50_ms": added(window, "p50"),
        "added_p99_ms": added(window, "p99"),
        "cpu_percent": cpu,
        "daphne_cpu_ms_per_keystroke": round(1000 * meter.last_used["daphne"] / echoed, 3)
        if echoed
        else None,
        "load_1min": load,
        "stolen_percent": stolen,
        "settle_s": settled,
    }


@contextlib.asynccontextmanager
async def crowd_of(stack: Stack, sessions: int) -> AsyncIterator[Crowd]:
    """A crowd with workers for ``sessions``; its sessions end (and are recorded) on exit."""
    with Crowd(target(stack), workers_for(sessions)) as crowd:
        ids: list[str] = []
        try:
            yield crowd
        finally:
            ids = await crowd.close()
    await await_sessions_ended(ids, timeout=60)


# 5. The typing ramp -------------------------------------------------------------------------------


async def typing_ramp(
    stack: Stack, steps: tuple[int, ...], seconds: float, postgres: bool
) -> dict[str, Any]:
    """Typists at 5 keys/s each, N = ``steps`` (cumulative: sessions stay open and more join),
    until the first N whose added p99 exceeds the limit."""
    figures: list[dict[str, Any]] = []
    async with crowd_of(stack, max(steps)) as crowd:
        for sessions in steps:
            overflows = listen_overflows()
            opened = await crowd.open(
                sessions - crowd.web_count, direct_typists(sessions) - crowd.direct_count
            )
            opened["listen_overflows"] = listen_overflows() - overflows
            window = await typing_window(stack, crowd, seconds, postgres)
            # When the direct typists are slow too, the machine (kubesim, the client, other
            # work) is the limit and a difference of two slow figures says nothing more.
            window["harness_limited"] = (
                window["direct"]["p99_ms"] is None
                or window["direct"]["p99_ms"] > ADDED_P99_LIMIT_MS
            )
            figures.append({"sessions": sessions, "open": opened, **window})
            if not within_limit(window) or window["harness_limited"] or not opened["web_opened"]:
                break  # past the knee: larger N would only take longer to say so
        without_daphne = None
        if len(figures) < len(steps) and max(steps) >= HARNESS_TYPISTS:
            without_daphne = await harness_alone(stack, crowd, seconds, postgres)
    return {
        "key_interval_s": KEY_INTERVAL,
        "window_seconds": seconds,
        "limit_added_p99_ms": ADDED_P99_LIMIT_MS,
        "steps": figures,
        "knee": knee(figures),
        "stopped_past_knee": len(figures) < len(steps),
        "harness_limited": bool(figures) and figures[-1]["harness_limited"],
        "without_daphne": without_daphne,
    }


async def harness_alone(
    stack: Stack, crowd: Crowd, seconds: float, postgres: bool
) -> dict[str, Any]:
    """:data:`HARNESS_TYPISTS` typists straight to kubesim, and nobody through the web shell:
    what kubesim, the pods and the bench client take of this machine at the target, the share
    a web shell process could not have here."""
    opened = await crowd.open(0, max(0, HARNESS_TYPISTS - crowd.direct_count))
    window = await typing_window(stack, crowd, seconds, postgres, direct_only=True)
    return {
        "typists": window["direct"]["typists"],
        "open": opened,
        "direct": window["direct"],
        "cpu_percent": window["cpu_percent"],
        "client": window["client"],
        "load_1min": window["load_1min"],
    }


def knee(figures: list[dict[str, Any]]) -> int | None:
    """The largest N within the limit with every smaller N within it too; None if the first
    was not."""
    found = None
    for figure in figures:
        if not within_limit(figure):
            break
        found = figure["sessions"]
    return found


def within_limit(window: dict[str, Any]) -> bool:
    """Added p99 within the limit, with every web typist's session still open."""
    p99 = window["added_p99_ms"]
    return p99 is not None and p99 <= ADDED_P99_LIMIT_MS and not window["web"]["failed"]


# 6. Typists beside a streaming session --------------------------------------------------------


class Streamer:
    """A session printing the data file without end on a raw TTY, read (and acked) in full."""

    def __init__(self, stack: Stack, data: DataFile) -> None:
        self.stack = stack
        self.data = data
        self.bytes = 0
        self._flowing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Streamer:
        self.terminal = await open_terminal(self.stack)
        await self.terminal.type(f"{RAW}; while :; do cat {self.data.path}; done\r")
        self._task = asyncio.create_task(self._read())
        async with asyncio.timeout(30):
            await self._flowing.wait()
        return self

    async def _read(self) -> None:
        while True:
            data = await self.terminal.read_frame()
            self.terminal.output.clear()
            self.bytes += len(data)
            if self.bytes > 2**20:
                self._flowing.set()

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.terminal.close()
        # What the server still does for it (the output read ahead, its audit) would
        # otherwise fall into the next window of typists alone.
        await await_sessions_ended([self.terminal.session_id], timeout=30)


async def streaming_beside_typists(
    stack: Stack, data: DataFile, typists: int, seconds: float, rounds: int, postgres: bool
) -> dict[str, Any]:
    """``typists`` at 5 keys/s alone, then while one session streams at full speed; alternated.

    The ratio is the web shell's keystroke p99 with the stream over its p99 alone, per round.
    """
    pairs = []
    async with crowd_of(stack, typists) as crowd:
        opened = await crowd.open(typists, direct_typists(typists))
        for _ in range(rounds):
            alone = await typing_window(stack, crowd, seconds, postgres)
            async with Streamer(stack, data) as streamer:
                with_stream = await typing_window(stack, crowd, seconds, postgres, streamer)
            pairs.append(
                {
                    "alone": alone,
                    "with_stream": with_stream,
                    "stream_mib_per_s": with_stream["stream_mib_per_s"],
                    "p99_ratio": _ratio(with_stream["web"]["p99_ms"], alone["web"]["p99_ms"]),
                    "added_p99_ratio": _ratio(with_stream["added_p99_ms"], alone["added_p99_ms"]),
                }
            )
    return {
        "typists": typists,
        "window_seconds": seconds,
        "open": opened,
        "rounds": pairs,
        "alone_p99_ms": spread([p["alone"]["web"]["p99_ms"] for p in pairs]),
        "with_stream_p99_ms": spread([p["with_stream"]["web"]["p99_ms"] for p in pairs]),
        "p99_ratio": spread([p["p99_ratio"] for p in pairs]),
        "added_p99_ratio": spread([p["added_p99_ratio"] for p in pairs]),
        "stream_mib_per_s": spread([p["stream_mib_per_s"] for p in pairs], 1),
        "load_1min": spread([p[k]["load_1min"] for p in pairs for k in ("alone", "with_stream")]),
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator or denominator <= 0:
        return None
    return round(numerator / denominator, 2)
