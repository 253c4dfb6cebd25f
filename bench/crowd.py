"""Many typing sessions, from several client processes with an event loop each.

One event loop that serves a few hundred typing sessions delays what it times: its own
queue shows up as latency. The crowd spreads its sessions over worker processes (spawned, so
that nothing of the parent's loop or Django comes along), tells them when to type, and merges
what they measured, with each worker's CPU and how late its keys went out: the figures that
say whether the client, rather than the server, was the limit.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .client import Typist, WebTypist, latency_summary, open_many
from .direct import DirectTypist, Endpoint

SESSIONS_PER_WORKER = 250  # typing sessions one client process carries (its loop stays idle)
# Sessions being opened at any time, over all workers: a crowd arriving, within Daphne's
# listen backlog (Twisted's default, 50) rather than a burst that overflows it.
OPENING_AT_ONCE = 32
DRAIN_TIMEOUT = 10.0  # seconds a window's last keys may take to come back
START_DELAY = 1.0  # seconds between telling the workers and the first key


@dataclass(frozen=True)
class Target:
    """Where the typists go: the web shell (browser WebSocket) and kubesim (bare exec)."""

    ws_url: str
    path: str
    cookie: str
    kubesim: Endpoint


def workers_for(sessions: int) -> int:
    return max(1, math.ceil(sessions / SESSIONS_PER_WORKER))


class Crowd:
    """Worker processes holding web and direct typists; ``with Crowd(...) as crowd:``.

    The workers are spawned: they import the caller's main module again, which must start
    nothing on import (``if __name__ == "__main__":``).
    """

    def __init__(self, target: Target, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.target = target
        self.pipes: list[Connection] = []
        self.processes = []
        for index in range(workers):
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker, args=(child, target, index), name=f"bench-crowd-{index}"
            )
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)
        self.web = [0] * workers  # sessions per worker
        self.direct = [0] * workers

    def __enter__(self) -> Crowd:
        return self

    def __exit__(self, *exc: object) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("exit", {}))
            except OSError:
                pass
        for process in self.processes:
            process.join(20)
            if process.is_alive():
                process.kill()
                process.join()

    @property
    def web_count(self) -> int:
        return sum(self.web)

    @property
    def direct_count(self) -> int:
        return sum(self.direct)

    async def _ask(self, commands: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        for pipe, command in zip(self.pipes, commands, strict=True):
            pipe.send(command)
        replies = await asyncio.gather(*(asyncio.to_thread(pipe.recv) for pipe in self.pipes))
        return list(replies)

    async def open(self, web: int, direct: int) -> dict[str, Any]:
        """Open ``web`` more web-shell typists and ``direct`` more direct ones, spread evenly."""
        adds_web, adds_direct = _spread(self.web, web), _spread(self.direct, direct)
        at_once = max(1, OPENING_AT_ONCE // len(self.pipes))
        t0 = time.monotonic()
        replies = await self._ask(
            [
                ("open", {"add_web": w, "add_direct": d, "at_once": at_once})
                for w, d in zip(adds_web, adds_direct, strict=True)
            ]
        )
        seconds = time.monotonic() - t0
        for i, reply in enumerate(replies):
            self.web[i] += reply["web_opened"]
            self.direct[i] += reply["direct_opened"]
        open_ms = sorted(ms for r in replies for ms in r["open_ms"])
        return {
            "web_opened": sum(r["web_opened"] for r in replies),
            "direct_opened": sum(r["direct_opened"] for r in replies),
            "failures": [f for r in replies for f in r["failures"]][:5],
            "seconds": round(seconds, 2),
            "open_ms_p50": open_ms[len(open_ms) // 2] if open_ms else None,
            "open_ms_max": open_ms[-1] if open_ms else None,
        }

    def type(
        self, start_at: float, seconds: float, interval: float, *, direct_only: bool = False
    ) -> asyncio.Task[Any]:
        """Every typist (or every direct one) types from ``start_at`` for ``seconds``; the task
        gives the merge."""
        command = (
            "type",
            {
                "start_at": start_at,
                "seconds": seconds,
                "interval": interval,
                "direct_only": direct_only,
            },
        )
        return asyncio.create_task(self._typed(command, seconds))

    async def _typed(self, command: tuple[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
        replies = await self._ask([command] * len(self.pipes))
        return merge_typing(replies, seconds)

    async def close(self) -> list[str]:
        """Close every typist; the web shell's session ids, for the audit store to settle.

        A worker that has died (its error is on stderr) answers nothing: none of its ids.
        """
        try:
            replies = await self._ask([("close", {})] * len(self.pipes))
        except (OSError, EOFError):
            replies = []
        self.web = [0] * len(self.pipes)
        self.direct = [0] * len(self.pipes)
        return [sid for r in replies for sid in r["session_ids"]]


def _spread(current: list[int], more: int) -> list[int]:
    """How many of ``more`` each worker gets so that the totals stay even."""
    totals = list(current)
    adds = [0] * len(current)
    for _ in range(more):
        i = totals.index(min(totals))
        totals[i] += 1
        adds[i] += 1
    return adds


def merge_typing(replies: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """One window's figures over all workers: latencies, rates, the client's own load."""
    out: dict[str, Any] = {"seconds": seconds}
    for kind in ("web", "direct"):
        latencies = [x for r in replies for x in r[kind]["latencies"]]
        lost = sum(r[kind]["lost"] for r in replies)
        out[kind] = {
            **latency_summary(latencies, lost),
            "typists": sum(r[kind]["typists"] for r in replies),
            "failed": sum(r[kind]["failed"] for r in replies),
            "sent_per_s": round(sum(r[kind]["sent"] for r in replies) / seconds, 1),
            "echoed_per_s": round(sum(r[kind]["echoed_in_window"] for r in replies) / seconds, 1),
            "unexpected_bytes": sum(r[kind]["unexpected"] for r in replies),
        }
    lateness = sorted(x for r in replies for x in r["lateness"])
    out["client"] = {
        "workers": len(replies),
        "cpu_percent_each": [r["cpu_percent"] for r in replies],
        "send_lateness_p99_ms": round(1000 * lateness[int(0.99 * (len(lateness) - 1))], 2)
        if lateness
        else None,
    }
    return out


# The worker process --------------------------------------------------------------------------


def _worker(pipe: Connection, target: Target, index: int) -> None:
    asyncio.run(_serve(pipe, target, random.Random(index)))


async def _serve(pipe: Connection, target: Target, rng: random.Random) -> None:
    web: list[WebTypist] = []
    direct: list[DirectTypist] = []
    while True:
        command, args = await asyncio.to_thread(pipe.recv)
        if command == "open":
            reply: dict[str, Any] = await _open(target, web, direct, **args)
        elif command == "type":
            reply = await _type(web, direct, rng, **args)
        elif command == "close":
            reply = {"session_ids": [t.session_id for t in web]}
            await asyncio.gather(*(t.close() for t in [*web, *direct]), return_exceptions=True)
            web.clear()
            direct.clear()
        else:  # exit
            await asyncio.gather(*(t.close() for t in [*web, *direct]), return_exceptions=True)
            return
        pipe.send(reply)


async def _open(
    target: Target, web: list[WebTypist], direct: list[DirectTypist], **args: int
) -> dict[str, Any]:
    at_once = args["at_once"]
    new_web, web_failures, web_s = await open_many(
        lambda: WebTypist.open(target.ws_url, target.path, target.cookie),
        args["add_web"],
        at_once,
    )
    new_direct, direct_failures, _ = await open_many(
        lambda: DirectTypist.open(target.kubesim), args["add_direct"], at_once
    )
    web += new_web
    direct += new_direct
    return {
        "web_opened": len(new_web),
        "direct_opened": len(new_direct),
        "failures": web_failures + direct_failures,
        "open_ms": [round(1000 * s, 1) for s in web_s],
    }


async def _type(
    web: list[WebTypist],
    direct: list[DirectTypist],
    rng: random.Random,
    start_at: float,
    seconds: float,
    interval: float,
    direct_only: bool,
) -> dict[str, Any]:
    if direct_only:
        web = []
    typists: list[Typist] = [*web, *direct]
    # Each typist starts at a random point of the interval: keys spread, not in lockstep.
    typing = [t.type_for(start_at, seconds, interval, rng.uniform(0, interval)) for t in typists]

    async def cpu_over_window() -> float:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        before = time.process_time()
        await asyncio.sleep(seconds)
        return round(100 * (time.process_time() - before) / seconds, 1)

    cpu, *_ = await asyncio.gather(cpu_over_window(), *typing)
    await asyncio.gather(*(t.drain(DRAIN_TIMEOUT) for t in typists))
    return {
        "web": _figures(web),
        "direct": _figures(direct),
        "lateness": [x for t in typists for x in t.clock.lateness],
        "cpu_percent": cpu,
    }


def _figures(typists: list[Any]) -> dict[str, Any]:
    return {
        "typists": len(typists),
        "failed": sum(1 for t in typists if t.failure),
        "latencies": [x for t in typists for x in t.clock.latencies],
        "lost": sum(t.clock.outstanding for t in typists),
        "sent": sum(t.clock.sent for t in typists),
        "echoed_in_window": sum(t.clock.echoed_in_window for t in typists),
        "unexpected": sum(t.clock.unexpected for t in typists),
    }
