"""``python -m bench.scale``: idle and typing sessions across several Daphnes behind nginx.

The deployment of deploy/nginx/webshell.conf (``scripts.scale_stack``: N Daphnes, plain
round-robin), with PostgreSQL (a database of its own, ``bench_webshell_scale``), Redis as the
channel layer and kubesim. It opens ``--idle`` sessions that only show a prompt (1,000), then
``--typists`` sessions typing into ``cat`` at 5 keys/s each (300) beside them, all through
nginx, and reports:

- how nginx spread the sessions, and each Daphne's RSS: at the start, with the idle sessions
  (KiB per idle session it holds), and with every session open;
- keystroke round trips through nginx and a Daphne, p50 / p99, and the added latency (minus
  typists straight to kubesim in the same window, as ``bench.load`` defines it);
- CPU over the typing window: each Daphne, nginx, kubesim, PostgreSQL; CPU per keystroke.

Typists run in worker processes (``bench.crowd``); the idle sessions are held here, each read
by a task so that Daphne's pings are answered. Results go to bench/results/DATE-scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scripts.scale_stack import ScaleStack, find_nginx, scale_stack
from tests.fixtures.kubesim import KUBESIM_CONFIG, Kubesim, run_kubesim

from . import database
from .client import SessionFailed, Terminal, latency_summary, open_many, say
from .crowd import START_DELAY, Crowd, Target, workers_for
from .direct import Endpoint
from .load import KEY_INTERVAL, added, direct_typists
from .measures import WEB, _await_sessions_ended, in_thread
from .stack import (
    TROUBLE,
    cpu_seconds,
    descendants,
    listen_overflows,
    load_1min,
    postgres_backends_cpu,
    rss_kib,
)
from .suite import RESULTS, machine

PG_NAME = "bench_webshell_scale"
REDIS_URL = "redis://127.0.0.1:6379/0"
NGINX_TROUBLE = re.compile(r"\[(warn|error|crit|alert|emerg)\]")
TIMESTAMP = re.compile(r"^\S+ \S+ ")  # Django's "2026-11-26 16:58:30,033 ", nginx's "2026/11/26 …"
ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b\d+\b")
OPENING_AT_ONCE = 32  # idle sessions being opened at a time (the listen backlogs are 50 and 511)


def prepare_environment(redis_url: str, settings: str) -> dict[str, str]:
    """A fresh PostgreSQL database of its own, and what the Daphnes need."""
    import psycopg

    with psycopg.connect(
        host=database.PG_HOST,
        port=database.PG_PORT,
        user=database.PG_USER,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        # FORCE: a Daphne killed by an earlier run may have left connections behind.
        conn.execute(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_NAME}")
    env = {
        "DJANGO_SETTINGS_MODULE": settings,
        "DATABASE_URL": f"postgres://{database.PG_USER}@{database.PG_HOST}:"
        f"{database.PG_PORT}/{PG_NAME}",
        "WEBSHELL_TEST_DB_NAME": PG_NAME,
        "REDIS_URL": redis_url,
        # One user opens every session.
        "WEBSHELL_TEST_TERMINALS": json.dumps({"MAX_SESSIONS_PER_USER": 0}),
    }
    os.environ.update(env)
    return env


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


# Idle sessions ------------------------------------------------------------------------------


class IdleSession:
    """A terminal that has shown its prompt and a line, then only answers Daphne's pings."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self.failure: str | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, stack: ScaleStack, cookie: str) -> IdleSession:
        terminal = await Terminal.open(stack.ws_url, WEB, cookie)
        try:
            await terminal.run(say("BENCH-IDLE"), "BENCH-IDLE")
        except BaseException:
            await terminal.close()
            raise
        terminal.output.clear()
        return cls(terminal)

    async def _read(self) -> None:
        # aiohttp answers a ping only while someone receives; nothing else is expected.
        try:
            while True:
                await self.terminal.read_frame()
                self.terminal.output.clear()
        except SessionFailed as failure:
            self.failure = str(failure)

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.terminal.close()


# Process figures --------------------------------------------------------------------------------


def nginx_pids(stack: ScaleStack) -> list[int]:
    """nginx's master and its workers."""
    return [stack.nginx.pid, *descendants(stack.nginx.pid)]


def rss(stack: ScaleStack, kubesim: Kubesim) -> dict[str, int]:
    """RSS in KiB: each Daphne (by its number), nginx (master and workers), kubesim's server."""
    figures = {f"daphne{i + 1}": rss_kib(d.pid) for i, d in enumerate(stack.daphnes)}
    figures["nginx"] = sum(rss_kib(pid) for pid in nginx_pids(stack))
    figures["kubesim"] = rss_kib(kubesim.process.pid)
    return figures


class CpuWindow:
    """CPU seconds of each process between start() and stop()."""

    def __init__(self, stack: ScaleStack, kubesim: Kubesim) -> None:
        self.groups = {f"daphne{i + 1}": [d.pid] for i, d in enumerate(stack.daphnes)}
        self.groups["nginx"] = nginx_pids(stack)
        self.groups["kubesim"] = [kubesim.process.pid]

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.groups.items()}

    def start(self) -> None:
        self.began = self._now()
        self.backends = postgres_backends_cpu(PG_NAME)

    def stop(self) -> dict[str, float]:
        """CPU seconds per process since start(); PostgreSQL's backends of this database, each
        from the start or from its own start (one that ended meanwhile is missed)."""
        now = self._now()
        used = {name: now[name] - self.began[name] for name in now}
        backends = postgres_backends_cpu(PG_NAME)
        used["postgres"] = sum(cpu - self.backends.get(pid, 0.0) for pid, cpu in backends.items())
        return used


def trouble(stack: ScaleStack) -> dict[str, Any]:
    """Each Daphne's and nginx's log lines that look like warnings or errors: how many, and
    the most frequent kinds (the time and ids left out) with their counts."""

    def summary(lines: list[str]) -> dict[str, Any]:
        kinds = Counter(ID.sub("<id>", TIMESTAMP.sub("", line.rstrip())) for line in lines)
        return {"count": len(lines), "kinds": kinds.most_common(10)}

    figures = {
        f"daphne{i + 1}": summary([line for line in d.server.log if TROUBLE.search(line)])
        for i, d in enumerate(stack.daphnes)
    }
    figures["nginx"] = summary([line for line in stack.nginx_log if NGINX_TROUBLE.search(line)])
    return figures


def sessions_per_daphne(stack: ScaleStack, ids: list[str]) -> dict[str, int]:
    """How many of these sessions each Daphne holds, from their records (ORM: run in a thread)."""
    from django.db.models import Count

    from terminals.models import Session

    rows = Session.objects.filter(pk__in=ids).values("server__pid").annotate(count=Count("pk"))
    counts = {row["server__pid"]: row["count"] for row in rows}
    figures = {f"daphne{i + 1}": counts.pop(d.pid, 0) for i, d in enumerate(stack.daphnes)}
    if counts:
        figures["no server"] = sum(counts.values())
    return figures


# The run ----------------------------------------------------------------------------------------


async def run(
    stack: ScaleStack, kubesim: Kubesim, cookie: str, idle: int, typists: int, seconds: float
) -> dict[str, Any]:
    """Idle sessions, then typists beside them; every session closed and recorded as ended."""
    # Each Daphne's first session loads what every session needs; round-robin gives each one.
    warm = [await Terminal.open(stack.ws_url, WEB, cookie) for _ in stack.daphnes]
    for terminal in warm:
        await terminal.run(say("BENCH-WARM"), "BENCH-WARM")
        await terminal.close()
    result: dict[str, Any] = {"rss_start_kib": rss(stack, kubesim)}
    sessions: list[IdleSession] = []
    typist_ids: list[str] = []
    try:
        step(f"{idle} idle sessions")
        sessions, result["idle"] = await open_idle(stack, kubesim, cookie, idle)
        result["idle"]["kib_per_session"] = per_session(
            result["rss_start_kib"], result["idle"]["rss_kib"], result["idle"]["per_daphne"]
        )
        step(f"{typists} typists at {1 / KEY_INTERVAL:g} keys/s beside them, {seconds:g} s")
        result["typing"], result["rss_all_open_kib"], typist_ids = await type_beside(
            stack, kubesim, cookie, typists, seconds
        )
        result["idle"]["failed_meanwhile"] = [s.failure for s in sessions if s.failure][:5]
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    ids = [s.terminal.session_id for s in sessions] + typist_ids
    result["all_recorded_as_ended"] = await _await_sessions_ended(ids, 120)
    return result


async def open_idle(
    stack: ScaleStack, kubesim: Kubesim, cookie: str, count: int
) -> tuple[list[IdleSession], dict[str, Any]]:
    """``count`` idle sessions through nginx, a few at a time; they stay open."""
    overflows = listen_overflows()
    t0 = time.monotonic()
    sessions, failures, open_seconds = await open_many(
        lambda: IdleSession.open(stack, cookie), count, OPENING_AT_ONCE
    )
    ids = [s.terminal.session_id for s in sessions]
    return sessions, {
        "sessions": count,
        "opened": len(sessions),
        "failures": failures[:5],
        "open_all_seconds": round(time.monotonic() - t0, 1),
        "open_ms": latency_summary(open_seconds),
        "listen_overflows": listen_overflows() - overflows,
        "per_daphne": await in_thread(sessions_per_daphne, stack, ids),
        "rss_kib": rss(stack, kubesim),
    }


def per_session(
    before: dict[str, int], after: dict[str, int], held: dict[str, int]
) -> dict[str, float]:
    """KiB of RSS per idle session: a Daphne's over the sessions it holds, nginx's and
    kubesim's over all of them."""
    total = max(1, sum(held.values()))
    return {
        name: round((after[name] - before[name]) / (held.get(name) or total), 1)
        for name in after
        if held.get(name) or not name.startswith("daphne")
    }


async def type_beside(
    stack: ScaleStack, kubesim: Kubesim, cookie: str, typists: int, seconds: float
) -> tuple[dict[str, Any], dict[str, int], list[str]]:
    """``typists`` through nginx at 5 keys/s for ``seconds`` (and a few straight to kubesim);
    the window's figures, RSS with every session open, and the typists' session ids."""
    direct = direct_typists(typists)
    target = Target(stack.ws_url, WEB, cookie, Endpoint.of(kubesim))
    with Crowd(target, workers_for(typists + direct)) as crowd:
        ids: list[str] = []
        try:
            opened = await crowd.open(typists, direct)
            meter = CpuWindow(stack, kubesim)
            start_at = time.monotonic() + START_DELAY
            typing = crowd.type(start_at, seconds, KEY_INTERVAL)
            await asyncio.sleep(start_at - time.monotonic())
            meter.start()
            await asyncio.sleep(seconds)
            cpu = meter.stop()
            load = load_1min()
            window = await typing
            all_open = rss(stack, kubesim)
        finally:
            ids = await crowd.close()
    keys = window["web"]["echoed_per_s"] * seconds
    daphne_cpu = sum(used for name, used in cpu.items() if name.startswith("daphne"))
    return (
        {
            **window,
            "open": opened,
            "added_p50_ms": added(window, "p50"),
            "added_p99_ms": added(window, "p99"),
            "per_daphne": await in_thread(sessions_per_daphne, stack, ids),
            "cpu_percent": {name: round(100 * used / seconds, 1) for name, used in cpu.items()},
            # Over all Daphnes together: each carries about its share of the keys.
            "daphne_cpu_ms_per_keystroke": round(1000 * daphne_cpu / keys, 3) if keys else None,
            "load_1min": load,
        },
        all_open,
        ids,
    )


def render(result: dict[str, Any]) -> str:
    """Markdown tables for the README."""
    idle, typing = result["idle"], result["typing"]
    names = [n for n in result["rss_start_kib"] if n.startswith("daphne")]
    lines = [
        f"Scale: {result['processes']} Daphnes behind nginx, PostgreSQL, Redis "
        f"({result['date']}, {result['machine']['nproc']} cores, "
        f"load {result['load_average_before'][0]:.1f} before, "
        f"{typing['load_1min']:.1f} while typing"
        + ("" if result["settings"] == database.SETTINGS else f"; settings {result['settings']}")
        + ")",
        "",
        "| process | idle sessions held | typists held | RSS start MiB | with idle MiB "
        "| KiB per idle session | all open MiB | CPU % while typing |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in [*names, "nginx", "kubesim"]:
        lines.append(
            f"| {name} | {idle['per_daphne'].get(name, '')} | "
            f"{typing['per_daphne'].get(name, '')} | "
            f"{result['rss_start_kib'][name] / 1024:.0f} | {idle['rss_kib'][name] / 1024:.0f} | "
            f"{idle['kib_per_session'].get(name, '')} | "
            f"{result['rss_all_open_kib'][name] / 1024:.0f} | "
            f"{typing['cpu_percent'][name]} |"
        )
    web, bare = typing["web"], typing["direct"]
    lines += [
        f"| postgres (backends) | | | | | | | {typing['cpu_percent']['postgres']} |",
        "",
        "| keystrokes | typists | keys/s echoed | p50 ms | p99 ms | lost |",
        "|---|---|---|---|---|---|",
        f"| through nginx and a Daphne | {web['typists']} | {web['echoed_per_s']} "
        f"| {web['p50_ms']} | {web['p99_ms']} | {web['lost']} |",
        f"| straight to kubesim | {bare['typists']} | {bare['echoed_per_s']} "
        f"| {bare['p50_ms']} | {bare['p99_ms']} | {bare['lost']} |",
        f"| added by the web shell | | | {typing['added_p50_ms']} | {typing['added_p99_ms']} | |",
        "",
        f"Daphne CPU per keystroke: {typing['daphne_cpu_ms_per_keystroke']} ms. "
        f"Idle sessions opened: {idle['opened']}/{idle['sessions']} in "
        f"{idle['open_all_seconds']} s; failed meanwhile: {len(idle['failed_meanwhile'])}. "
        f"Bench client CPU % per worker: {typing['client']['cpu_percent_each']}. "
        f"Sessions recorded as ended after closing: {result['all_recorded_as_ended']}.",
        "Warning and error lines in the logs: "
        + ", ".join(f"{name} {log['count']}" for name, log in result["logs"].items())
        + ".",
    ]
    return "\n".join(lines)


def step(what: str) -> None:
    print(f"  … {what}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--processes", type=int, default=2, help="Daphne processes (2)")
    parser.add_argument("--idle", type=int, default=1000, help="idle sessions (1000)")
    parser.add_argument("--typists", type=int, default=300, help="typing sessions (300)")
    parser.add_argument("--seconds", type=float, default=30, help="typing window (30 s)")
    parser.add_argument(
        "--settings",
        default=database.SETTINGS,
        help=f"the Daphnes' settings module ({database.SETTINGS}): to try a setting",
    )
    args = parser.parse_args(argv)
    redis_url = os.environ.get("REDIS_URL") or REDIS_URL
    redis = urlsplit(redis_url)
    missing = [
        what
        for what, ok in [
            ("nginx (apt-get install nginx)", find_nginx() is not None),
            (
                f"PostgreSQL on {database.PG_HOST}:{database.PG_PORT}",
                reachable(database.PG_HOST, database.PG_PORT),
            ),
            (f"Redis at {redis_url}", reachable(redis.hostname or "", redis.port or 6379)),
        ]
        if not ok
    ]
    if missing:
        print("bench.scale needs " + ", ".join(missing), file=sys.stderr)
        return 1
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="webshell-bench-scale-"))
    try:
        env = prepare_environment(redis_url, args.settings)
        database.setup_django_and_migrate()
        cookie = database.make_user_cookie()
        result: dict[str, Any] = {
            "date": dt.date.today().isoformat(),
            "processes": args.processes,
            "settings": args.settings,
            "machine": machine(),
            "database": database.describe(),
            "load_average_before": os.getloadavg(),
        }
        print(f"scale: kubesim, {args.processes} Daphnes, nginx", file=sys.stderr, flush=True)
        with run_kubesim(KUBESIM_CONFIG, workdir / "kubesim", transcript=False) as kubesim:
            env["WEBSHELL_TEST_KUBECONFIG"] = str(kubesim.kubeconfig)
            with scale_stack(args.processes, env, directory=workdir / "stack") as stack:
                try:
                    result.update(
                        asyncio.run(
                            run(stack, kubesim, cookie, args.idle, args.typists, args.seconds)
                        )
                    )
                finally:
                    result["logs"] = trouble(stack)
        result["load_average_after"] = os.getloadavg()
        result["elapsed_seconds"] = round(time.monotonic() - began, 1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{result['date']}-scale.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    print(f"written: {path.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
