"""Three small, documented extensions of Daphne, installed once per Daphne process by
``TerminalsConfig.ready`` (:func:`install`). Without Daphne nothing here runs.

**Server close codes 1011-1014.** RFC 6455 (7.4.1) and the IANA registry give servers 1011
(internal error), 1012 (service restart), 1013 (try again later) and 1014 (bad gateway).
Daphne closes a socket with autobahn's ``sendClose()``, which accepts only 1000 and 3000-4999
from applications, so an ASGI ``websocket.close`` with 1012 raised and the browser saw a bare
1006 instead. These four codes go out through autobahn's lower-level ``sendCloseFrame()``,
which writes the same close frame without the check; every other code takes Daphne's own path.

**Backpressure for ``websocket.send``.** Daphne's ``send()`` hands a message to autobahn,
which frames it and writes it to the Twisted transport, and returns at once: an ASGI
application cannot tell a client that takes its bytes from one that does not. A client that
never read, and acked output it had never drawn (which keeps the flow window open), made the
server hold output without limit: three took Daphne from 107 to 413 MiB in 20 s, and the
memory stayed after they left. Measured with tracemalloc, the growth was autobahn's framed
messages waiting in the Twisted TCP transport's write buffer (``FileDescriptor``'s
``_tempDataBuffer``, joined into ``dataBuffer``): the kernel's socket buffers were full, and
Twisted buffers whatever it is given. autobahn queues nothing of its own on this path (its
``send_queue`` serves only chopped or synchronous sends, which Daphne does not make). No bound
in the application can replace one here: the flow window counts what the client says it has
drawn, and the client's word is what is in question.

So each WebSocket's transport gets a producer, the way Twisted applies backpressure: the
transport pauses it when its write buffer passes its high-water mark (``bufferSize``, 64 KiB)
and resumes it once the buffer has drained into the kernel. While it is paused, a
``websocket.send`` waits before it writes. The transport then holds at most its mark plus one
message per waiting sender (for a terminal, 64 KiB and one 64 KiB chunk), whatever the client
says, and the application's ``await send()`` is real backpressure: a terminal's output pump
stops, stops reading the exec at its read-ahead bound, and TCP slows the pod. The wait ends
when the buffer drains or the connection closes; a connection whose buffer has not drained
within Daphne's ``--ping-timeout`` is dropped, as a peer that does not answer a ping is (a ping
could not reach it either), so no send waits for ever. Other messages (accept, close, HTTP) are
unchanged: a close never waits. The same three clients, connecting again whenever dropped, now
cost Daphne about 45 MiB in 60 s (``python -m bench.hostile``, PostgreSQL), most of it the
output pumps' 4 MiB read-ahead each. Twisted's own 64 KiB mark is kept: a 256 KiB one cost
Daphne the same CPU per MiB, and the kernel's socket buffer already keeps the connection busy
while a sender waits.

**Time for the closing handshake.** After a server sends its close frame, autobahn waits
``closeHandshakeTimeout`` (1 s by default, which Daphne keeps) for the client's reply and then
aborts the TCP connection. An abort is a reset, and Linux discards what a reset socket has
received but not yet read: a client busy for more than a second (a loaded laptop, a browser tab
in the background, 300 connects at once in a test) lost the close frame, and with it the close
code and reason, and saw a bare 1006. The extension gives the reply
:data:`CLOSE_HANDSHAKE_TIMEOUT` seconds; a client that never replies holds its socket that
long and no longer.

The transport's one producer slot: after the upgrade, Daphne leaves the ``HTTPChannel`` that
carried the handshake registered as the transport's producer (inert by then: Daphne never
finishes the upgrade request). The extension puts its own in that place and passes every
pause, resume and stop on to the ``HTTPChannel``, so nothing changes for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .flag import Flag

logger = logging.getLogger(__name__)

SERVER_CLOSE_CODES = frozenset({1011, 1012, 1013, 1014})
# Seconds a client has to answer the server's close frame before the connection is aborted.
CLOSE_HANDSHAKE_TIMEOUT = 10.0
# The attribute that holds a WebSocket protocol's Writability.
WRITABILITY = "terminals_writability"


def install() -> None:
    """Install the extensions (idempotent)."""
    server_close_codes()
    bound_send_buffers()
    patient_close_handshake()


def server_close_codes() -> None:
    """Let ASGI applications close Daphne WebSockets with 1011-1014 (idempotent)."""
    from daphne.ws_protocol import WebSocketProtocol

    original = WebSocketProtocol.serverClose
    if getattr(original, "terminals_extension", False):
        return

    def server_close(self: Any, code: int | None = None) -> None:
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code)

    server_close.terminals_extension = True  # type: ignore[attr-defined]
    WebSocketProtocol.serverClose = server_close


def patient_close_handshake() -> None:
    """Give clients :data:`CLOSE_HANDSHAKE_TIMEOUT` to answer a close frame (idempotent)."""
    from daphne.ws_protocol import WebSocketFactory

    original = WebSocketFactory.__init__
    if getattr(original, "terminals_extension", False):
        return

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        # Daphne's own setProtocolOptions() call leaves this option alone.
        self.closeHandshakeTimeout = CLOSE_HANDSHAKE_TIMEOUT

    init.terminals_extension = True  # type: ignore[attr-defined]
    WebSocketFactory.__init__ = init


class Writability:
    """The producer registered on one WebSocket's transport: paused while its buffer is full.

    It provides Twisted's ``IPushProducer`` and passes each call on to ``previous``, the
    producer it took the place of. ``drop`` ends a stalled connection.
    """

    def __init__(self, previous: Any, stall_timeout: float, drop: Callable[[], None]) -> None:
        self.previous = previous
        self.stall_timeout = stall_timeout
        self._drop = drop
        self.paused = False
        self.closed = False
        self._changed = Flag()

    # IPushProducer: called by the transport.

    def pauseProducing(self) -> None:
        self.paused = True
        if self.previous is not None:
            self.previous.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        self._changed.set()
        if self.previous is not None:
            self.previous.resumeProducing()

    def stopProducing(self) -> None:
        self.close()
        if self.previous is not None:
            self.previous.stopProducing()

    # For senders.

    def close(self) -> None:
        """The connection is gone: release every waiting sender for good."""
        self.closed = True
        self._changed.set()

    async def wait(self) -> None:
        """Return once the transport has room or the connection is gone; drop it if stalled."""
        if not self.paused or self.closed:
            return
        try:
            async with asyncio.timeout(self.stall_timeout):
                while self.paused and not self.closed:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            logger.info(
                "Dropping a WebSocket that took none of its pending output for %g s",
                self.stall_timeout,
            )
            self.close()
            self._drop()


def writability(protocol: Any, stall_timeout: float) -> Writability | None:
    """The Writability of a WebSocket ``protocol``, registered on its transport at first use."""
    found: Writability | None = getattr(protocol, WRITABILITY, None)
    if found is not None:
        return found
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return None  # not connected (any more): Daphne drops the message itself
    # A plain TCP transport names its producer; a TLS one keeps it to itself, and that one
    # (the HTTPChannel, inert after the upgrade) is replaced without being told.
    previous = getattr(transport, "producer", None)

    def drop() -> None:
        protocol.wasClean = False
        protocol.wasNotCleanReason = "the peer took none of its pending output in time"
        protocol.dropConnection(abort=True)

    found = Writability(previous, stall_timeout, drop)
    setattr(protocol, WRITABILITY, found)
    transport.unregisterProducer()
    # A transport already disconnected calls stopProducing() here, which closes it.
    transport.registerProducer(found, True)
    return found


def bound_send_buffers() -> None:
    """Make Daphne's ``websocket.send`` wait while the socket's write buffer is full
    (idempotent); see the module docstring."""
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    original_reply = Server.handle_reply
    if getattr(original_reply, "terminals_extension", False):
        return
    original_close = WebSocketProtocol.onClose

    async def handle_reply(self: Any, protocol: Any, message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.send":
            gate = writability(protocol, float(self.ping_timeout))
            if gate is not None:
                await gate.wait()
                if gate.closed:
                    return  # the connection went while the message waited: it has nowhere to go
        await original_reply(self, protocol, message)

    def on_close(self: Any, was_clean: bool, code: int | None, reason: str | None) -> None:
        gate: Writability | None = getattr(self, WRITABILITY, None)
        if gate is not None:
            # autobahn unregisters the producer before it drops a connection, so the
            # transport's stopProducing() may never come: the close releases the senders.
            gate.close()
        original_close(self, was_clean, code, reason)

    handle_reply.terminals_extension = True  # type: ignore[attr-defined]
    Server.handle_reply = handle_reply
    WebSocketProtocol.onClose = on_close
