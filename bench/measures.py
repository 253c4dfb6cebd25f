"""The measurements of one session at a time, each through the real stack: idle memory,
keystrokes, output (beside kubectl and a bare exec client), concurrent streams. Each returns a
JSON-ready dict; every loop is bounded in count and time. Typing crowds are in ``bench.load``.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from . import database, direct
from .client import RAW, Stream, Terminal, open_many, say
from .crowd import OPENING_AT_ONCE
from .kubectl import kubectl_stream
from .stack import (
    CpuMeter,
    Stack,
    descendants,
    listen_overflows,
    load_1min,
    open_files,
    pss_kib,
    rss_kib,
)

__all__ = ["RAW", "WEB", "in_thread", "percentile", "say"]

WEB = "/ws/terminals/kubesim/default/web/"
MIB = 2**20
T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does."""

    stream_mib: int  # the raw `cat` of the output comparison
    seq_lines: int  # `seq 1 N` of the cooked-TTY output comparison
    runs: int  # alternated rounds of the one-session measurements (medians reported)
    keystrokes: int  # round trips per latency run
    concurrency: tuple[tuple[int, int], ...]  # (sessions, MiB each) streaming at once
    concurrency_runs: int  # repeats of each (the median run is reported)
    idle_sessions: tuple[int, ...]  # idle sessions open when memory is read, cumulative
    typing_steps: tuple[int, ...]  # typing sessions of the ramp, cumulative
    typing_seconds: float  # one typing window
    beside_typists: int  # typists beside a streaming session
    beside_rounds: int  # (alone, with a stream) pairs


STANDARD = Sizes(
    stream_mib=64,
    seq_lines=1_000_000,
    runs=3,
    keystrokes=1000,
    concurrency=((20, 4), (50, 2)),
    concurrency_runs=1,  # the time goes to the typing ramp; --full repeats them
    idle_sessions=(100, 1000),
    typing_steps=(50, 100, 300, 500, 1000),
    typing_seconds=8,
    beside_typists=20,
    beside_rounds=2,
)
FULL = Sizes(
    stream_mib=64,
    seq_lines=3_000_000,
    runs=5,
    keystrokes=2000,
    concurrency=((20, 4), (50, 2)),
    concurrency_runs=3,
    idle_sessions=(100, 1000),
    typing_steps=(50, 100, 300, 500, 1000),
    typing_seconds=30,
    beside_typists=20,
    beside_rounds=3,
)
QUICK = Sizes(
    stream_mib=8,
    seq_lines=100_000,
    runs=1,
    keystrokes=200,
    concurrency=((5, 1),),
    concurrency_runs=1,
    idle_sessions=(10, 20),
    typing_steps=(5, 10),
    typing_seconds=3,
    beside_typists=5,
    beside_rounds=1,
)
WARMUP_KEYSTROKES = 20  # the first ones include cat's start-up


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def spread(values: list[float | None], digits: int = 2) -> dict[str, float | None]:
    """Median, min and max of the values measured (None where a run measured nothing)."""
    known = [v for v in values if v is not None]
    if not known:
        return {"median": None, "min": None, "max": None}
    return {
        "median": round(median(known), digits),
        "min": round(min(known), digits),
        "max": round(max(known), digits),
    }


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


def endpoint(stack: Stack) -> direct.Endpoint:
    return direct.Endpoint.of(stack.kubesim)


# 1. Memory per idle session -------------------------------------------------------------------


async def idle_memory(stack: Stack, steps: tuple[int, ...]) -> dict[str, Any]:
    """Daphne's and kubesim's memory with ``steps`` idle shells open (cumulative: 100, then
    900 more), each of which has answered a command, against one baseline read before."""
    daphne_pid, kubesim_pid = stack.daphne.process.pid, stack.kubesim.process.pid
    # A first session loads what every session needs (modules, the cluster's connection).
    warm = await open_terminal(stack)
    try:
        await warm.run(say("BENCH-WARM"), "BENCH-WARM")
    finally:
        await warm.close()
    await await_sessions_ended([warm.session_id], timeout=30)
    before, kubesim_before = rss_kib(daphne_pid), rss_kib(kubesim_pid)
    shells_before = pss_kib(descendants(kubesim_pid))
    terminals: list[Terminal] = []
    figures: list[dict[str, Any]] = []

    async def open_idle() -> Terminal:
        terminal = await open_terminal(stack)
        await terminal.run(say("BENCH-IDLE"), "BENCH-IDLE")  # the shell is up and has answered
        return terminal

    try:
        for sessions in steps:
            overflows = listen_overflows()
            started = time.monotonic()
            more, failures, seconds = await open_many(
                open_idle, sessions - len(terminals), OPENING_AT_ONCE
            )
            open_seconds = time.monotonic() - started
            terminals += more
            opened = max(1, len(terminals))
            after, kubesim_after = rss_kib(daphne_pid), rss_kib(kubesim_pid)
            shells = pss_kib(descendants(kubesim_pid)) - shells_before
            ready_ms = sorted(1000 * s for s in seconds)
            figures.append(
                {
                    "sessions": sessions,
                    "opened": len(terminals),
                    "failures": failures[:5],
                    "daphne_rss_after_kib": after,
                    "kib_per_session": round((after - before) / opened, 1),
                    "kubesim_kib_per_session": round((kubesim_after - kubesim_before) / opened, 1),
                    "shells_pss_kib_per_session": round(shells / opened, 1),
                    "open_seconds": round(open_seconds, 2),
                    "ready_ms_p50": round(percentile(ready_ms, 50), 1) if ready_ms else None,
                    "ready_ms_max": round(ready_ms[-1], 1) if ready_ms else None,
                    "listen_overflows": listen_overflows() - overflows,
                    "open_files": {
                        "daphne": open_files(daphne_pid),
                        "kubesim": open_files(kubesim_pid),
                    },
                    "load_1min": load_1min(),
                }
            )
    finally:
        await close_all(terminals)
    ended = await await_sessions_ended([t.session_id for t in terminals], timeout=60)
    return {
        "daphne_rss_before_kib": before,
        "kubesim_rss_before_kib": kubesim_before,
        "steps": figures,
        "all_recorded_as_ended": ended,
        "daphne_rss_after_close_kib": rss_kib(daphne_pid),
    }


async def close_all(terminals: list[Terminal]) -> None:
    """Close the terminals, at most ``OPENING_AT_ONCE`` at a time, as users leave."""
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def close(terminal: Terminal) -> None:
        async with gate:
            await terminal.close()

    await asyncio.gather(*(close(t) for t in terminals), return_exceptions=True)


async def await_sessions_ended(ids: list[str], timeout: float) -> bool:
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


_await_sessions_ended = await_sessions_ended  # the name bench.scale imports


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


async def keystrokes_beside_direct(stack: Stack, count: int, runs: int) -> dict[str, Any]:
    """One session's round trips, web shell and straight to kubesim in alternated runs.

    Added latency of a run = the web shell's percentile minus the direct one's, of the same
    round (what the web shell adds to what the machine and kubesim take anyway).
    """
    rounds = []
    for _ in range(runs):
        await asyncio.to_thread(database.settle)
        web = await keystrokes(stack, count)
        bare = await direct.round_trips(endpoint(stack), count)
        rounds.append(
            {
                "web": web,
                "direct": bare,
                "added_p50_ms": round(web["p50_ms"] - bare["p50_ms"], 3),
                "added_p99_ms": round(web["p99_ms"] - bare["p99_ms"], 3),
                "load_1min": load_1min(),
            }
        )
    return {
        "count": count,
        "rounds": rounds,
        **{
            f"{kind}_{p}": spread([r[kind][f"{p}_ms"] for r in rounds], 3)
            for kind in ("web", "direct")
            for p in ("p50", "p99")
        },
        "added_p50": spread([r["added_p50_ms"] for r in rounds], 3),
        "added_p99": spread([r["added_p99_ms"] for r in rounds], 3),
        "load_1min": spread([r["load_1min"] for r in rounds]),
        "mismatched_echoes": sum(r["web"]["mismatched_echoes"] for r in rounds),
    }


# 3. Output: the web shell beside kubectl and a bare exec client ---------------------------------


@dataclass(frozen=True)
class Workload:
    """What the pod's shell prints, and on which TTY mode."""

    name: str
    command: str
    setup: str  # RAW: bytes pass unchanged; "stty sane": a cooked TTY (\n -> \r\n)
    size: int  # the bytes expected between the markers


def cat_workload(data: DataFile) -> Workload:
    """A large file on a raw TTY: few, full PTY reads."""
    return Workload(f"cat {data.size // MIB} MiB, raw TTY", f"cat {data.path}", RAW, data.size)


def seq_workload(lines: int) -> Workload:
    """Ordinary line output on a cooked TTY: many small PTY reads, the cost per frame shows."""
    digits = sum(
        d * (min(lines, 10**d - 1) - 10 ** (d - 1) + 1) for d in range(1, len(str(lines)) + 1)
    )
    size = digits + 2 * lines  # each line ends "\r\n" on a cooked TTY
    return Workload(f"seq 1 {lines:,}, cooked TTY", f"seq 1 {lines}", "stty sane", size)


async def throughput(
    stack: Stack, data: DataFile, postgres: bool, workload: Workload | None = None
) -> dict[str, Any]:
    """The workload (by default ``cat`` of the data file on a raw TTY) through the web shell,
    timed by the client between two markers, with Daphne's CPU and the audit's figures."""
    workload = workload or cat_workload(data)
    size = workload.size
    store_before = await in_thread(database.store_bytes)
    meter = CpuMeter(stack, database.PG_NAME if postgres else None)
    terminal = await open_terminal(stack)
    try:
        meter.start()
        t0 = time.perf_counter()
        stream = await terminal.stream(
            workload.command, setup=workload.setup, timeout=120 + size / MIB
        )
        cpu = meter.stop(time.perf_counter() - t0)
    finally:
        await terminal.close()
    # The next measurement starts on a server that has finished with this session.
    await await_sessions_ended([terminal.session_id], timeout=30)
    counts = await in_thread(database.audit_counts, terminal.session_id)
    store_after = await in_thread(database.store_bytes)
    return {
        "bytes": stream.total,
        "intact": stream.total == size,
        "mib_per_s": round(stream.mib_per_s, 1),
        "seconds": round(stream.seconds, 2),
        "cpu_percent": cpu,
        # Over the whole command (start-up and markers too): an upper bound per MiB.
        "daphne_cpu_ms_per_mib": round(1000 * meter.last_used["daphne"] / (size / MIB), 1),
        "audit_frames": counts.frames,
        "frames_out": counts.frames_out,
        "bytes_out": counts.bytes_out,
        "mean_output_frame_bytes": round(counts.bytes_out / counts.frames_out)
        if counts.frames_out
        else None,
        "commits": counts.commits,
        "frames_per_commit": round(counts.frames / counts.commits, 1) if counts.commits else None,
        "store_bytes_per_mib": round((store_after - store_before) / (size / MIB)),
        "load_1min": load_1min(),
    }


def _baseline(stream: Stream, size: int) -> dict[str, Any]:
    return {
        "bytes": stream.total,
        "intact": stream.total == size,
        "mib_per_s": round(stream.mib_per_s, 1),
        "seconds": round(stream.seconds, 2),
        "load_1min": load_1min(),
    }


async def output_beside_baselines(
    stack: Stack,
    data: DataFile,
    workload: Workload,
    rounds: int,
    kubectl: Path | None,
    home: Path,
    postgres: bool,
) -> dict[str, Any]:
    """The workload through the web shell, ``kubectl exec`` and a bare exec client, in
    alternated rounds (web shell, kubectl, bare, web shell, ...) so that a change of load
    on the machine touches all three; the ratio is taken round by round."""
    timeout = 120 + workload.size / MIB
    runs: dict[str, list[dict[str, Any]]] = {"web": [], "kubectl": [], "bare": []}
    for _ in range(rounds):
        runs["web"].append(await throughput(stack, data, postgres, workload))
        if kubectl is not None:
            stream = await kubectl_stream(
                kubectl,
                stack.kubesim.kubeconfig,
                home,
                workload.command,
                workload.setup,
                timeout,
            )
            runs["kubectl"].append(_baseline(stream, workload.size))
        stream = await direct.exec_stream(
            endpoint(stack), workload.command, workload.setup, timeout
        )
        runs["bare"].append(_baseline(stream, workload.size))

    def ratios(baseline: str) -> list[float | None]:
        return [
            w["mib_per_s"] / b["mib_per_s"] if b["mib_per_s"] else None
            for w, b in zip(runs["web"], runs[baseline], strict=False)
        ]

    return {
        "workload": workload.name,
        "bytes": workload.size,
        "rounds": rounds,
        "kubectl": str(kubectl) if kubectl else None,
        "runs": runs,
        **{f"{k}_mib_per_s": spread([r["mib_per_s"] for r in v], 1) for k, v in runs.items()},
        "web_over_kubectl": spread(ratios("kubectl")),
        "web_over_bare": spread(ratios("bare")),
        "daphne_cpu_ms_per_mib": spread([r["daphne_cpu_ms_per_mib"] for r in runs["web"]], 1),
        "daphne_cpu_percent": spread([r["cpu_percent"]["daphne"] for r in runs["web"]], 1),
        "load_1min": spread([r["load_1min"] for v in runs.values() for r in v]),
        "all_intact": all(r["intact"] for v in runs.values() for r in v),
    }


# 4. Many sessions streaming at once ---------------------------------------------------------------


async def concurrency(
    stack: Stack, sessions: int, mib: int, data: DataFile, postgres: bool
) -> dict[str, Any]:
    """``sessions`` shells each print ``mib`` MiB at the same time; aggregate MiB/s."""
    terminals, failures, _ = await open_many(
        lambda: open_terminal(stack), sessions, OPENING_AT_ONCE
    )
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
        await close_all(terminals)
    ended = await await_sessions_ended([t.session_id for t in terminals], timeout=60)
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
        "all_recorded_as_ended": ended,
        "load_1min": load_1min(),
    }
