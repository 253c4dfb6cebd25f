"""A lean browser-protocol client for measuring: it acks like the page and finds markers.

Unlike ``tests.fixtures.terminal_client`` it notes when each marker arrived and can read one
output frame at a time (for keystroke round trips). Every wait has a deadline.

For load, :class:`WebTypist` types into ``cat`` on a raw TTY at a steady rate and times each
echo (:class:`EchoClock`); ``bench.direct`` has the same typist straight to kubesim, and
``bench.crowd`` runs many of either from several processes. :class:`MarkerTimer` times output
between two markers the same way for every path (the web shell, kubectl, a bare exec client).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from tests.fixtures.terminal_client import say

__all__ = [
    "EchoClock",
    "MarkerTimer",
    "SessionFailed",
    "Stream",
    "Terminal",
    "Typist",
    "WebTypist",
    "latency_summary",
    "open_many",
    "say",
]

ACK_EVERY = 64 * 1024  # as the page does
BEGIN, END = b"BENCH-BEGIN", b"BENCH-END"
# Raw mode: output bytes pass the PTY unchanged (no \n -> \r\n), input is not echoed.
RAW = "stty raw -echo"
# A typist's keys; cat on a raw TTY writes each back once, in order.
KEYS = b"abcdefghijklmnopqrstuvwxyz"
T = TypeVar("T")


class SessionFailed(Exception):
    """The server closed the session, or a wait ran out of time."""


@dataclass(frozen=True)
class Stream:
    """Output between two markers."""

    total: int  # bytes between the markers
    timed: int  # bytes after the frame that held the first marker, when the clock started
    started: float  # perf_counter() when the clock started
    ended: float  # and when the second marker arrived

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def mib_per_s(self) -> float:
        return self.timed / self.seconds / 2**20 if self.seconds > 0 else 0.0


class MarkerTimer:
    """Times the output between a ``BENCH-BEGIN`` line and ``BENCH-END``, fed chunk by chunk.

    The clock starts when the chunk holding the first marker's line end arrives; bytes after
    that chunk are the timed ones (so a client's chunking shifts the figure by one chunk at
    most). The body is everything after that line end up to ``BENCH-END``, on a raw TTY
    ("\\n") or a cooked one ("\\r\\n") alike. Only a marker's length of output is kept.
    """

    def __init__(self) -> None:
        self._head = bytearray()  # output before the first marker's line end
        self._tail = b""  # the last bytes of the body, for a marker split across chunks
        self.total = 0
        self.timed = 0
        self.started: float | None = None
        self.ended: float | None = None

    def feed(self, chunk: bytes, now: float) -> bool:
        """Take the next chunk of output, arrived at ``now``; True once the end marker is in."""
        if self.ended is not None:
            return True
        if self.started is None:
            self._head += chunk
            at = self._head.find(BEGIN)
            line_end = self._head.find(b"\n", at + len(BEGIN)) if at >= 0 else -1
            if line_end < 0:
                if at < 0:  # keep only what may be the start of a split marker
                    del self._head[: max(0, len(self._head) - len(BEGIN))]
                return False
            self.started = now
            rest = bytes(self._head[line_end + 1 :])
            self._head = bytearray()
            self._body(rest, now, timed=False)
        else:
            self._body(chunk, now, timed=True)
        return self.ended is not None

    def _body(self, data: bytes, now: float, timed: bool) -> None:
        keep = len(END) - 1
        # A marker split across chunks starts in the tail: look at the seam first. Nothing is
        # copied but the seam: chunks of a stream are up to a MiB each.
        seam = (self._tail + data[:keep]).find(END) if self._tail else -1
        at = seam - len(self._tail) if seam >= 0 else data.find(END)
        found = seam >= 0 or at >= 0
        # Bytes of ``data`` before the marker; negative when the marker began in the tail,
        # whose bytes were counted already.
        count = at if found else len(data)
        self.total += count
        if timed:
            self.timed += count
        if found:
            self.ended = now
        else:
            self._tail = (self._tail + data)[-keep:] if len(data) < keep else data[-keep:]

    def stream(self) -> Stream:
        """The result, once :meth:`feed` has returned True."""
        if self.started is None or self.ended is None:
            raise SessionFailed("the output markers never both arrived")
        return Stream(self.total, max(0, self.timed), self.started, self.ended)


@dataclass
class Terminal:
    """One browser WebSocket to a terminal."""

    ws: aiohttp.ClientWebSocketResponse
    http: aiohttp.ClientSession
    output: bytearray = field(default_factory=bytearray)
    messages: list[dict[str, Any]] = field(default_factory=list)
    unacked: int = 0
    close_code: int | None = None

    @classmethod
    async def open(cls, ws_url: str, path: str, cookie: str, timeout: float = 30) -> Terminal:
        """Connect as the page does (cookie, Origin, size first) and wait for ``ready``."""
        http = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(timeout):
                ws = await http.ws_connect(
                    ws_url + path,
                    headers={
                        "Origin": ws_url.replace("ws://", "http://"),
                        "Cookie": f"sessionid={cookie}",
                    },
                    max_msg_size=0,
                )
                terminal = cls(ws, http)
                await terminal.send_json({"type": "resize", "cols": 120, "rows": 40})
                await terminal.until_message("ready")
        except BaseException:
            await http.close()
            raise
        return terminal

    @property
    def session_id(self) -> str:
        """The audit session id from ``ready``."""
        return str(next(m["session"] for m in self.messages if m.get("type") == "ready"))

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def type(self, data: bytes | str) -> None:
        """Stdin as a binary frame, as the page sends it."""
        await self.ws.send_bytes(data.encode() if isinstance(data, str) else data)

    async def read_frame(self) -> bytes:
        """The next output frame (text messages are kept aside); acks like the page."""
        while True:
            message = await self.ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                data: bytes = message.data
                self.output += data
                self.unacked += len(data)
                if self.unacked >= ACK_EVERY:
                    await self.send_json({"type": "ack", "bytes": self.unacked})
                    self.unacked = 0
                return data
            if message.type is aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(message.data))
                continue
            self.close_code = self.ws.close_code
            raise SessionFailed(
                f"closed with {self.close_code} ({self.messages[-1:]}) after "
                f"{len(self.output)} bytes"
            )

    async def until_output(self, marker: bytes, start: int = 0, timeout: float = 30) -> int:
        """Read until ``marker`` appears after ``start``; return the offset just past it."""
        try:
            async with asyncio.timeout(timeout):
                searched = start
                while (found := self.output.find(marker, searched)) < 0:
                    # Search only what is new, with an overlap for a marker split across frames.
                    searched = max(start, len(self.output) - len(marker) + 1)
                    await self.read_frame()
        except TimeoutError:
            raise SessionFailed(
                f"no {marker!r} within {timeout} s ({len(self.output)} bytes so far)"
            ) from None
        return found + len(marker)

    async def until_message(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        """Read until a JSON message of type ``kind`` has arrived."""
        async with asyncio.timeout(timeout):
            while True:
                for message in self.messages:
                    if message.get("type") == kind:
                        return message
                await self.read_frame()

    async def run(self, command: str, marker: str, timeout: float = 30) -> None:
        """Type a command line that ends by printing ``marker`` (via :func:`say`); wait for it."""
        start = len(self.output)
        await self.type(command + "\r")
        # No newline in the needle: it is "\r\n" on a cooked TTY and "\n" on a raw one.
        await self.until_output(marker.encode(), start, timeout)

    async def stream(self, command: str, setup: str, timeout: float) -> Stream:
        """Run ``command`` between two markers and time the output between them.

        ``setup`` runs first (e.g. ``stty raw -echo``); ``stty sane`` restores the TTY after.
        """
        line = f"{setup}; {say(BEGIN.decode())}; {command}; {say(END.decode())}; stty sane\r"
        timer = MarkerTimer()
        await self.type(line)
        try:
            async with asyncio.timeout(timeout):
                while not timer.feed(await self.read_frame(), time.perf_counter()):
                    # Keep only a tail: a 64 MiB body need not stay in memory once counted.
                    if len(self.output) > 2 * ACK_EVERY:
                        del self.output[: len(self.output) - 4096]
        except TimeoutError:
            raise SessionFailed(
                f"no end of output within {timeout} s ({timer.total} bytes so far)"
            ) from None
        del self.output[: max(0, len(self.output) - 4096)]
        return timer.stream()

    async def close(self) -> None:
        """Close the WebSocket (the server records "browser closed") and the HTTP session."""
        try:
            async with asyncio.timeout(10):
                await self.ws.close()
        finally:
            await self.http.close()


# Typing ---------------------------------------------------------------------------------------


class EchoClock:
    """Keystrokes typed and not yet echoed, oldest first; each echoed byte answers the oldest.

    ``cat`` on a raw TTY writes back every byte once and in order, so the n-th byte back is the
    echo of the n-th byte typed, however the frames group them. Times are ``time.monotonic()``
    (one clock for every process of the machine).
    """

    def __init__(self, window_end: float = math.inf, stale: int = 0) -> None:
        self.window_end = window_end  # echoes up to here count as achieved within the window
        self.stale = stale  # echoes still owed to an earlier clock: they are skipped
        self.pending: deque[float] = deque()
        self.latencies: list[float] = []  # seconds, in the order the echoes arrived
        self.lateness: list[float] = []  # seconds each key went out after its schedule
        self.sent = 0
        self.echoed_in_window = 0
        self.unexpected = 0  # bytes that answered no keystroke

    def typed(self, when: float, due: float | None = None) -> None:
        """A key went out at ``when`` (scheduled for ``due``)."""
        self.pending.append(when)
        self.sent += 1
        if due is not None:
            self.lateness.append(max(0.0, when - due))

    def echoed(self, count: int, when: float) -> None:
        """``count`` bytes came back at ``when``."""
        skipped = min(count, self.stale)
        self.stale -= skipped
        for _ in range(count - skipped):
            if not self.pending:
                self.unexpected += 1
                continue
            self.latencies.append(when - self.pending.popleft())
            if when <= self.window_end:
                self.echoed_in_window += 1

    @property
    def outstanding(self) -> int:
        """Keys typed and not yet echoed."""
        return len(self.pending)


class Typist:
    """A session that types into ``cat`` on a raw TTY at a steady rate and times the echoes.

    Subclasses say how to send a key and read output; :meth:`start` runs the reader, each
    :meth:`type_for` is one window with a fresh :class:`EchoClock`.
    """

    def __init__(self) -> None:
        self.clock = EchoClock()
        self.failure: str | None = None  # why the reader stopped, if it did
        self._reader: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()

    async def send(self, key: bytes) -> None:
        """Type one key."""
        raise NotImplementedError

    async def receive(self) -> bytes:
        """The next chunk of output (raises when the session is over)."""
        raise NotImplementedError

    async def shut(self) -> None:
        """Close the connection."""
        raise NotImplementedError

    def start(self) -> None:
        """Start reading echoes (after the warm-up key came back)."""
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                data = await self.receive()
                self.clock.echoed(len(data), time.monotonic())
                if not self.clock.outstanding:
                    self._drained.set()
        except Exception as exc:  # the session ended: the typist says so, the crowd goes on
            self.failure = repr(exc)
            self._drained.set()

    async def type_for(
        self, start_at: float, seconds: float, interval: float, phase: float
    ) -> None:
        """Type one key every ``interval`` s from ``start_at + phase`` until ``seconds`` are over.

        Open loop, as a person types: a key goes out on time whether or not the last one has
        come back, so a slow server meets the keys that queue behind it.
        """
        end = start_at + seconds
        self.clock = EchoClock(end, stale=self.clock.outstanding + self.clock.stale)
        k = 0
        while (due := start_at + phase + k * interval) < end and self.failure is None:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._drained.clear()
            self.clock.typed(time.monotonic(), due)
            try:
                await self.send(KEYS[k % len(KEYS) : k % len(KEYS) + 1])
            except Exception as exc:  # the session is gone: its keys stay unanswered
                self.failure = self.failure or repr(exc)
            k += 1

    async def drain(self, timeout: float) -> bool:
        """Wait until every key typed has come back; False if some had not within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await self._drained.wait()
        except TimeoutError:
            return False
        return not self.clock.outstanding

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.shut()


class WebTypist(Typist):
    """A typist through the web shell: a browser WebSocket to ``cat`` in the pod's bash."""

    def __init__(self, terminal: Terminal) -> None:
        super().__init__()
        self.terminal = terminal

    @classmethod
    async def open(cls, ws_url: str, path: str, cookie: str, timeout: float = 30) -> WebTypist:
        """Open a terminal, start ``cat`` on a raw TTY, and see one key come back."""
        terminal = await Terminal.open(ws_url, path, cookie, timeout)
        try:
            await terminal.run(f"{RAW}; {say('BENCH-READY')}; cat", "BENCH-READY", timeout)
            # The first key also waits for cat to start: it is not one of those timed.
            start = len(terminal.output)
            await terminal.type(b"!")
            await terminal.until_output(b"!", start, timeout)
        except BaseException:
            await terminal.close()
            raise
        typist = cls(terminal)
        typist.start()
        return typist

    @property
    def session_id(self) -> str:
        return self.terminal.session_id

    async def send(self, key: bytes) -> None:
        await self.terminal.type(key)

    async def receive(self) -> bytes:
        data = await self.terminal.read_frame()
        self.terminal.output.clear()  # counted, not kept
        return data

    async def shut(self) -> None:
        await self.terminal.close()


def latency_summary(seconds: Sequence[float], lost: int = 0) -> dict[str, Any]:
    """p50 / p90 / p99 / max in ms; keys never echoed count as slower than any that were.

    A percentile that falls among the lost ones is ``None``.
    """
    values = sorted(seconds)
    count = len(values) + lost

    def at(p: float) -> float | None:
        if not count:
            return None
        rank = max(0, min(count - 1, math.ceil(p / 100 * count) - 1))
        return round(1000 * values[rank], 3) if rank < len(values) else None

    return {
        "count": count,
        "lost": lost,
        "p50_ms": at(50),
        "p90_ms": at(90),
        "p99_ms": at(99),
        "max_ms": at(100),
    }


async def open_many(
    opener: Callable[[], Awaitable[T]], count: int, at_once: int
) -> tuple[list[T], list[str], list[float]]:
    """Open ``count`` sessions, at most ``at_once`` at a time (a crowd arriving, not a burst
    that overflows the listen backlog); returns them, the failures, and each opening's seconds.
    """
    gate = asyncio.Semaphore(at_once)

    async def one() -> tuple[T, float]:
        async with gate:
            t0 = time.monotonic()
            return await opener(), time.monotonic() - t0

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    opened = [r[0] for r in results if isinstance(r, tuple)]
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    return opened, failures, [r[1] for r in results if isinstance(r, tuple)]
