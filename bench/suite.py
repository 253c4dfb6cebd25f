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
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from . import database, measures, report
from .measures import DataFile, Sizes
from .stack import Stack, run_stack

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


async def run_all(stack: Stack, sizes: Sizes, data: DataFile, postgres: bool) -> dict[str, Any]:
    """Every measurement, cheapest to disturb first: memory on a fresh Daphne, then latency."""
    results: dict[str, Any] = {}
    step("idle memory")
    results["memory"] = await measures.idle_memory(stack, sizes.idle_sessions)

    step("keystrokes")
    runs = [await measures.keystrokes(stack, sizes.keystrokes) for _ in range(sizes.runs)]
    results["keystrokes"] = {
        "count": sizes.keystrokes,
        "runs": runs,
        **{k: measures.median([r[k] for r in runs]) for k in ("p50_ms", "p90_ms", "p99_ms")},
    }

    step("throughput")
    runs = [await measures.throughput(stack, data, postgres) for _ in range(sizes.runs)]
    middle = sorted(runs, key=lambda r: r["mib_per_s"])[len(runs) // 2]  # the median run
    results["throughput"] = {
        "mib": sizes.stream_mib,
        "runs": runs,
        "mib_per_s": middle["mib_per_s"],
        "cpu_percent": middle["cpu_percent"],
        "store_bytes_per_mib": middle["store_bytes_per_mib"],
        "all_intact": all(r["intact"] for r in runs),
    }

    step("kubesim alone")
    runs = [await measures.kubesim_alone(stack, data) for _ in range(sizes.runs)]
    results["kubesim_alone"] = {
        "runs": runs,
        "mib_per_s": measures.median([r["mib_per_s"] for r in runs if r["mib_per_s"]]),
    }

    results["concurrency"] = []
    for sessions, mib in sizes.concurrency:
        step(f"{sessions} sessions at once")
        runs = [
            await measures.concurrency(stack, sessions, mib, data, postgres)
            for _ in range(sizes.runs)
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
            }
        )
    return results


def step(what: str) -> None:
    print(f"  … {what}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suite")
    parser.add_argument("--db", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sizes = measures.QUICK if args.quick else measures.FULL
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
            "machine": machine(),
            "database": database.describe(),
            "sizes": asdict(sizes),
            "load_average_before": os.getloadavg(),
        }
        print(f"{args.db}: kubesim, Daphne and the measurements", file=sys.stderr, flush=True)
        with run_stack(env, workdir, cookie) as stack:
            result.update(asyncio.run(run_all(stack, sizes, data, args.db == "postgres")))
            trouble = stack.trouble()
            result["daphne_log"] = {
                "lines": len(stack.daphne.log),
                "trouble_lines": len(trouble),
                "first_trouble": trouble[:20],
            }
        result["load_average_after"] = os.getloadavg()
        result["elapsed_seconds"] = round(time.monotonic() - began, 1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    suffix = "-quick" if args.quick else ""
    path = RESULTS / f"{result['date']}-{args.db}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(report.render(result))
    print(f"written: {path.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
