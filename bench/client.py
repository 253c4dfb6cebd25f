"""A lean browser-protocol client for measuring: it acks like the page and finds markers.

Unlike ``tests.fixtures.terminal_client`` it notes when each marker arrived and can read one
output frame at a time (for keystroke round trips). Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.fixtures.terminal_client import say

__all__ = ["SessionFailed", "Stream", "Terminal", "say"]

ACK_EVERY = 64 * 1024  # as the page does


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
        begin, end = b"BENCH-BEGIN\n", b"BENCH-END\n"
        start = len(self.output)
        line = f"{setup}; {say('BENCH-BEGIN')}; {command}; {say('BENCH-END')}; stty sane\r"
        await self.type(line)
        body_start = await self.until_output(begin, start, timeout)
        t0 = time.perf_counter()
        # The clock starts when the frame with the first marker arrived: count from its end.
        counted_from = len(self.output)
        body_end = await self.until_output(end, body_start, timeout) - len(end)
        elapsed = time.perf_counter() - t0
        # Keep only a tail: a 64 MiB body need not stay in memory once counted.
        del self.output[: len(self.output) - 4096]
        return Stream(body_end - body_start, max(0, body_end - counted_from), t0, t0 + elapsed)

    async def close(self) -> None:
        """Close the WebSocket (the server records "browser closed") and the HTTP session."""
        try:
            async with asyncio.timeout(10):
                await self.ws.close()
        finally:
            await self.http.close()
