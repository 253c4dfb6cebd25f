"""The measurements, each through the real stack: idle memory, keystrokes, throughput, upstream
ceiling, concurrency. Each returns a JSON-ready dict; every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from asgiref.sync import sync_to_async

from tests.fixtures.kubesim import exec_path, open_exec

from . import database
from .client import Stream, Terminal, say
from .stack import CpuMeter, Stack, rss_kib

WEB = "/ws/terminals/kubesim/default/web/"
MIB = 2**20
# Raw mode: output bytes pass the PTY unchanged (no \n → \r\n), input is not echoed.
RAW = "stty raw -echo"
T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does."""

    stream_mib: int  # one session's output in the throughput runs
    runs: int  # repeats of the cheap measurements (the median is reported)
    keystrokes: int  # round trips per latency run
    concurrency: tuple[tuple[int, int], ...]  # (sessions, MiB each)
    idle_sessions: int


FULL = Sizes(
    stream_mib=64, runs=3, keystrokes=2000, concurrency=((20, 4), (50, 2)), idle_sessions=100
)
QUICK = Sizes(stream_mib=8, runs=1, keystrokes=200, concurrency=((5, 1), (10, 1)), idle_sessions=20)
WARMUP_KEYSTROKES = 20  # the first ones include cat's start-up


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run ORM work off the event loop (Django refuses it inside)."""
    return await sync_to_async(function)(*args)


@dataclass(frozen=True)
class DataFile:
    """The file the pod's shell prints."""

    path: Path
    size: int


def write_data_file(path: Path, mib: int) -> DataFile:
    """Random, incompressible bytes: the worst case for the store, as the reference spike had."""
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(MIB))
    return DataFile(path, mib * MIB)


async def open_terminal(stack: Stack) -> Terminal:
    return await Terminal.open(stack.daphne.ws_url, WEB, stack.cookie)


# 1. Memory per idle session -------------------------------------------------------------------


async def idle_memory(stack: Stack, sessions: int) -> dict[str, Any]:
    """Daphne's RSS before and after opening ``sessions`` idle shells (each has shown output)."""
    daphne_pid, kubesim_pid = stack.daphne.process.pid, stack.kubesim.process.pid
    # A first session loads what every session needs (modules, the cluster's connection).
    warm = await open_terminal(stack)
    try:
        await warm.run(say("BENCH-WARM"), "BENCH-WARM")
    finally:
        await warm.close()
    before, kubesim_before = rss_kib(daphne_pid), rss_kib(kubesim_pid)
    started = time.perf_counter()

    async def open_idle() -> tuple[Terminal, float]:
        t0 = time.perf_counter()
        terminal = await open_terminal(stack)
        opened = time.perf_counter() - t0
        await terminal.run(say("BENCH-IDLE"), "BENCH-IDLE")  # the shell is up and has answered
        return terminal, opened

    results = await asyncio.gather(*(open_idle() for _ in range(sessions)), return_exceptions=True)
    open_seconds = time.perf_counter() - started
    terminals = [r[0] for r in results if isinstance(r, tuple)]
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    after, kubesim_after = rss_kib(daphne_pid), rss_kib(kubesim_pid)
    ready_ms = sorted(1000 * r[1] for r in results if isinstance(r, tuple))
    await asyncio.gather(*(t.close() for t in terminals), return_exceptions=True)
    ids = [t.session_id for t in terminals]
    ended = await _await_sessions_ended(ids, timeout=30)
    opened = max(1, len(terminals))
    return {
        "sessions": sessions,
        "opened": len(terminals),
        "failures": failures[:5],
        "daphne_rss_before_kib": before,
        "daphne_rss_after_kib": after,
        "kib_per_session": round((after - before) / opened, 1),
        "kubesim_kib_per_session": round((kubesim_after - kubesim_before) / opened, 1),
        "open_all_seconds": round(open_seconds, 2),
        "ready_ms_p50": round(percentile(ready_ms, 50), 1),
        "ready_ms_max": round(ready_ms[-1], 1) if ready_ms else None,
        "all_recorded_as_ended": ended,
        "daphne_rss_after_close_kib": rss_kib(daphne_pid),
    }


async def _await_sessions_ended(ids: list[str], timeout: float) -> bool:
    """Wait until the audit store says every session ended (the server has cleaned up)."""

    def open_count() -> int:
        from terminals.models import Session

        return Session.objects.filter(pk__in=ids, ended_at__isnull=True).count()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await in_thread(open_count) == 0:
            return True
        await asyncio.sleep(0.1)  # the record lives in another process: poll it
    return False


# 2. Keystroke latency -------------------------------------------------------------------------


async def keystrokes(stack: Stack, count: int) -> dict[str, Any]:
    """Sequential 1-byte round trips into ``cat`` on a raw TTY: each byte comes back once."""
    t0 = time.perf_counter()
    terminal = await open_terminal(stack)
    open_ms = (time.perf_counter() - t0) * 1000
    try:
        await terminal.run(f"{RAW}; {say('BENCH-READY')}; cat", "BENCH-READY")
        times: list[float] = []
        mismatches = 0
        async with asyncio.timeout(60 + count * 0.1):
            for i in range(WARMUP_KEYSTROKES + count):
                key = bytes([97 + i % 26])
                t0 = time.perf_counter()
                await terminal.type(key)
                echoed = await terminal.read_frame()
                elapsed = time.perf_counter() - t0
                if echoed != key:
                    mismatches += 1
                if i >= WARMUP_KEYSTROKES:
                    times.append(elapsed * 1000)
    finally:
        await terminal.close()
    times.sort()
    return {
        "count": count,
        "p50_ms": round(percentile(times, 50), 3),
        "p90_ms": round(percentile(times, 90), 3),
        "p99_ms": round(percentile(times, 99), 3),
        "max_ms": round(times[-1], 3),
        "mismatched_echoes": mismatches,
        "open_to_ready_ms": round(open_ms, 1),
    }


# 3. Throughput of one session -----------------------------------------------------------------


async def throughput(stack: Stack, data: DataFile, postgres: bool) -> dict[str, Any]:
    """``cat`` of the data file on a raw TTY, timed by the client between two markers."""
    size = data.size
    store_before = await in_thread(database.store_bytes)
    meter = CpuMeter(stack, database.PG_NAME if postgres else None)
    terminal = await open_terminal(stack)
    try:
        meter.start()
        t0 = time.perf_counter()
        stream = await terminal.stream(f"cat {data.path}", setup=RAW, timeout=120 + size / MIB)
        cpu = meter.stop(time.perf_counter() - t0)
    finally:
        await terminal.close()
    counts = await in_thread(database.audit_counts, terminal.session_id)
    store_after = await in_thread(database.store_bytes)
    return {
        "bytes": stream.total,
        "intact": stream.total == size,
        "mib_per_s": round(stream.mib_per_s, 1),
        "seconds": round(stream.seconds, 2),
        "cpu_percent": cpu,
        "audit_frames": counts.frames,
        "frames_out": counts.frames_out,
        "bytes_out": counts.bytes_out,
        "mean_output_frame_bytes": round(counts.bytes_out / counts.frames_out)
        if counts.frames_out
        else None,
        "commits": counts.commits,
        "frames_per_commit": round(counts.frames / counts.commits, 1) if counts.commits else None,
        "store_bytes_per_mib": round((store_after - store_before) / (size / MIB)),
    }


# 4. The upstream ceiling: kubesim alone ---------------------------------------------------------


async def kubesim_alone(stack: Stack, data: DataFile) -> dict[str, Any]:
    """The same ``cat`` on a raw TTY through kubesim's exec, read by a bare aiohttp client."""
    kubesim = stack.kubesim
    size = data.size
    path = exec_path(
        "web", ["sh", "-c", f"{RAW}; cat {data.path}"], stdin=True, stdout=True, tty=True
    )
    connector = aiohttp.TCPConnector(ssl=kubesim.ssl_context())
    async with aiohttp.ClientSession(base_url=kubesim.url, connector=connector) as http:
        ws = await open_exec(http, kubesim, path, user="webshell")
        # The size first, as kubectl sends it: kubesim starts the process without waiting.
        await ws.send_bytes(b"\x04" + json.dumps({"Width": 120, "Height": 40}).encode())
        total = timed = 0
        t0 = t1 = 0.0
        status = b""
        async with asyncio.timeout(120 + size / MIB):
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.BINARY or not message.data:
                    continue
                channel, payload = message.data[0], message.data[1:]
                if channel == 1 and payload:
                    t1 = time.perf_counter()
                    if not total:
                        t0 = t1  # the clock starts with the first frame, counted from its end
                    else:
                        timed += len(payload)
                    total += len(payload)
                elif channel == 3:
                    status += payload
    seconds = t1 - t0
    return {
        "bytes": total,
        "intact": total == size,
        "mib_per_s": round(timed / seconds / MIB, 1) if seconds > 0 else None,
        "seconds": round(seconds, 2),
        "status": json.loads(status).get("status") if status else None,
    }


# 5. Many sessions at once ------------------------------------------------------------------------


async def concurrency(
    stack: Stack, sessions: int, mib: int, data: DataFile, postgres: bool
) -> dict[str, Any]:
    """``sessions`` shells each print ``mib`` MiB at the same time; aggregate MiB/s."""
    opened = await asyncio.gather(
        *(open_terminal(stack) for _ in range(sessions)), return_exceptions=True
    )
    terminals = [t for t in opened if isinstance(t, Terminal)]
    failures = [repr(t) for t in opened if isinstance(t, BaseException)]
    meter = CpuMeter(stack, database.PG_NAME if postgres else None)
    try:
        command = f"head -c {mib * MIB} {data.path}"
        meter.start()
        t0 = time.perf_counter()
        streams = await asyncio.gather(
            *(t.stream(command, setup=RAW, timeout=180) for t in terminals),
            return_exceptions=True,
        )
        cpu = meter.stop(time.perf_counter() - t0)
    finally:
        await asyncio.gather(*(t.close() for t in terminals), return_exceptions=True)
    done = [s for s in streams if isinstance(s, Stream)]
    failures += [repr(s) for s in streams if isinstance(s, BaseException)]
    intact = sum(1 for s in done if s.total == mib * MIB)
    wall = max(s.ended for s in done) - min(s.started for s in done) if done else 0.0
    return {
        "sessions": sessions,
        "mib_each": mib,
        "completed": len(done),
        "intact": intact,
        "failures": failures[:5],
        "aggregate_mib_per_s": round(sum(s.timed for s in done) / wall / MIB, 1) if wall else None,
        "per_session_mib_per_s_median": round(median([s.mib_per_s for s in done]), 2),
        "per_session_mib_per_s_min": round(min(s.mib_per_s for s in done), 2) if done else None,
        "wall_seconds": round(wall, 2),
        "cpu_percent": cpu,
    }
