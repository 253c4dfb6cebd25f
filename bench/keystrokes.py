"""``python -m bench.keystrokes [--db sqlite|postgres] [--runs N] [--count N] [--typists N]``:
one of the suite's keystroke measurements alone, printed as JSON, for comparing code quickly
(A/B) where the whole suite would take minutes. By default one session's added keystroke latency
(web shell and straight to kubesim in alternated runs, medians and ranges); with ``--typists N``,
``--runs`` typing windows of N sessions at 5 keys/s (added p50/p99, Daphne's CPU per keystroke).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import database, load, measures
from .stack import Stack, run_stack


async def typists(stack: Stack, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``args.runs`` typing windows of ``args.typists`` sessions (one crowd, kept open)."""
    async with load.crowd_of(stack, args.typists) as crowd:
        await crowd.open(args.typists, load.direct_typists(args.typists))
        return [
            await load.typing_window(stack, crowd, args.seconds, args.db == "postgres")
            for _ in range(args.runs)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keystrokes")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--typists", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=8.0, help="typing window")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix=f"webshell-bench-keys-{args.db}-"))
    try:
        env = database.prepare_environment(args.db, workdir)
        database.setup_django_and_migrate()
        cookie = database.make_user_cookie()
        with run_stack(env, workdir, cookie) as stack:
            if args.typists:
                windows = asyncio.run(typists(stack, args))
            else:
                result = asyncio.run(
                    measures.keystrokes_beside_direct(stack, args.count, args.runs)
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.typists:
        keys = ("added_p50_ms", "added_p99_ms", "daphne_cpu_ms_per_keystroke", "load_1min")
        print(
            json.dumps(
                {
                    "db": args.db,
                    "typists": args.typists,
                    **{key: measures.spread([w[key] for w in windows], 3) for key in keys},
                }
            )
        )
        return 0
    summary = {
        key: result[key]
        for key in ("added_p50", "added_p99", "web_p50", "web_p99", "direct_p99", "load_1min")
    }
    print(json.dumps({"db": args.db, **summary, "mismatched": result["mismatched_echoes"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
