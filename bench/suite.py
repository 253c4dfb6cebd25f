"""One database's benchmark run, in a process of its own (Django's settings read the environment
once, so SQLite and PostgreSQL cannot share a process). ``python -m bench`` starts it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from . import database, kubectl, load, measures, report
from .measures import DataFile, Sizes
from .stack import Stack, cpu_ticks, run_stack, stolen_percent

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ["Django", "channels", "daphne", "Twisted", "autobahn", "aiohttp", "psycopg"]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    debian = Path("/etc/debian_version")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "debian": debian.read_text().strip() if debian.exists() else None,
        "python": platform.python_version(),
        "versions": {name: metadata.version(name) for name in PACKAGES},
    }


async def run_all(
    stack: Stack, sizes: Sizes, data: DataFile, postgres: bool, workdir: Path
) -> dict[str, Any]:
    """Every measurement, cheapest to disturb first: memory on a fresh Daphne, then one
    session at a time, then crowds, the typing ramp last (it goes past what the server carries).
    """
    results: dict[str, Any] = {}
    step = Steps()
    step("memory", f"idle memory at {', '.join(map(str, sizes.idle_sessions))} sessions")
    results["memory"] = await measures.idle_memory(stack, sizes.idle_sessions)

    step("keystrokes", "keystrokes of one session, web shell and direct, alternated")
    results["keystrokes"] = await measures.keystrokes_beside_direct(
        stack, sizes.keystrokes, sizes.runs
    )

    binary = kubectl.binary()
    if binary is None:
        print("    kubectl not found: the kubectl baseline is left out", file=sys.stderr)
    home = workdir / "kubectl-home"
    home.mkdir()
    results["output"] = []
    for workload in (measures.cat_workload(data), measures.seq_workload(sizes.seq_lines)):
        step(
            f"output {workload.name}",
            f"output, {workload.name}: web shell, kubectl, bare client, alternated",
        )
        results["output"].append(
            await measures.output_beside_baselines(
                stack, data, workload, sizes.runs, binary, home, postgres
            )
        )

    results["concurrency"] = []
    for sessions, mib in sizes.concurrency:
        step(f"concurrency {sessions}", f"{sessions} sessions streaming at once")
        runs = [
            await measures.concurrency(stack, sessions, mib, data, postgres)
            for _ in range(sizes.concurrency_runs)
        ]
        middle = sorted(runs, key=lambda r: r["aggregate_mib_per_s"] or 0.0)[len(runs) // 2]
        results["concurrency"].append(
            {
                "sessions": sessions,
                "mib_each": mib,
                "runs": runs,
                "aggregate_mib_per_s": middle["aggregate_mib_per_s"],
                "cpu_percent": middle["cpu_percent"],
                "per_session_mib_per_s_median": measures.median(
                    [r["per_session_mib_per_s_median"] for r in runs]
                ),
                # The worst run counts: every session of every run must complete.
                "completed": min(r["completed"] for r in runs),
                "load_1min": measures.spread([r["load_1min"] for r in runs]),
            }
        )

    step("beside_stream", f"{sizes.beside_typists} typists, alone and beside a streaming session")
    results["beside_stream"] = await load.streaming_beside_typists(
        stack, data, sizes.beside_typists, sizes.typing_seconds, sizes.beside_rounds, postgres
    )

    step("typing", f"typing ramp, N = {', '.join(map(str, sizes.typing_steps))} (to the knee)")
    results["typing"] = await load.typing_ramp(
        stack, sizes.typing_steps, sizes.typing_seconds, postgres
    )
    results["seconds_per_step"] = step.done()
    return results


class Steps:
    """Says what runs (on stderr) and notes how long each step took, for the time budget."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._current: str | None = None
        self._started = 0.0

    def __call__(self, key: str, what: str) -> None:
        self._finish()
        print(f"  … {what} (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
        self._current, self._started = key, time.monotonic()

    def _finish(self) -> None:
        if self._current is not None:
            self.seconds[self._current] = round(time.monotonic() - self._started, 1)
        self._current = None

    def done(self) -> dict[str, float]:
        self._finish()
        return self.seconds


def limits() -> dict[str, Any]:
    """The limits that a thousand sessions meet: open files, processes, the listen backlog."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    somaxconn = Path("/proc/sys/net/core/somaxconn")
    return {
        "open_files": [soft, hard],
        "processes": list(resource.getrlimit(resource.RLIMIT_NPROC)),
        "somaxconn": int(somaxconn.read_text()) if somaxconn.exists() else None,
        # Daphne listens through Twisted's listenTCP, whose backlog is 50.
        "daphne_listen_backlog": 50,
        "opening_at_once": measures.OPENING_AT_ONCE,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suite")
    parser.add_argument("--db", choices=["sqlite", "postgres"], required=True)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--full", action="store_true")
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args(argv)
    sizes = measures.QUICK if args.quick else measures.FULL if args.full else measures.STANDARD
    kind = "quick" if args.quick else "full" if args.full else "standard"
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"webshell-bench-{args.db}-"))
    try:
        env = database.prepare_environment(args.db, workdir)
        database.setup_django_and_migrate()
        cookie = database.make_user_cookie()
        data = measures.write_data_file(workdir / "data.bin", sizes.stream_mib)
        result: dict[str, Any] = {
            "date": dt.date.today().isoformat(),
            "db": args.db,
            "quick": args.quick,
            "kind": kind,
            "machine": machine(),
            "database": database.describe(),
            "sizes": asdict(sizes),
            "load_average_before": os.getloadavg(),
            "limits": limits(),
        }
        print(f"{args.db}: kubesim, Daphne and the measurements", file=sys.stderr, flush=True)
        ticks = cpu_ticks()
        with run_stack(env, workdir, cookie) as stack:
            result.update(asyncio.run(run_all(stack, sizes, data, args.db == "postgres", workdir)))
            trouble = stack.trouble()
            result["daphne_log"] = {
                "lines": len(stack.daphne.log),
                "trouble_lines": len(trouble),
                "first_trouble": trouble[:20],
            }
        result["load_average_after"] = os.getloadavg()
        result["stolen_percent"] = stolen_percent(ticks, cpu_ticks())
        result["elapsed_seconds"] = round(time.monotonic() - began, 1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if kind == "standard" else f"-{kind}"
    path = args.json or RESULTS / f"{result['date']}-{args.db}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(report.render(result))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
