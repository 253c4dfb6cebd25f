"""A request must arrive whole in time (terminals.serve): stalled upgrades are not held forever.

Plain Daphne holds a connection that sends part of a request for as long as a byte arrives
every minute (Twisted's idle timeout); ``python -m terminals.serve --request-timeout N`` closes
it N seconds after it opened. In process, the channel runs on Twisted's fake clock; end to end,
raw sockets stall against a real Daphne.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import http

from terminals.serve import REQUEST_TIMEOUT, RequestDeadlineChannel
from tests.fixtures.daphne import Daphne, daphne_environment, run_daphne
from tests.fixtures.terminal_client import run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 2.0
PARTIAL_UPGRADE = (
    b"GET /ws/terminals/kubesim/default/web/ HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    # No Sec-WebSocket-Key yet, and never the blank line that ends the headers.
)

# In process: the channel on a fake clock.


class HeldRequest(http.Request):
    """A request the application holds on to, as a WebSocket or a long response is held."""

    held: list[HeldRequest] = []

    def process(self) -> None:
        HeldRequest.held.append(self)


@pytest.fixture
def channel() -> Iterator[tuple[RequestDeadlineChannel, Clock, StringTransport]]:
    HeldRequest.held = []
    channel = RequestDeadlineChannel()
    channel.request_timeout = DEADLINE
    clock = Clock()
    channel.callLater = clock.callLater
    channel.timeOut = 60  # Twisted's idle timeout, as Daphne's factory sets it
    channel.requestFactory = HeldRequest
    transport = StringTransport()
    channel.makeConnection(transport)
    yield channel, clock, transport
    channel.connectionLost(Failure(ConnectionDone()))


def test_the_default_deadline_is_a_few_seconds():
    assert 5 <= REQUEST_TIMEOUT <= 15


def test_a_silent_connection_is_closed_at_the_deadline(channel):
    _, clock, transport = channel
    clock.advance(DEADLINE - 0.1)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting


def test_a_partial_upgrade_is_closed_at_the_deadline(channel):
    channel, clock, transport = channel
    channel.dataReceived(PARTIAL_UPGRADE)
    clock.advance(DEADLINE)
    assert transport.disconnecting
    assert HeldRequest.held == []


def test_a_trickle_does_not_move_the_deadline(channel):
    """A byte every half second keeps Twisted's idle timeout at bay, not the deadline."""
    channel, clock, transport = channel
    for byte in PARTIAL_UPGRADE[:4]:
        channel.dataReceived(bytes([byte]))
        clock.advance(DEADLINE / 4)
    assert transport.disconnecting


def test_a_partial_body_is_closed_at_the_deadline(channel):
    channel, clock, transport = channel
    channel.dataReceived(b"POST /accounts/login/ HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n")
    channel.dataReceived(b"username=")
    clock.advance(DEADLINE)
    assert transport.disconnecting
    assert HeldRequest.held == []


def test_a_whole_request_is_held_as_long_as_the_application_likes(channel):
    channel, clock, transport = channel
    channel.dataReceived(PARTIAL_UPGRADE + b"Sec-WebSocket-Key: x\r\n\r\n")
    assert len(HeldRequest.held) == 1
    clock.advance(3600)
    assert not transport.disconnecting


def test_the_next_request_on_a_kept_alive_connection_has_its_own_deadline(channel):
    channel, clock, transport = channel
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    (request,) = HeldRequest.held
    request.finish()
    clock.advance(30)  # idle between requests: Twisted's idle timeout (60 s) applies
    assert not transport.disconnecting
    channel.dataReceived(b"GET /ne")
    clock.advance(DEADLINE - 0.1)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting


def test_an_idle_kept_alive_connection_ends_at_twisteds_idle_timeout(channel):
    channel, clock, transport = channel
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    HeldRequest.held[0].finish()
    clock.advance(60)
    assert transport.disconnecting


def test_the_command_line_has_the_option_and_refuses_nonsense():
    def serve(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "terminals.serve", *arguments]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert "--request-timeout" in serve("--help").stdout
    refused = serve("--request-timeout", "0", "webshell.asgi:application")
    assert refused.returncode == 2
    assert "--request-timeout must be a positive number of seconds" in refused.stderr


# End to end: raw sockets against a real Daphne started as deployed.


@contextlib.contextmanager
def daphne_with_deadline(kubesim) -> Iterator[Daphne]:
    arguments = ["--request-timeout", str(DEADLINE)]
    with run_daphne(daphne_environment(kubesim), arguments=arguments) as server:
        yield server


async def stall(server: Daphne, request: bytes) -> float:
    """Send ``request`` and nothing more; the seconds until the server closed the socket."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    opened = loop.time()
    writer.write(request)
    await writer.drain()
    try:
        assert await reader.read() == b""  # nothing sent back, then the close
    except ConnectionResetError:
        pass
    closed = loop.time() - opened
    writer.close()
    return closed


@pytest.mark.django_db(transaction=True)
async def test_fifty_stalled_upgrades_are_closed_within_the_deadline(kubesim):
    with daphne_with_deadline(kubesim) as server:
        async with asyncio.timeout(DEADLINE + 10):
            lifetimes = await asyncio.gather(*(stall(server, PARTIAL_UPGRADE) for _ in range(50)))
    assert min(lifetimes) >= DEADLINE - 0.5  # the deadline closed them, not an error
    assert max(lifetimes) <= DEADLINE + 2  # Twisted's clock and the machine's load


@pytest.mark.django_db(transaction=True)
async def test_silent_and_trickling_connections_are_closed_within_the_deadline(kubesim):
    async def trickle(server: Daphne) -> float:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        opened = loop.time()
        for byte in PARTIAL_UPGRADE:
            if reader.at_eof():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            # Paced on purpose: a byte every 0.2 s is what keeps Twisted's idle timer away.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await reader.read()
        closed = loop.time() - opened
        writer.close()
        return closed

    with daphne_with_deadline(kubesim) as server:
        async with asyncio.timeout(DEADLINE + 10):
            silent, trickled = await asyncio.gather(stall(server, b""), trickle(server))
    assert DEADLINE - 0.5 <= silent <= DEADLINE + 2
    assert DEADLINE - 0.5 <= trickled <= DEADLINE + 2


@pytest.mark.django_db(transaction=True)
async def test_a_terminal_outlives_the_deadline(kubesim):
    """The deadline is for the request only: an open terminal, and the page, go on."""
    cookie = await sync_to_async(lambda: session_cookie(make_user("alice", everywhere=True)))()
    with daphne_with_deadline(kubesim) as server:
        async with terminal(server, "/ws/terminals/kubesim/default/web/", cookie) as client:
            await client.until_message("ready")
            await asyncio.sleep(DEADLINE + 1)  # no event to await: time passing is the point
            assert b"still-here" in await run_line(client, say("still-here"), "still-here")
