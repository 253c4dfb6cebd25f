"""The clusters' shared HTTP clients (terminals.kube.http) and what a session does with them.

In process: one client per loop and cluster, closed with its loop or at Daphne's shutdown once
the sessions have ended; no connection limit and no cookie jar (against small aiohttp servers of
the test's own); the TLS read buffer of real TLS connections to kubesim. ``Upstream`` on kubesim,
counting the connections the kernel has open: ending a session closes its exec's connection and
leaves the others alone. End to end, through a Daphne: the same, seen from its process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import time
import uuid
from asyncio import sslproto
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from asgiref.sync import sync_to_async

from terminals import servers
from terminals.kube import http
from terminals.kube.exec import ExecStatus, Output
from terminals.permissions import ExecTarget
from terminals.protocol import CloseCode
from terminals.session.ending import EndSession
from terminals.session.upstream import Upstream
from tests.fixtures.daphne import daphne_environment, run_daphne
from tests.fixtures.kubesim import exec_path as kubesim_exec_path
from tests.fixtures.terminal_client import run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie

ASYNCIO_READ_BUFFER = 256 * 1024  # asyncio.sslproto.SSLProtocol.max_size on 3.11-3.13
CONNECTIONS_TIMEOUT = 10.0


# Helpers: a process's TCP connections to a port, as the kernel has them.


def established(pid: int, port: int) -> int:
    """How many TCP connections process ``pid`` holds established to ``port``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes and int(remote.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


async def until_established(pid: int, port: int, expected: int) -> None:
    """Wait until ``pid`` holds ``expected`` connections to ``port``."""
    deadline = time.monotonic() + CONNECTIONS_TIMEOUT
    while (found := established(pid, port)) != expected:
        assert time.monotonic() < deadline, f"{found} connections to :{port}, not {expected}"
        await asyncio.sleep(0.02)  # the kernel's table: nothing to await but a poll


# One client per loop and cluster.


async def test_one_client_per_cluster_on_a_loop():
    first = await http.client_for("prod")
    assert await http.client_for("prod") is first
    other = await http.client_for("staging")
    assert other is not first
    assert not first.closed and not other.closed
    # No limit: aiohttp's default of 100 connections stalled the 101st terminal.
    assert first.connector is not None and first.connector.limit == 0
    assert first.connector.limit_per_host == 0
    await http.close_clients()


async def test_close_clients_closes_them_and_the_next_use_makes_new_ones():
    first = await http.client_for("prod")
    await http.close_clients()
    assert first.closed
    again = await http.client_for("prod")
    assert again is not first and not again.closed
    await http.close_clients()


async def test_another_loop_has_its_own_clients_closed_when_it_shuts_down():
    ours = await http.client_for("prod")

    async def use() -> aiohttp.ClientSession:
        return await http.client_for("prod")

    # asyncio.run() shuts the loop's asynchronous generators down before closing it.
    theirs = await asyncio.to_thread(asyncio.run, use())
    assert theirs is not ours
    assert theirs.closed
    assert not ours.closed
    await http.close_clients()
    assert ours.closed


async def test_the_101st_request_at_once_is_not_kept_waiting():
    arrived = 0
    all_in = asyncio.Event()
    wanted = 150

    async def handler(request: web.Request) -> web.Response:
        # Every request waits here until all of them are in: with a limit, the last never are.
        nonlocal arrived
        arrived += 1
        if arrived == wanted:
            all_in.set()
        await all_in.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestServer(app) as server:
        client = await http.client_for("many")

        async def get() -> str:
            async with client.get(server.make_url("/")) as response:
                return await response.text()

        async with asyncio.timeout(10):
            answers = await asyncio.gather(*(get() for _ in range(wanted)))
    assert answers == ["ok"] * wanted
    await http.close_clients()


async def test_no_cookie_of_one_request_goes_out_with_another():
    # Sessions of different people share the client: a cookie an API server (or a proxy in
    # front of it) set for one would otherwise be sent with the others' requests.
    async def login(request: web.Request) -> web.Response:
        response = web.Response(text="in")
        response.set_cookie("proxy-session", "alice")
        return response

    async def whoami(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Cookie", "nobody"))

    app = web.Application()
    app.router.add_get("/login", login)
    app.router.add_get("/whoami", whoami)
    async with TestServer(app) as server:
        # A host name: aiohttp's cookie jar ignores cookies of IP addresses.
        url = f"http://localhost:{server.port}"
        client = await http.client_for("cookies")
        async with client.get(url + "/login") as response:
            assert response.cookies["proxy-session"].value == "alice"
        async with client.get(url + "/whoami") as response:
            assert await response.text() == "nobody"
    await http.close_clients()


# The TLS read buffer.


async def open_execs(sessions: list[Any], count: int) -> list[Any]:
    """``count`` execs of ``sh``, each through an upstream of its own (closed by ``sessions``)."""
    streams = []
    for _ in range(count):
        one = upstream()
        sessions.append(one)
        await one.connect()
        streams.append(await one.open("main", ["sh"]))
    return streams


def tls_protocol(ws: aiohttp.ClientWebSocketResponse) -> Any:
    """The asyncio TLS protocol of a WebSocket's connection (aiohttp's and asyncio's insides)."""
    return ws._response.connection.transport._ssl_protocol


def exec_read_buffer(ws: aiohttp.ClientWebSocketResponse) -> int:
    """The size of the buffer a WebSocket's TLS connection reads the socket into."""
    return int(tls_protocol(ws).get_buffer(-1).nbytes)


async def test_exec_connections_read_into_one_small_buffer_of_the_thread(kubesim, sessions):
    streams = await open_execs(sessions, 2)
    protocols = [tls_protocol(stream._ws) for stream in streams]
    buffers = [protocol.get_buffer(-1) for protocol in protocols]

    assert exec_read_buffer(streams[0]._ws) == http.TLS_READ_BUFFER == 32 * 1024
    assert buffers[0].obj is buffers[1].obj  # one for both
    assert [len(protocol._ssl_buffer) for protocol in protocols] == [0, 0]  # none of their own
    elsewhere = await asyncio.to_thread(http._read_buffer)
    assert elsewhere.obj is not buffers[0].obj  # another thread's loop has its own


async def test_other_tls_connections_of_the_process_keep_asyncios_buffer(kubesim):
    path = kubesim_exec_path("web", ["sh"], stdin=True, stdout=True, tty=True)
    async with aiohttp.ClientSession() as elsewhere:
        ws = await elsewhere.ws_connect(
            kubesim.url + path,
            protocols=("v5.channel.k8s.io",),
            headers=kubesim.headers(),
            ssl=kubesim.ssl_context(),
        )
        assert exec_read_buffer(ws) == ASYNCIO_READ_BUFFER
        await ws.close()
    assert sslproto.SSLProtocol.max_size == ASYNCIO_READ_BUFFER


async def test_a_certificate_that_does_not_verify_fails_as_aiohttp_reports_it(kubesim):
    client = await http.client_for("kubesim")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        # The system's CAs do not know kubesim's.
        await client.get(kubesim.url + "/version", ssl=ssl.create_default_context())
    await http.close_clients()


async def test_a_server_that_is_not_tls_fails_as_aiohttp_reports_it():
    app = web.Application()
    async with TestServer(app) as server:
        client = await http.client_for("plain")
        with pytest.raises(aiohttp.ClientConnectorSSLError):
            await client.get(f"https://127.0.0.1:{server.port}/", ssl=ssl.create_default_context())
    await http.close_clients()


# Upstream on the shared client, against kubesim.

WEB = ExecTarget("kubesim", "default", "web", "main")


class Denials:
    """Upstream's denial recorder."""

    def __init__(self) -> None:
        self.recorded: list[tuple[ExecTarget, CloseCode, str]] = []

    async def __call__(self, target: ExecTarget, code: CloseCode, message: str) -> None:
        self.recorded.append((target, code, message))


def upstream(target: ExecTarget = WEB, headers: list[tuple[str, str]] | None = None) -> Upstream:
    return Upstream(target, headers or [], 10, 20, Denials())


async def output_until(stream: Any, marker: bytes) -> bytes:
    """Output of an exec until ``marker`` (fails if the exec ends first)."""
    seen = b""
    async with asyncio.timeout(20):
        while marker not in seen:
            received = await stream.receive()
            assert isinstance(received, Output), f"the exec ended: {received}"
            seen += received.data
    return seen


@pytest.fixture
async def sessions(kubesim_settings):
    """Upstreams made by the test, closed afterwards with the loop's clients."""
    made: list[Upstream] = []
    yield made
    for one in made:
        await one.close()
    await http.close_clients()


async def test_ending_a_session_closes_its_exec_and_its_connection_only(kubesim, sessions):
    pid = os.getpid()
    before = established(pid, kubesim.port)
    streams = await open_execs(sessions, 3)
    await until_established(pid, kubesim.port, before + 3)
    client = await http.client_for("kubesim")

    await sessions[0].close()

    assert streams[0].closed
    await until_established(pid, kubesim.port, before + 2)
    assert not client.closed  # shared: the others go on
    for stream in streams[1:]:
        await stream.send_stdin(f"{say('still-here')}\r".encode())
        assert b"still-here" in await output_until(stream, b"still-here")
    for one in sessions[1:]:
        await one.close()
    await until_established(pid, kubesim.port, before)


async def test_each_session_acts_with_its_own_headers_on_the_shared_client(kubesim, sessions):
    api = ExecTarget("kubesim", "dev", "api", "main")
    as_alice = upstream(api, [("Impersonate-User", "alice")])
    as_bob = upstream(api, [("Impersonate-User", "bob")])
    sessions += [as_alice, as_bob]
    await as_alice.connect()
    await as_bob.connect()

    with pytest.raises(EndSession) as refused:
        await as_bob.open("main", ["sh"])
    stream = await as_alice.open("main", ["sh"])

    assert 'User "bob" cannot create resource "pods/exec"' in refused.value.ending.message
    await stream.send_stdin(f"{say('alice-in')}\r".encode())
    assert b"alice-in" in await output_until(stream, b"alice-in")


async def test_output_larger_than_the_read_buffer_arrives_whole(kubesim, sessions, tmp_path):
    # Two sessions at once: their connections read through the same buffer.
    # kubesim's pods are processes of this host: the files are theirs to read.
    files = []
    for number in range(2):
        data = os.urandom(1024 * 1024)
        path = tmp_path / f"random-{number}.bin"
        path.write_bytes(data)
        files.append((path, data))

    async def cat(path: Path) -> tuple[ExecStatus, bytes]:
        one = upstream()
        sessions.append(one)
        await one.connect()
        stream = await one.open("main", ["sh", "-c", f"stty raw -echo; cat {path}"])
        received = bytearray()
        async with asyncio.timeout(30):
            while not isinstance(status := await stream.receive(), ExecStatus):
                received += status.data
        return status, bytes(received)

    results = await asyncio.gather(*(cat(path) for path, _ in files))
    for (status, received), (_, data) in zip(results, files, strict=True):
        assert status.code == 0
        assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()


# Under Daphne: closed at shutdown, once the sessions have ended.


class Reactor:
    """The part of Twisted's reactor that ``start_with_daphne`` uses, run by the test."""

    def __init__(self) -> None:
        self.when_running: list[Callable[[], None]] = []
        self.triggers: dict[tuple[str, str], Callable[[], Any]] = {}

    def callWhenRunning(self, callback: Callable[[], None]) -> None:
        self.when_running.append(callback)

    def callLater(self, delay: float, callback: Callable[[], None]) -> None:
        pass  # the heartbeats: not wanted here

    def addSystemEventTrigger(self, phase: str, event: str, callback: Callable[[], Any]) -> None:
        self.triggers[phase, event] = callback


@pytest.fixture
def fresh_registry():
    servers.registry.cache_clear()
    yield servers.registry()
    servers.registry.cache_clear()


async def test_daphnes_shutdown_closes_the_clients_after_the_sessions_end(fresh_registry):
    reactor = Reactor()
    servers.start_with_daphne(reactor)
    for callback in reactor.when_running:
        callback()
    client = await http.client_for("prod")
    session = uuid.uuid4()
    client_closed_when_the_session_ended = []

    async def end_session() -> None:
        client_closed_when_the_session_ended.append(client.closed)
        fresh_registry.untrack(session)

    fresh_registry.track(session, lambda: None, on_stop=end_session)

    stopping = reactor.triggers["before", "shutdown"]()  # SIGTERM: Twisted waits for it
    await stopping.asFuture(asyncio.get_running_loop())

    assert client_closed_when_the_session_ended == [False]
    assert client.closed


# End to end: a Daphne.

WEB_PATH = "/ws/terminals/kubesim/default/web/?container=main"


@pytest.mark.django_db(transaction=True)
async def test_terminals_open_and_close_their_connections_through_daphne(kubesim):
    env = await sync_to_async(daphne_environment)(kubesim)
    cookie = await sync_to_async(lambda: session_cookie(make_user("sam", everywhere=True)))()
    with run_daphne(env) as server:
        pid = server.process.pid
        async with (
            terminal(server, WEB_PATH, cookie) as first,
            terminal(server, WEB_PATH, cookie) as second,
            terminal(server, WEB_PATH, cookie) as third,
        ):
            for client in (first, second, third):
                await client.until_message("ready")
            await until_established(pid, kubesim.port, 3)
            await first.close()  # the browser goes: its session ends, and its exec
            await until_established(pid, kubesim.port, 2)
            assert b"still-here" in await run_line(second, say("still-here"), "still-here")
        await until_established(pid, kubesim.port, 0)
        # One more after the others have gone: the shared client is still there and works.
        async with terminal(server, WEB_PATH, cookie) as fourth:
            await fourth.until_message("ready")
            await until_established(pid, kubesim.port, 1)
            assert b"fourth" in await run_line(fourth, say("fourth"), "fourth")
