"""One ``pods/exec`` session: a thin async bridge between the WebSocket and a local process.

The protocol itself lives in :mod:`kubesim.frames`; this module only moves bytes.  Three
pumps run as tasks (client reader, stdin writer, output readers); the session waits for the
process or the client with ``asyncio.wait(FIRST_COMPLETED)`` and cleans up the other side.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import signal
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from . import frames
from .frames import Channel, Close, Data, ProtocolError, Subprotocol
from .process import ExecFailed, FdReader, LocalProcess, Pty, Sandbox
from .rbac import Identity

logger = logging.getLogger(__name__)
T = TypeVar("T")

# After the client goes away: SIGHUP, then SIGKILL if the process is still there.
HANGUP_GRACE = 2.0
# After the process exits, how long its leftover children may keep the output open.
DRAIN_GRACE = 0.5
# kubectl sends the terminal size first thing; waiting briefly for it lets the process
# start with the right size (no 0x0 or 80x24 first prompt).
FIRST_RESIZE_WAIT = 0.3
# Client input queued for a process that does not read it: past this, stop reading the
# socket (TCP backpressure, as the API server's io.Copy gives).
STDIN_BUFFER = 4 * 1024 * 1024


class CloseCode(IntEnum):
    """WebSocket close codes kubesim sends."""

    NORMAL = 1000
    GOING_AWAY = 1001


class Transcript:
    """Appends one JSON line per event to a file, flushed at once (tests read it live)."""

    def __init__(self, path: Path | None) -> None:
        self._file = path.open("a", encoding="utf-8") if path is not None else None

    def record(self, event: dict[str, Any]) -> None:
        """Write one event."""
        if self._file is None:
            return
        self._file.write(json.dumps(event, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class ExecRequest:
    """A validated exec request."""

    exec_id: str
    identity: Identity
    namespace: str
    pod: str
    container: str
    command: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool
    protocol: Subprotocol

    def start_event(self) -> dict[str, Any]:
        """The transcript's ``start`` event."""
        return {
            "event": "start",
            "exec": self.exec_id,
            "user": self.identity.user,
            "groups": list(self.identity.groups),
            "impersonated_by": self.identity.impersonated_by,
            "namespace": self.namespace,
            "pod": self.pod,
            "container": self.container,
            "command": list(self.command),
            "tty": self.tty,
            "protocol": self.protocol.value,
        }


class ExecSession:
    """Runs one exec over an upgraded WebSocket."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: ExecRequest,
        sandbox: Sandbox,
        transcript: Transcript,
    ) -> None:
        self.ws = ws
        self.request = request
        self.sandbox = sandbox
        self.transcript = transcript
        self.process: LocalProcess | None = None
        self._pty: Pty | None = None
        self._stdin: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._stdin_open = request.stdin
        self._stdin_queued = 0
        self._stdin_room = asyncio.Event()
        self._stdin_room.set()
        self._resize = frames.ResizeDecoder() if request.tty else None
        self._sized = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._exit_recorded = False
        self._aborted = False
        self._reader: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Serve the session until the process ends or the client goes away."""
        req = self.request
        self.transcript.record(req.start_event())
        try:
            if req.tty:
                self._pty = Pty()
            reader = self._reader = self._spawn(self._read_client())
            await self._send(_first_channel(req), b"")
            if req.tty and not await self._wait_first_resize(reader):
                self._record_exit(None, "client went away before the process started")
                return
            try:
                self.process = LocalProcess.start(
                    req.command,
                    self.sandbox,
                    tty=self._pty,
                    stdin=req.stdin,
                    stdout=req.stdout,
                    stderr=req.stderr,
                )
            except ExecFailed as exc:
                error = _containerd_error(req.exec_id, exc.message)
                self._record_exit(None, error)
                await self._finish(reader, frames.internal_error_status(error))
                return
            await self._supervise(reader)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.process is not None:
                self.process.close()
            elif self._pty is not None:
                self._pty.close()
            self._record_exit(None, "session ended abnormally")
            if not self.ws.closed:
                # The reader is stopped, so this waits for the client's close reply.
                await self.ws.close(
                    code=CloseCode.GOING_AWAY if self._aborted else CloseCode.NORMAL
                )

    async def abort(self) -> None:
        """Server shutdown: stop reading, as if the client left; :meth:`run` hangs up and closes."""
        self._aborted = True
        if self._reader is not None:
            self._reader.cancel()
        else:
            await self.ws.close(code=CloseCode.GOING_AWAY)

    async def _supervise(self, reader: asyncio.Task[None]) -> None:
        """Pump until the process exits or the client leaves."""
        process = self.process
        assert process is not None
        req = self.request
        if process.stdin is not None:
            self._spawn(self._write_stdin())
        pumps = [
            self._spawn(self._pump(stream, channel))
            for stream, channel in (
                (process.stdout, Channel.STDOUT if req.stdout else None),
                (process.stderr, Channel.STDERR),
            )
            if stream is not None
        ]
        exited = self._spawn(process.exited())
        await asyncio.wait({exited, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            logger.info("exec %s: client went away; hanging up pid %d", _short(req), process.pid)
            await process.hangup(HANGUP_GRACE)
            self._record_exit(process.reap())
            return
        if pumps:
            _, pending = await asyncio.wait(pumps, timeout=DRAIN_GRACE)
            if pending:
                # Children of the exec still hold the output open: end them (no orphans);
                # what they already wrote is still read to the end.
                process.signal_group(signal.SIGKILL)
                await asyncio.wait(pumps)
        code = process.reap()
        self._record_exit(code)  # before the client can see the end
        if code == 0:
            await self._finish(reader, frames.success_status())
        else:
            await self._finish(reader, frames.exit_status(code, req.command, req.protocol))

    async def _finish(self, reader: asyncio.Task[None], status: dict[str, Any]) -> None:
        """Exactly one Status on channel 3 (if the protocol wants one), then close 1000."""
        payload = frames.status_payload(status, self.request.protocol)
        if payload is not None:
            await self._send(Channel.ERROR, payload)
        # Stop reading first, so that close() waits for the client's close reply instead of
        # dropping the connection under it (aiohttp clients would report 1006).
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await self.ws.close(code=CloseCode.NORMAL)

    def _record_exit(self, code: int | None, error: str | None = None) -> None:
        """Write the one ``exit`` event of this session (later calls do nothing)."""
        if self._exit_recorded:
            return
        self._exit_recorded = True
        event: dict[str, Any] = {"event": "exit", "exec": self.request.exec_id, "code": code}
        if error is not None:
            event["error"] = error
        self.transcript.record(event)

    async def _wait_first_resize(self, reader: asyncio.Task[None]) -> bool:
        """Wait briefly for the initial size; False if the client left meanwhile."""
        sized = self._spawn(self._sized.wait())
        await asyncio.wait(
            {sized, reader}, timeout=FIRST_RESIZE_WAIT, return_when=asyncio.FIRST_COMPLETED
        )
        sized.cancel()
        return not reader.done()

    async def _read_client(self) -> None:
        """Read client frames until the socket closes (this also answers pings)."""
        async for msg in self.ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                break  # ERROR
            try:
                frame = frames.decode(self.request.protocol, msg.data)
            except ProtocolError as exc:
                logger.warning("exec %s: dropped a bad frame: %s", _short(self.request), exc)
                continue
            if isinstance(frame, Close):
                if frame.channel == Channel.STDIN and not self.request.tty:
                    self._close_stdin()
            elif isinstance(frame, Data):
                if frame.channel == Channel.STDIN:
                    self._on_stdin(frame.data)
                    await self._stdin_room.wait()
                elif frame.channel == Channel.RESIZE:
                    self._on_resize(frame.data)
                # any other channel is ignored, as the API server does

    def _on_stdin(self, data: bytes) -> None:
        if not self._stdin_open or not data:
            return
        self.transcript.record(
            {
                "event": "stdin",
                "exec": self.request.exec_id,
                "data": base64.b64encode(data).decode("ascii"),
            }
        )
        self._stdin.put_nowait(data)
        self._stdin_queued += len(data)
        if self._stdin_queued > STDIN_BUFFER:
            self._stdin_room.clear()

    def _close_stdin(self) -> None:
        if self._stdin_open:
            self._stdin_open = False
            self._stdin.put_nowait(None)

    def _on_resize(self, data: bytes) -> None:
        if self._resize is None or self._pty is None:
            return  # resize only applies to TTY sessions
        try:
            sizes = self._resize.feed(data)
        except ProtocolError as exc:
            # Like the API server, stop handling resizes after a malformed stream.
            logger.warning(
                "exec %s: resize stream ignored from now on: %s", _short(self.request), exc
            )
            self._resize = None
            return
        for size in sizes:
            self._pty.resize(size.width, size.height)
            self.transcript.record(
                {
                    "event": "resize",
                    "exec": self.request.exec_id,
                    "cols": size.width,
                    "rows": size.height,
                }
            )
            self._sized.set()

    async def _write_stdin(self) -> None:
        """Feed queued client input to the process, in order."""
        process = self.process
        assert process is not None
        while True:
            data = await self._stdin.get()
            if data is None:
                process.close_stdin()
                return
            try:
                if process.stdin is not None:
                    await process.stdin.write(data)
            except OSError:
                # The process closed its input (EPIPE) or the PTY is gone: drop the rest.
                self._stdin_open = False
                self._stdin_room.set()
                return
            self._stdin_queued -= len(data)
            if self._stdin_queued <= STDIN_BUFFER:
                self._stdin_room.set()

    async def _pump(self, stream: FdReader, channel: Channel | None) -> None:
        """Copy one output stream to its channel until EOF (``None``: read and discard)."""
        while data := await stream.read():
            if channel is not None:
                await self._send(channel, data)
            # Neither a ready PTY nor a send below the write limit suspends: without a yield,
            # one session printing without end would hold the loop from every other one.
            await asyncio.sleep(0)

    async def _send(self, channel: Channel, data: bytes) -> None:
        """Send one message; a vanished client is not an error here (the reader sees it)."""
        if self.ws.closed:
            return
        message = frames.encode(self.request.protocol, channel, data)
        with contextlib.suppress(ConnectionError):
            if isinstance(message, str):
                await self.ws.send_str(message)
            else:
                await self.ws.send_bytes(message)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        return task


def _first_channel(req: ExecRequest) -> Channel:
    """The lowest writable channel, for the initial empty "connection established" frame."""
    if req.stdout:
        return Channel.STDOUT
    if req.stderr:
        return Channel.STDERR
    return Channel.ERROR


def _containerd_error(exec_id: str, runc_message: str) -> str:
    """How containerd words a failed exec (reference section 3)."""
    return (
        "error executing command in container: failed to exec in container: "
        f'failed to start exec "{exec_id}": OCI runtime exec failed: exec failed: '
        f"unable to start container process: {runc_message}: unknown"
    )


def _short(req: ExecRequest) -> str:
    return req.exec_id[:12]
