"""``python -m bench [--db sqlite|postgres|both] [--quick]``: run the benchmarks, print the table.

Each database runs in a child process (``bench.suite``), one after the other, so that the two
never compete for the 2 cores.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path

from .database import PG_HOST, PG_PORT

ROOT = Path(__file__).resolve().parent.parent
# A whole database's run takes a few minutes; past this something hangs.
RUN_TIMEOUT = 900


def postgres_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=2):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="one small run of each measurement")
    args = parser.parse_args(argv)
    databases = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    status = 0
    for db in databases:
        if db == "postgres" and not postgres_reachable():
            print(f"postgres: nothing listens on {PG_HOST}:{PG_PORT}; skipped", file=sys.stderr)
            status = 1
            continue
        command = [sys.executable, "-m", "bench.suite", "--db", db]
        if args.quick:
            command.append("--quick")
        try:
            done = subprocess.run(command, cwd=ROOT, timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"{db}: no result within {RUN_TIMEOUT} s", file=sys.stderr)
            status = 1
            continue
        status = status or done.returncode
        print()
    return status


if __name__ == "__main__":
    sys.exit(main())
