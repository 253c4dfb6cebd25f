"""The baseline without the web shell: a bare aiohttp client of kubesim's exec WebSocket.

It speaks the v5 channel protocol as kubectl does (the size first, stdin on channel 0,
output on channel 1), with its own TLS connection per exec as the web shell's upstream has.
Round trips and output through it are what the web shell's figures are set against.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.fixtures.kubesim import exec_path

from .client import RAW, MarkerTimer, Stream, Typist, latency_summary, say

POD = "web"
USER = "webshell"  # the web shell's own identity in kubesim
SIZE = b"\x04" + json.dumps({"Width": 120, "Height": 40}).encode()


@dataclass(frozen=True)
class Endpoint:
    """What a client needs to reach kubesim (picklable: crowd workers get it)."""

    url: str
    ca_file: str
    token: str

    @classmethod
    def of(cls, kubesim: Any) -> Endpoint:
        return cls(kubesim.url, str(kubesim.ca_file()), kubesim.tokens[USER])


class Exec:
    """One exec WebSocket to the pod, with a TTY."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws

    @classmethod
    async def open(cls, endpoint: Endpoint, command: str, timeout: float = 30) -> Exec:
        """``sh -c command`` in the pod on a TTY, the size sent first as kubectl does."""
        context = ssl.create_default_context(cafile=endpoint.ca_file)
        http = aiohttp.ClientSession(
            base_url=endpoint.url, connector=aiohttp.TCPConnector(ssl=context)
        )
        path = exec_path(POD, ["sh", "-c", command], stdin=True, stdout=True, tty=True)
        try:
            async with asyncio.timeout(timeout):
                ws = await http.ws_connect(
                    path,
                    protocols=("v5.channel.k8s.io",),
                    headers={"Authorization": f"Bearer {endpoint.token}"},
                    max_msg_size=0,
                )
                await ws.send_bytes(SIZE)
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(b"\x00" + data)

    async def receive(self) -> bytes:
        """The next stdout chunk; raises when the exec is over."""
        while True:
            message = await self.ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                if message.data[:1] == b"\x01" and len(message.data) > 1:
                    return bytes(message.data[1:])
                continue  # stderr, the status, or an empty frame
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.PING):
                continue
            raise ConnectionError(f"exec ended ({message.type.name}, {self.ws.close_code})")

    async def until(self, marker: bytes, timeout: float = 30) -> None:
        """Read until ``marker`` has come (the output is not kept)."""
        seen = b""
        async with asyncio.timeout(timeout):
            while marker not in seen:
                seen = seen[-len(marker) :] + await self.receive()

    async def close(self) -> None:
        try:
            async with asyncio.timeout(10):
                await self.ws.close()
        finally:
            await self.http.close()


async def exec_stream(endpoint: Endpoint, command: str, setup: str, timeout: float) -> Stream:
    """``command`` between two markers through a bare exec, timed as the web shell's is."""
    script = f"{setup}; {say('BENCH-BEGIN')}; {command}; {say('BENCH-END')}"
    stream = await Exec.open(endpoint, script)
    timer = MarkerTimer()
    try:
        async with asyncio.timeout(timeout):
            while not timer.feed(await stream.receive(), time.perf_counter()):
                pass
    finally:
        await stream.close()
    return timer.stream()


async def round_trips(endpoint: Endpoint, count: int, warmup: int = 20) -> dict[str, Any]:
    """Sequential 1-byte round trips into ``cat`` on a raw TTY, straight to kubesim."""
    stream = await Exec.open(endpoint, f"{RAW}; {say('BENCH-READY')}; exec cat")
    times: list[float] = []
    try:
        await stream.until(b"BENCH-READY")
        async with asyncio.timeout(60 + count * 0.1):
            for i in range(warmup + count):
                key = bytes([97 + i % 26])
                t0 = time.perf_counter()
                await stream.send(key)
                echoed = b""
                while len(echoed) < 1:
                    echoed += await stream.receive()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        await stream.close()
    return latency_summary(times)


class DirectTypist(Typist):
    """A typist straight to kubesim: what the machine, kubesim and the client cost alone."""

    def __init__(self, stream: Exec) -> None:
        super().__init__()
        self.stream = stream

    @classmethod
    async def open(cls, endpoint: Endpoint, timeout: float = 30) -> DirectTypist:
        stream = await Exec.open(endpoint, f"{RAW}; {say('BENCH-READY')}; exec cat", timeout)
        try:
            await stream.until(b"BENCH-READY", timeout)
            await stream.send(b"!")  # cat has started once this comes back
            await stream.until(b"!", timeout)
        except BaseException:
            await stream.close()
            raise
        typist = cls(stream)
        typist.start()
        return typist

    async def send(self, key: bytes) -> None:
        await self.stream.send(key)

    async def receive(self) -> bytes:
        return await self.stream.receive()

    async def shut(self) -> None:
        await self.stream.close()
