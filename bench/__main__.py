"""``python -m bench [--db sqlite|postgres|both] [--quick | --full]``: run the benchmarks, print
the tables (Markdown) and write ``bench/results/<date>-<db>[-quick|-full].json``.

Each database runs in a child process (``bench.suite``), one after the other, so that the two
never compete for the 2 cores; at the end both are printed side by side against the targets.
The standard run takes 2.5 to 4 minutes a database (the further the typing ramp goes, the
longer); ``--full`` (30 s typing windows, 5 rounds, a longer ``seq``) 10 to 15; ``--quick`` is a
smoke run of every measurement (half a minute).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from .database import PG_HOST, PG_PORT
from .report import render_summary

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# Past these a database's run hangs (a standard one takes 2.5 to 4 minutes).
RUN_TIMEOUT = {"quick": 600, "standard": 900, "full": 3600}


def postgres_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=2):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="one small run of each measurement")
    size.add_argument(
        "--full", action="store_true", help="longer typing windows, more rounds, longer seq"
    )
    args = parser.parse_args(argv)
    kind = "quick" if args.quick else "full" if args.full else "standard"
    databases = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    date = dt.date.today().isoformat()
    began = time.monotonic()
    status = 0
    written: list[Path] = []
    for db in databases:
        if db == "postgres" and not postgres_reachable():
            print(f"postgres: nothing listens on {PG_HOST}:{PG_PORT}; skipped", file=sys.stderr)
            status = 1
            continue
        path = RESULTS / f"{date}-{db}{'' if kind == 'standard' else '-' + kind}.json"
        command = [sys.executable, "-m", "bench.suite", "--db", db, "--json", str(path)]
        if kind != "standard":
            command.append(f"--{kind}")
        try:
            done = subprocess.run(command, cwd=ROOT, timeout=RUN_TIMEOUT[kind])
        except subprocess.TimeoutExpired:
            print(f"{db}: no result within {RUN_TIMEOUT[kind]} s", file=sys.stderr)
            status = 1
            continue
        status = status or done.returncode
        if done.returncode == 0:
            written.append(path)
        print()
    if written:
        results = [json.loads(path.read_text()) for path in written]
        print(render_summary(results))
    print(f"\n{kind} run of {', '.join(databases)}: {time.monotonic() - began:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
