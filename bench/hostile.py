"""A hostile client: it acknowledges output it never reads. ``python -m bench.hostile``.

The client speaks WebSocket by hand on a plain socket, so that nothing (no library, no
reader task) takes bytes off the socket: once the kernel's buffers are full, everything the
server sends stays with the server. It acks 1 GiB every 250 ms, so the flow window never
closes. The measurement runs ``--sessions`` such clients (3) against a real Daphne for
``--seconds`` (60) while their shells print without end; a client the server drops (it took
nothing for Daphne's ping timeout, terminals.daphne) connects again at once, so that many
attack all along. It records Daphne's RSS before, at its peak and after the clients have
gone, the output stored for each hostile session, and a normal session's keystroke round
trips during the attack, in ``bench/results/<date>-hostile-<db>.json``.

``python -m bench.hostile [--db sqlite|postgres] [--sessions 3] [--seconds 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

__all__ = ["HostileClient", "attack"]

ACK = json.dumps({"type": "ack", "bytes": 2**30})
ACK_INTERVAL = 0.25
# The client's receive buffer: small, so that what the kernel holds for it is small too.
RCVBUF = 16 * 1024
# The shell's endless output: base64 of zeros, lines of 76 characters.
ENDLESS = "cat /dev/zero | base64"


class HandshakeFailed(Exception):
    """The server did not switch protocols."""


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 5.2)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 2**16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class HostileClient:
    """A raw WebSocket to a terminal that sends and never reads (past the handshake)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.acks = 0
        self._acking: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, host: str, port: int, path: str, cookie: str, rcvbuf: int = RCVBUF
    ) -> HostileClient:
        """Connect and upgrade (cookie and same-site Origin, as a browser would)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so that the window offered to the server is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (host, port))
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n"
                f"Cookie: sessionid={cookie}\r\n\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            response = b""
            while b"\r\n\r\n" not in response:
                # One byte at a time: not one byte past the response is taken off the socket.
                byte = await loop.sock_recv(sock, 1)
                if not byte:
                    raise HandshakeFailed(f"closed during the handshake: {response!r}")
                response += byte
            if not response.startswith(b"HTTP/1.1 101"):
                raise HandshakeFailed(response.split(b"\r\n", 1)[0].decode(errors="replace"))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def send_text(self, text: str) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, frame(0x1, text.encode()))

    async def start(self, command: str = ENDLESS) -> None:
        """Send the size and a command line, then ack 1 GiB every 250 ms until closed."""
        await self.send_text(json.dumps({"type": "resize", "cols": 80, "rows": 24}))
        await self.send_text(json.dumps({"type": "stdin", "data": command + "\r"}))
        self._acking = asyncio.create_task(self._ack_forever())

    async def _ack_forever(self) -> None:
        with contextlib.suppress(OSError):  # the server closed the connection
            while True:
                await self.send_text(ACK)
                self.acks += 1
                await asyncio.sleep(ACK_INTERVAL)  # the attack's own rhythm

    @property
    def acking(self) -> bool:
        """True while the server still takes the acks."""
        return self._acking is not None and not self._acking.done()

    async def dropped(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the server to drop the connection; True if it did."""
        if self._acking is None:
            return False
        done, _ = await asyncio.wait([self._acking], timeout=max(0.0, timeout))
        return bool(done)

    def kernel_held(self) -> int:
        """Bytes the kernel holds between the server and this client: the server socket's
        send queue (/proc/net/tcp, loopback only) plus what this socket has not read."""
        unread = struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0" * 4))
        mine = f"0100007F:{self.sock.getsockname()[1]:04X}"
        server = f"0100007F:{self.sock.getpeername()[1]:04X}"
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == server and fields[2] == mine:
                return unread[0] + int(fields[4].split(":")[0], 16)
        raise RuntimeError(f"no server socket {server} -> {mine} in /proc/net/tcp")

    async def close(self) -> None:
        """Leave without a close handshake: reset the connection, as a killed client does."""
        if self._acking is not None:
            self._acking.cancel()
            await asyncio.gather(self._acking, return_exceptions=True)
        # SO_LINGER 0: the close resets the connection, so the server drops what it holds.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


# The measurement ----------------------------------------------------------------------------

MIB = 2**20
WEB = "/ws/terminals/kubesim/default/web/?container=main"
GROWTH_TARGET_MIB = 64
# When the normal session measures its round trips: once the hostile ones are full and held.
KEYSTROKES_AT = 10.0


async def attacker(stack: Any, deadline: float, drops: list[float]) -> None:
    """Keep one hostile session up until ``deadline``, reconnecting when the server drops it."""
    started = time.monotonic()
    while time.monotonic() < deadline:
        client = await HostileClient.open("127.0.0.1", stack.daphne.port, WEB, stack.cookie)
        try:
            await client.start()
            if await client.dropped(deadline - time.monotonic()):
                drops.append(round(time.monotonic() - started, 1))
        finally:
            await client.close()


async def attack(stack: Any, sessions: int, seconds: float) -> dict[str, Any]:
    """Daphne's RSS before, during and after ``sessions`` hostile clients for ``seconds``."""
    from terminals.conf import get_config

    from . import measures
    from .stack import rss_kib

    pid = stack.daphne.process.pid
    # A normal session first loads what every session needs (modules, the cluster's client).
    warm = await measures.open_terminal(stack)
    try:
        await warm.run(measures.say("BENCH-WARM"), "BENCH-WARM")
    finally:
        await warm.close()
    await measures.in_thread(_all_ended_within, 30.0)
    before = rss_kib(pid)
    began = time.monotonic()
    deadline = began + seconds
    drops: list[float] = []
    attackers = [asyncio.create_task(attacker(stack, deadline, drops)) for _ in range(sessions)]
    samples: list[tuple[float, int]] = []
    keystrokes: dict[str, Any] | None = None
    try:
        while time.monotonic() < deadline:
            samples.append((round(time.monotonic() - began, 1), rss_kib(pid)))
            if keystrokes is None and time.monotonic() - began > KEYSTROKES_AT:
                # A normal session beside the hostile ones, for its round trips.
                keystrokes = await measures.keystrokes(stack, 200)
            await asyncio.sleep(0.5)  # the sampling rhythm
    finally:
        await asyncio.gather(*attackers, return_exceptions=True)
    during = rss_kib(pid)
    stored = await measures.in_thread(_stored_output, began)
    ended = await measures.in_thread(_all_ended_within, 30.0)
    await asyncio.sleep(2)  # let the loop run the last cleanups before reading the RSS
    after = rss_kib(pid)
    # The server registry hands freed pages back once per heartbeat round after sessions end
    # (terminals.memory); read the RSS again once a round has passed.
    await asyncio.sleep(get_config()["HEARTBEAT_INTERVAL"] + 2)
    after_round = rss_kib(pid)
    peak = max([kib for _, kib in samples] + [during])
    return {
        "sessions": sessions,
        "seconds": seconds,
        "ack_bytes": 2**30,
        "ack_interval_s": ACK_INTERVAL,
        "client_rcvbuf": RCVBUF,
        "command": ENDLESS,
        "hostile_sessions_opened": len(stored),
        "dropped_by_server_after_s": drops,
        "stored_output_per_session_mib_max": round(max(stored, default=0) / MIB, 2),
        "daphne_rss_before_kib": before,
        "daphne_rss_peak_kib": peak,
        "daphne_rss_after_kib": after,
        "daphne_rss_after_heartbeat_kib": after_round,
        "kept_after_heartbeat_mib": round((after_round - before) / 1024, 1),
        "growth_mib": round((peak - before) / 1024, 1),
        "kept_after_mib": round((after - before) / 1024, 1),
        "growth_target_mib": GROWTH_TARGET_MIB,
        "growth_target_met": (peak - before) / 1024 < GROWTH_TARGET_MIB,
        "all_recorded_as_ended": ended,
        "keystrokes_during_attack": keystrokes,
        "rss_samples_kib": samples[::10],
    }


def _stored_output(since: float) -> list[int]:
    """Output stored for each hostile session (each started with the attack)."""
    from django.utils import timezone

    from terminals.models import Session

    started = timezone.now() - dt.timedelta(seconds=time.monotonic() - since)
    sessions = Session.objects.filter(started_at__gte=started).exclude(bytes_out__lt=MIB)
    return list(sessions.values_list("bytes_out", flat=True))


def _all_ended_within(timeout: float) -> bool:
    from terminals.models import Session

    deadline = time.monotonic() + timeout
    while Session.objects.filter(ended_at__isnull=True).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)  # another process ends them: poll the store
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    from . import database
    from .stack import run_stack
    from .suite import RESULTS, machine

    workdir = Path(tempfile.mkdtemp(prefix=f"webshell-hostile-{args.db}-"))
    try:
        env = database.prepare_environment(args.db, workdir)
        database.setup_django_and_migrate()
        cookie = database.make_user_cookie()
        result: dict[str, Any] = {
            "date": dt.date.today().isoformat(),
            "db": args.db,
            "machine": machine(),
            "database": database.describe(),
            "load_average_before": os.getloadavg(),
        }
        print(
            f"{args.db}: {args.sessions} hostile sessions for {args.seconds:g} s", file=sys.stderr
        )
        with run_stack(env, workdir, cookie) as stack:
            result["hostile"] = asyncio.run(attack(stack, args.sessions, args.seconds))
            trouble = stack.trouble()
            result["daphne_log"] = {"trouble_lines": len(trouble), "first_trouble": trouble[:20]}
        result["load_average_after"] = os.getloadavg()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{result['date']}-hostile-{args.db}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    hostile = result["hostile"]
    print(
        f"Daphne RSS: {hostile['daphne_rss_before_kib'] // 1024} MiB before, "
        f"{hostile['daphne_rss_peak_kib'] // 1024} MiB at the peak (+{hostile['growth_mib']} MiB, "
        f"target < {GROWTH_TARGET_MIB}: {'met' if hostile['growth_target_met'] else 'MISSED'}), "
        f"{hostile['daphne_rss_after_kib'] // 1024} MiB after the clients left, "
        f"{hostile['daphne_rss_after_heartbeat_kib'] // 1024} MiB a heartbeat round later"
    )
    print(f"written: {path.relative_to(RESULTS.parent.parent)}")
    return 0 if hostile["growth_target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
