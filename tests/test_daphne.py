"""terminals.daphne: Daphne's ``websocket.send`` waits while the socket's write buffer is full,
the server close codes 1011-1014 go out, and a client has time to answer a close frame.

The transport here is Twisted's own ``FileDescriptor`` (its buffering, high-water mark and
producer calls are the real ones) over a pretend kernel socket that takes only what the test
lets it; the server is Daphne's ``Server``, with the extension installed in this process.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from terminals import daphne as extension

# A terminal's output message at most (terminals.session.pump.CHUNK) as autobahn frames it:
# alone it passes the transport's 64 KiB mark.
MESSAGE = 64 * 1024 + 10


@pytest.fixture(autouse=True)
def installed() -> None:
    extension.install()


class KernelSocket(FileDescriptor):
    """A Twisted transport whose socket accepts ``room`` bytes, then nothing until drained."""

    def __init__(self) -> None:
        super().__init__(reactor=SimpleNamespace())
        self.connected = 1
        self.room = 0
        self.received = bytearray()  # what reached the (pretend) client

    def writeSomeData(self, data: bytes) -> int:
        taken = min(len(data), self.room)
        self.room -= taken
        self.received += bytes(data[:taken])
        return taken

    def startWriting(self) -> None:
        pass  # the test calls doWrite() itself, when it lets the client read

    def stopWriting(self) -> None:
        pass

    def stopReading(self) -> None:
        pass

    @property
    def buffered(self) -> int:
        """Bytes the transport holds for the client (Twisted's two write buffers)."""
        return len(self.dataBuffer) - self.offset + self._tempDataLen

    def client_reads(self, count: int) -> None:
        """The client takes ``count`` bytes; the reactor finds the socket writable."""
        self.room += count
        self.doWrite()

    def lose(self) -> None:
        self.connectionLost(Failure(ConnectionDone()))


class Protocol:
    """What Daphne's Server needs of a WebSocket protocol: messages become transport writes."""

    def __init__(self, transport: KernelSocket) -> None:
        self.transport = transport
        self.replies: list[dict[str, Any]] = []
        self.dropped = False

    def handle_reply(self, message: dict[str, Any]) -> None:
        self.replies.append(message)
        if message["type"] == "websocket.send":
            self.transport.write(message.get("bytes") or message["text"].encode())

    def dropConnection(self, abort: bool = False) -> None:
        self.dropped = True
        self.transport.unregisterProducer()  # as autobahn does before it aborts


class Producer:
    """A producer already registered on the transport (as Daphne leaves the HTTPChannel)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


def connection(ping_timeout: float = 30) -> tuple[Server, Protocol, KernelSocket]:
    server = Server(application=None, endpoints=["tcp:port=0"], ping_timeout=ping_timeout)
    socket = KernelSocket()
    protocol = Protocol(socket)
    server.connections = {protocol: {}}
    return server, protocol, socket


def output(data: bytes = b"x" * MESSAGE) -> dict[str, Any]:
    return {"type": "websocket.send", "bytes": data}


async def run_ready_tasks(turns: int = 10) -> None:
    """Let every ready task run; no time passes. Only to show that something has *not*
    happened: there is no event to await for that."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def test_a_send_waits_while_the_buffer_is_past_its_mark_and_goes_on_when_it_drains():
    server, protocol, socket = connection()
    await server.handle_reply(protocol, output())  # past the 64 KiB mark: the transport pauses

    second = asyncio.create_task(server.handle_reply(protocol, output(b"2" * MESSAGE)))
    await run_ready_tasks()
    assert not second.done(), "the client has taken nothing: the sender must wait"
    assert socket.buffered == MESSAGE

    socket.client_reads(MESSAGE)
    await second
    assert socket.received == b"x" * MESSAGE
    assert socket.buffered == MESSAGE, "once the buffer drained, the waiting message went in"


async def test_a_client_that_never_reads_costs_the_mark_and_one_message_however_long_it_lasts():
    server, protocol, socket = connection()
    sent = 0

    async def pump() -> None:
        nonlocal sent
        for _ in range(50):  # endless output, and a flow window the client keeps open
            await server.handle_reply(protocol, output())
            sent += 1

    pumping = asyncio.create_task(pump())
    await run_ready_tasks(100)

    assert socket.buffered <= socket.bufferSize + MESSAGE
    assert sent == 1, "the pump must be held at the second message, not buffered on"
    socket.client_reads(10 * MESSAGE)
    await run_ready_tasks(100)
    assert socket.buffered <= socket.bufferSize + MESSAGE
    assert sent == 2, "each drain lets one more message through"
    pumping.cancel()


async def test_of_two_waiting_senders_the_second_waits_again_once_the_first_has_written():
    server, protocol, socket = connection()
    await server.handle_reply(protocol, output())
    senders = [asyncio.create_task(server.handle_reply(protocol, output())) for _ in range(2)]
    await run_ready_tasks()

    socket.client_reads(MESSAGE)
    await run_ready_tasks()

    assert [sender.done() for sender in senders] == [True, False]
    assert socket.buffered == MESSAGE
    socket.client_reads(MESSAGE)
    await asyncio.gather(*senders)


async def test_a_waiting_send_returns_when_the_connection_is_lost_and_writes_nothing():
    server, protocol, socket = connection()
    await server.handle_reply(protocol, output())
    waiting = asyncio.create_task(server.handle_reply(protocol, output(b"late")))
    await run_ready_tasks()

    server.connections[protocol]["disconnected"] = 0.0  # as Daphne marks it
    socket.lose()  # the transport tells its producer to stop

    await waiting
    assert output(b"late") not in protocol.replies


async def test_a_waiting_send_returns_when_autobahn_closes_the_websocket():
    """autobahn unregisters the producer before it drops a connection, so the transport's
    stopProducing() never comes: Daphne's onClose must release the senders."""
    server, protocol, socket = connection()
    await server.handle_reply(protocol, output())
    waiting = asyncio.create_task(server.handle_reply(protocol, output(b"late")))
    await run_ready_tasks()
    socket.unregisterProducer()

    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    closing = WebSocketProtocol()
    setattr(closing, extension.WRITABILITY, getattr(protocol, extension.WRITABILITY))
    closing.server = SimpleNamespace(
        protocol_disconnected=lambda p: None, log_action=lambda *args: None
    )
    closing.application_queue = queue
    closing.request = SimpleNamespace(path="/ws/")
    closing.client_addr = None
    closing.onClose(False, 1006, None)

    await waiting
    assert output(b"late") not in protocol.replies
    assert queue.get_nowait() == {"type": "websocket.disconnect", "code": 1006}, (
        "Daphne's own onClose still tells the application"
    )


async def test_a_connection_that_takes_nothing_for_the_ping_timeout_is_dropped():
    server, protocol, _ = connection(ping_timeout=0.01)
    await server.handle_reply(protocol, output())

    await server.handle_reply(protocol, output(b"late"))  # returns: no send waits for ever

    assert protocol.dropped, "a peer that takes nothing is dropped like one that never pongs"
    assert output(b"late") not in protocol.replies


async def test_a_connection_that_drains_in_time_is_not_dropped():
    server, protocol, socket = connection(ping_timeout=30)
    await server.handle_reply(protocol, output())
    waiting = asyncio.create_task(server.handle_reply(protocol, output()))
    await run_ready_tasks()
    socket.client_reads(MESSAGE)
    await waiting
    assert not protocol.dropped


async def test_other_messages_never_wait():
    server, protocol, _ = connection()
    await server.handle_reply(protocol, output())
    assert getattr(protocol, extension.WRITABILITY).paused

    await server.handle_reply(protocol, {"type": "websocket.close", "code": 1000})

    assert protocol.replies[-1] == {"type": "websocket.close", "code": 1000}


async def test_the_producer_it_replaced_still_hears_every_pause_resume_and_stop():
    server, protocol, socket = connection()
    channel = Producer()
    socket.registerProducer(channel, True)

    await server.handle_reply(protocol, output())
    socket.client_reads(MESSAGE)
    socket.lose()

    assert channel.calls == ["pause", "resume", "stop"]
    assert socket.producer is None


async def test_a_transport_already_gone_gets_no_wait():
    server, protocol, socket = connection()
    socket.lose()
    server.connections[protocol]["disconnected"] = 0.0

    await server.handle_reply(protocol, output())

    assert getattr(protocol, extension.WRITABILITY).closed


def test_installing_twice_wraps_daphne_once():
    handle_reply, on_close = Server.handle_reply, WebSocketProtocol.onClose

    extension.install()

    assert (Server.handle_reply, WebSocketProtocol.onClose) == (handle_reply, on_close)


class Closing:
    """The part of Daphne's WebSocketProtocol that closing uses."""

    def __init__(self) -> None:
        self.frames: list[int] = []
        self.closes: list[int] = []

    def sendCloseFrame(self, code: int, isReply: bool) -> None:
        self.frames.append(code)

    def sendClose(self, code: int) -> None:
        self.closes.append(code)


@pytest.mark.parametrize("code", [1011, 1012, 1013, 1014])
def test_server_close_codes_go_out_as_close_frames(code):
    closing = Closing()
    WebSocketProtocol.serverClose(closing, code)
    assert (closing.frames, closing.closes) == ([code], [])


@pytest.mark.parametrize("code", [None, 1000, 4403])
def test_other_close_codes_take_daphnes_own_path(code):
    closing = Closing()
    WebSocketProtocol.serverClose(closing, code)
    assert (closing.frames, closing.closes) == ([], [code or 1000])


def test_a_client_has_more_than_autobahns_second_to_answer_a_close_frame():
    factory = WebSocketFactory(SimpleNamespace(), server="Daphne")
    assert factory.closeHandshakeTimeout == extension.CLOSE_HANDSHAKE_TIMEOUT >= 5


async def read_frames(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """The server's frames (opcode, payload) up to and including its close frame."""
    frames = []
    while True:
        first, second = await reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        frames.append((first & 0x0F, await reader.readexactly(length)))
        if first & 0x0F == 0x8:
            return frames


@pytest.mark.django_db(transaction=True)
async def test_a_client_that_reads_late_still_gets_the_close_code(daphne):
    """The reason for a refusal survives a client that is busy when it comes.

    Before the extension, autobahn reset the connection a second after its close frame, and
    the kernel threw away the frames the client had not read yet: the client saw a bare 1006.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", daphne.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /ws/terminals/kubesim/default/web/ HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{daphne.port}\r\nOrigin: {daphne.origin}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = await reader.readuntil(b"\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 101")
    # Busy for longer than autobahn's own one-second wait; no event to await: time is the point.
    await asyncio.sleep(2)
    try:
        frames = await asyncio.wait_for(read_frames(reader), 10)
    finally:
        writer.close()
    _, payload = frames[-1]
    assert struct.unpack("!H", payload[:2])[0] == 4401
    assert any(b"log in" in data.lower() for _, data in frames[:-1])
