"""The output pump: output read from the pod is committed, then delivered, in order.

Two loops run together. The reader takes output from the exec and queues each piece for the
audit store; it stops reading while more than ``read_ahead`` bytes are read and not yet
delivered, so a browser or a store that falls behind bounds the session's memory (and, through
TCP, slows the pod). The forwarder waits for each piece's commit and only then delivers it;
pieces already committed go out together, up to ``chunk`` bytes per message (a PTY hands out
about 4 KiB per read, and one WebSocket message each would cost Daphne most of its time).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from django.utils.translation import gettext

from ..audit.recorder import STDOUT, AuditUnavailable, Stored
from ..flag import Flag
from ..kube.exec import ExecStatus, Output
from ..protocol import CloseCode
from .ending import AUDIT_DOWN, EndSession
from .tasks import all_of

# Output read ahead of the browser at most: room for several group commits in flight, which
# keeps the store busy, and a bound on a session's memory when the browser stops reading.
READ_AHEAD = 4 * 1024 * 1024
# Committed output sent to the browser in one message at most.
CHUNK = 64 * 1024


class OutputRecorder(Protocol):
    """What the pump needs of the audit recorder."""

    async def submit(self, direction: str, data: bytes) -> asyncio.Future[Stored]: ...


class OutputPump:
    """Moves output from ``receive`` through ``recorder`` to ``deliver``, write-ahead."""

    def __init__(
        self,
        receive: Callable[[], Awaitable[Output | ExecStatus]],
        recorder: OutputRecorder,
        deliver: Callable[[bytes], Awaitable[None]],
        delivered: Callable[[bytes, Stored], None] = lambda data, stored: None,
        read_ahead: int = READ_AHEAD,
        chunk: int = CHUNK,
    ) -> None:
        self._receive = receive
        self._recorder = recorder
        self._deliver = deliver
        self._delivered = delivered
        self.read_ahead = read_ahead
        self.chunk = chunk
        # Output in reading order, each with its commit's future; the exit status last.
        self._outbox: deque[tuple[bytes, asyncio.Future[Stored]] | ExecStatus] = deque()
        self._queued = Flag()
        self._room = Flag()
        self.undelivered = 0  # bytes read and not yet delivered

    async def run(self, first: Awaitable[Output | ExecStatus] | None = None) -> ExecStatus:
        """Pump until the process's status has been reached; return it.

        ``first`` is a read already in flight (the launcher's); raises :class:`EndSession`
        when the store fails.
        """
        try:
            _, status = await all_of(self._read(first), self._forward())
        finally:
            # A session that ends while output waits (cancelled, or its store failing) keeps
            # this pump alive in a reference cycle (its tasks' CancelledError holds their
            # frames) until Python's next full collection, which an idle process may not
            # run for long: let the read-ahead go now, up to 4 MiB a session.
            self._outbox.clear()
            self.undelivered = 0
        assert isinstance(status, ExecStatus)
        return status

    async def _read(self, first: Awaitable[Output | ExecStatus] | None) -> None:
        event = await (first if first is not None else self._receive())
        while isinstance(event, Output):
            try:
                done = await self._recorder.submit(STDOUT, event.data)
            except AuditUnavailable:
                raise EndSession(CloseCode.AUDIT_UNAVAILABLE, gettext(AUDIT_DOWN)) from None
            self._outbox.append((event.data, done))
            self._queued.set()
            self.undelivered += len(event.data)
            while self.undelivered > self.read_ahead:
                self._room.clear()
                await self._room.wait()
            event = await self._receive()
        self._outbox.append(event)
        self._queued.set()

    async def _forward(self) -> ExecStatus:
        while True:
            while not self._outbox:
                self._queued.clear()
                await self._queued.wait()
            item = self._outbox.popleft()
            if isinstance(item, ExecStatus):
                return item
            data, done = item
            stored = await self._committed(done)
            parts, size = [data], len(data)
            while self._outbox:
                following = self._outbox[0]
                if isinstance(following, ExecStatus):
                    break
                more, more_done = following
                if not more_done.done() or size + len(more) > self.chunk:
                    break
                self._outbox.popleft()
                stored = await self._committed(more_done)
                parts.append(more)
                size += len(more)
            payload = b"".join(parts) if len(parts) > 1 else data
            await self._deliver(payload)
            self.undelivered -= len(payload)
            self._room.set()
            self._delivered(payload, stored)

    @staticmethod
    async def _committed(done: asyncio.Future[Stored]) -> Stored:
        try:
            return await done
        except AuditUnavailable:
            raise EndSession(CloseCode.AUDIT_UNAVAILABLE, gettext(AUDIT_DOWN)) from None
