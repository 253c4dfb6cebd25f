"""Command extraction under attack: ``python -m bench.commands [--db sqlite|postgres] [--quick]``.

Three measurements through the real stack (kubesim, a real Daphne, bash in a PTY):

1. **Keystrokes next to a hostile session.** One session's 1-byte round trips into ``cat`` on
   a raw TTY (as in ``bench.measures.keystrokes``), first alone, then while another session
   of a 1000x1000 terminal sends an Enter every ``ENTER_INTERVAL`` seconds: (a) at an idle
   prompt, (b) while its shell prints base64 lines without end (so that every Enter finds
   pyte work waiting); and, as controls, (c) the same Enters from an 80x24 terminal, which
   is what any fast typist costs the others (audit commits, Daphne's framing), and (d) the
   same as (b) from an 80x24 terminal, which is what the endless output itself costs them.
2. **A paste of many lines in one frame:** the command rows it leaves.
3. **The admin's session page** of a session with 4,000 and 32,000 commands: time to answer
   (in this process, through Django's test client, on the same database) and SQL queries.
4. **Output nobody reads a line from**: Daphne's CPU per MiB while a cooked terminal prints a
   file of lines after one Enter (the whole server's cost: the screen's share is in 6).
5. **Index precision through the stack**: commands typed key by key (each echo awaited) or
   in one frame, each followed by a burst of output; the share the index records exactly.
6. **The screen work in process** (``bench.screen``): CPU per MiB of output without an Enter,
   what an Enter and a snapshot cost after a burst, and the index's precision under the budget.

The figures go to ``bench/results/<date>-commands-<db>.json`` and are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from . import database, screen
from .client import SessionFailed, Terminal, say
from .measures import MIB, RAW, WEB, await_sessions_ended, in_thread, median, percentile
from .stack import CpuMeter, Stack, run_stack
from .suite import RESULTS, machine

ENTER_INTERVAL = 0.01  # the hostile session's rhythm: 100 Enters a second
HOSTILE_SIZE = (1000, 1000)  # the largest size the protocol accepts
VARIANTS = [  # name, whether its shell prints without end, its size
    ("hostile_enters", False, HOSTILE_SIZE),
    ("hostile_enters_amid_output", True, HOSTILE_SIZE),
    ("control_enters_80x24", False, (80, 24)),
    # The same as the second from a terminal of ordinary size: what the output costs the
    # others, which is not the hostile size's doing (issue 10's stream beside typists).
    ("control_enters_amid_output_80x24", True, (80, 24)),
]
PASTE_LINES = 32000  # "#\r" each: 64,000 bytes, under MAX_FRAME_SIZE
PAGE_SIZES = (4000, 32000)
PAGE_GIVE_UP = 60.0  # seconds: a larger page is not tried if it would take longer (quadratic)
LINES_MIB = 32  # the file of lines printed for Daphne's CPU per MiB
CPU_ROUNDS = 3
PRECISION_BURSTS = (0, 256 * 1024, 4 * MIB)  # output after each command
PRECISION_COMMANDS = 10  # per burst size and way of typing


async def keystroke_times(terminal: Terminal, count: int, warmup: int = 20) -> list[float]:
    """Sequential 1-byte round trips into ``cat`` (already running raw); ms, sorted."""
    times: list[float] = []
    async with asyncio.timeout(60 + count * 2):
        for i in range(warmup + count):
            key = bytes([97 + i % 26])
            t0 = time.perf_counter()
            await terminal.type(key)
            while (await terminal.read_frame()) != key:
                pass
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times


def summary(times: list[float]) -> dict[str, Any]:
    return {
        "count": len(times),
        "p50_ms": round(percentile(times, 50), 2),
        "p90_ms": round(percentile(times, 90), 2),
        "p99_ms": round(percentile(times, 99), 2),
        "max_ms": round(times[-1], 2) if times else None,
    }


class Hostile:
    """A session of a 1000x1000 terminal that sends Enters at a fixed rhythm and reads all."""

    def __init__(self, terminal: Terminal, size: tuple[int, int] = HOSTILE_SIZE) -> None:
        self.terminal = terminal
        self.size = size
        self.enters = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, printing: bool, data: Path) -> None:
        await self.terminal.send_json(
            {"type": "resize", "cols": self.size[0], "rows": self.size[1]}
        )
        await self.terminal.run(say("HOSTILE-READY"), "HOSTILE-READY")
        if printing:
            await self.terminal.type(f"while :; do cat {data}; done\r")
        self.tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._enter())]

    async def _read(self) -> None:
        with contextlib.suppress(SessionFailed):
            while True:
                await self.terminal.read_frame()
                if len(self.terminal.output) > 1 << 20:
                    del self.terminal.output[:-4096]

    async def _enter(self) -> None:
        while True:
            await self.terminal.type(b"\r")
            self.enters += 1
            await asyncio.sleep(ENTER_INTERVAL)  # the attack's rhythm

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.terminal.close()


async def keystrokes_next_to_hostile(stack: Stack, count: int, data: Path) -> dict[str, Any]:
    """Round trips alone, next to Enters at a prompt, next to Enters amid output."""
    victim = await Terminal.open(stack.daphne.ws_url, WEB, stack.cookie)
    results: dict[str, Any] = {}
    try:
        await victim.run(f"{RAW}; {say('VICTIM-READY')}; cat", "VICTIM-READY")
        results["alone"] = summary(await keystroke_times(victim, count))
        for name, printing, size in VARIANTS:
            hostile = Hostile(await Terminal.open(stack.daphne.ws_url, WEB, stack.cookie), size)
            try:
                await hostile.start(printing, data)
                await asyncio.sleep(1.0)  # let the attack reach its steady state
                t0 = time.perf_counter()
                times = await keystroke_times(victim, count, warmup=0)
                seconds = time.perf_counter() - t0
                results[name] = {
                    **summary(times),
                    "hostile_enters_per_s": round(hostile.enters / (seconds + 1.0), 1),
                }
            finally:
                await hostile.stop()
            results["alone_after_" + name] = summary(await keystroke_times(victim, count))
    finally:
        await victim.close()
    for name, _printing, _size in VARIANTS:
        for p in ("p50", "p90", "p99"):
            ratio = results[name][f"{p}_ms"] / results["alone"][f"{p}_ms"]
            results[name][f"{p}_vs_alone"] = round(ratio, 2)
    return results


async def paste_rows(stack: Stack) -> dict[str, Any]:
    """One frame of ``PASTE_LINES`` lines; the command rows the session holds afterwards."""
    terminal = await Terminal.open(stack.daphne.ws_url, WEB, stack.cookie)
    try:
        await terminal.run(say("PASTE-READY"), "PASTE-READY")
        t0 = time.perf_counter()
        await terminal.type(b"#\r" * PASTE_LINES)
        await terminal.run(say("PASTE-DONE"), "PASTE-DONE", timeout=300)
        seconds = time.perf_counter() - t0
    finally:
        await terminal.close()
    session_id = terminal.session_id

    def rows() -> int:
        from terminals.models import Command

        return Command.objects.filter(session_id=session_id).count()

    await asyncio.sleep(1.0)  # the last commit of the closed session
    return {"lines": PASTE_LINES, "command_rows": await in_thread(rows), "seconds": seconds}


def admin_page(commands: int) -> dict[str, Any]:
    """Time and queries of the admin's page of a session with ``commands`` commands."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from terminals.models import Command, Session

    session = Session.objects.create(
        username="bench", cluster="kubesim", namespace="default", pod="web",
        command=["/bin/bash"], ended_at=timezone.now(), end_reason="exit", exit_code=0,
    )  # fmt: skip
    Command.objects.bulk_create(
        (
            Command(session=session, offset_us=n * 1000, line=f"$ echo {n}", text=f"echo {n}")
            for n in range(commands)
        ),
        batch_size=2000,
    )
    User = get_user_model()
    admin = User.objects.filter(username="bench-admin").first()
    if admin is None:
        admin = User.objects.create_superuser("bench-admin", password=uuid.uuid4().hex)
    client = Client()
    client.force_login(admin)
    url = f"/admin/terminals/session/{session.pk}/change/"
    client.get(url)  # warm: templates, the admin's registry
    t0 = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    seconds = time.perf_counter() - t0
    return {
        "commands": commands,
        "status": response.status_code,
        "seconds": round(seconds, 3),
        "queries": len(queries.captured_queries),
        "bytes": len(response.content),
    }


async def output_cpu(stack: Stack, lines: Path, rounds: int = CPU_ROUNDS) -> dict[str, Any]:
    """Daphne's CPU per MiB while a cooked terminal prints ``lines`` after one Enter."""
    size = await asyncio.to_thread(lambda: lines.stat().st_size)
    terminal = await Terminal.open(stack.daphne.ws_url, WEB, stack.cookie)
    per_mib: list[float] = []
    try:
        await terminal.run(say("CPU-READY"), "CPU-READY")
        for _ in range(rounds):
            meter = CpuMeter(stack, None)
            meter.start()
            t0 = time.perf_counter()
            stream = await terminal.stream(f"cat {lines}", "true", timeout=300)
            percent = meter.stop(time.perf_counter() - t0)["daphne"]
            seconds = percent / 100 * (time.perf_counter() - t0)
            per_mib.append(seconds * 1000 / (stream.total / MIB))
    finally:
        await terminal.close()
    return {
        "mib": round(size / MIB, 1),
        "daphne_cpu_ms_per_mib": round(median(per_mib), 2),
        "range": [round(min(per_mib), 2), round(max(per_mib), 2)],
    }


async def type_keys(terminal: Terminal, text: str) -> None:
    """Type ``text`` a key at a time, each after the echo of the one before (as a person)."""
    for char in text:
        await terminal.type(char)
        async with asyncio.timeout(10):
            await terminal.read_frame()


async def index_precision(stack: Stack, lines: Path) -> dict[str, Any]:
    """Commands after bursts of output: how many the index records exactly."""
    results: dict[str, Any] = {}
    for keys in (True, False):
        terminal = await Terminal.open(stack.daphne.ws_url, WEB, stack.cookie)
        wanted: dict[int, list[str]] = {burst: [] for burst in PRECISION_BURSTS}
        try:
            await terminal.run(say("PRECISION-READY"), "PRECISION-READY")
            for burst in PRECISION_BURSTS:
                for n in range(PRECISION_COMMANDS):
                    marker = f"P-{burst}-{n}-DONE"
                    line = f"head -c {burst} {lines}; {say(marker)}"
                    wanted[burst].append(line)
                    start = len(terminal.output)
                    if keys:
                        await type_keys(terminal, line)
                        await terminal.type("\r")
                    else:
                        await terminal.type(line + "\r")
                    await terminal.until_output(marker.encode(), start, timeout=60)
                    del terminal.output[:-4096]
        finally:
            await terminal.close()
        session_id = terminal.session_id

        def rows(session_id: str = session_id) -> list[tuple[str, str, bool, bool]]:
            from terminals.models import Command

            return list(
                Command.objects.filter(session_id=session_id).values_list(
                    "text", "typed", "echoed", "mismatch"
                )
            )

        # Its last rows go with its last commit, before its record ends.
        await await_sessions_ended([session_id], timeout=60)
        found = await in_thread(rows)
        typed = "keys" if keys else "pasted"
        # Lines the session ended before indexing (its last, if the index was behind).
        unindexed = [re.search(r": (\d+) line", text) for text, *_ in found if text.startswith("[")]
        results[f"{typed}_not_indexed_at_the_end"] = sum(int(m[1]) for m in unindexed if m)
        for burst, commands in wanted.items():
            mine = [row for row in found if row[1] in commands]
            results[f"{typed}_then_{burst // 1024}_kib"] = {
                "commands": len(commands),
                "exact": sum(
                    text == line and echoed and not mismatch
                    for line in commands
                    for text, typed_line, echoed, mismatch in mine
                    if typed_line == line
                ),
                "marked": sum(mismatch or not echoed for _t, _l, echoed, mismatch in mine),
                "missing": len(set(commands) - {row[1] for row in mine}),
            }
    return results


async def run_all(stack: Stack, count: int, data: Path, lines: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    step("Daphne's CPU per MiB of output without an Enter")
    results["output_cpu"] = await output_cpu(stack, lines)
    step(json.dumps(results["output_cpu"]))
    step("index precision after bursts of output")
    results["precision"] = await index_precision(stack, lines)
    step(json.dumps(results["precision"]))
    step("keystrokes next to a hostile session")
    results["keystrokes"] = await keystrokes_next_to_hostile(stack, count, data)
    step(json.dumps(results["keystrokes"]))
    step("a paste of many lines")
    results["paste"] = await paste_rows(stack)
    step(json.dumps(results["paste"]))
    results["admin_page"] = []
    previous: dict[str, Any] | None = None
    for commands in PAGE_SIZES:
        if previous is not None:
            # A page quadratic in its commands would take this long: not worth waiting for.
            expected = previous["seconds"] * (commands / previous["commands"]) ** 2
            if expected > PAGE_GIVE_UP:
                results["admin_page"].append(
                    {"commands": commands, "skipped": f"about {expected:.0f} s if quadratic"}
                )
                continue
        step(f"the admin page of {commands} commands")
        previous = await in_thread(admin_page, commands)
        results["admin_page"].append(previous)
        step(json.dumps(previous))
    step("the screen work in process")
    results["screen"] = await screen.run_all()
    return results


def render(result: dict[str, Any]) -> str:
    lines = [f"Command extraction under attack ({result['db']}, {result['date']})"]
    for name, figures in result["keystrokes"].items():
        extra = ""
        if "p50_vs_alone" in figures:
            extra = (
                f", x{figures['p50_vs_alone']} / x{figures['p90_vs_alone']} / "
                f"x{figures['p99_vs_alone']} of alone"
            )
        lines.append(
            f"  keystrokes {name}: p50 {figures['p50_ms']} / p90 {figures['p90_ms']} / "
            f"p99 {figures['p99_ms']} / max {figures['max_ms']} ms{extra}"
        )
    paste = result["paste"]
    lines.append(f"  paste of {paste['lines']} lines: {paste['command_rows']} command rows")
    for page in result["admin_page"]:
        if "skipped" in page:
            lines.append(f"  admin page, {page['commands']} commands: skipped, {page['skipped']}")
            continue
        lines.append(
            f"  admin page, {page['commands']} commands: {page['seconds']} s, "
            f"{page['queries']} queries, {page['bytes']} bytes"
        )
    cpu = result["output_cpu"]
    lines.append(
        f"  Daphne's CPU printing {cpu['mib']} MiB of lines without an Enter: "
        f"{cpu['daphne_cpu_ms_per_mib']} ms per MiB (range {cpu['range'][0]}-{cpu['range'][1]})"
    )
    for name, figures in result["precision"].items():
        if not isinstance(figures, dict):
            lines.append(f"  precision through the stack, {name}: {figures}")
            continue
        lines.append(
            f"  precision through the stack, {name}: {figures['exact']}/{figures['commands']} "
            f"exact, {figures['marked']} marked, {figures['missing']} missing"
        )
    lines += screen.render(result["screen"])
    return "\n".join(lines)


def step(what: str) -> None:
    print(f"  … {what}", file=sys.stderr, flush=True)


def write_lines(path: Path, size: int) -> Path:
    """Text the hostile shell prints: base64 lines of 76 characters."""
    import base64

    with path.open("wb") as out:
        out.write(base64.encodebytes(os.urandom(size * 3 // 4)))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.commands", description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help="fewer keystrokes")
    parser.add_argument("--label", default="", help="appended to the result's file name")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix=f"webshell-bench-commands-{args.db}-"))
    try:
        env = database.prepare_environment(args.db, workdir)
        database.setup_django_and_migrate()
        cookie = database.make_user_cookie()
        data = write_lines(workdir / "lines.txt", 128 * 1024)
        lines = write_lines(workdir / "many-lines.txt", LINES_MIB * MIB)
        result: dict[str, Any] = {
            "date": dt.date.today().isoformat(),
            "db": args.db,
            "label": args.label,
            "machine": machine(),
            "load_average_before": os.getloadavg(),
        }
        print(f"{args.db}: kubesim, Daphne and the measurements", file=sys.stderr, flush=True)
        with run_stack(env, workdir, cookie) as stack:
            count = 100 if args.quick else 500
            result.update(asyncio.run(run_all(stack, count, data, lines)))
            result["daphne_trouble"] = stack.trouble()[:20]
        result["load_average_after"] = os.getloadavg()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    label = f"-{args.label}" if args.label else ""
    path = RESULTS / f"{result['date']}-commands-{args.db}{label}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
