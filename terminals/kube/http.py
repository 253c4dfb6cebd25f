"""One HTTP client per event loop and cluster, shared by every request to that API server.

Each terminal's exec needs a TCP (and TLS) connection of its own, since a WebSocket cannot share
one, but nothing else needs to be per terminal: the :class:`aiohttp.ClientSession`, its connector
and pool, its DNS cache and the TLS settings are made once per cluster and event loop, on first use
(:func:`client_for`). What is per terminal stays per request: the credentials and impersonation
headers (``exec.request_headers``) and the TLS context (``Connection.ssl``), which may change when a
kubeconfig is reloaded. The client keeps no cookies, so that nothing one person's request brought
back is ever sent with another's. Ending a terminal closes its exec WebSocket, and with it that
connection (``Upstream.close``); the shared client stays open.

No limit on connections: aiohttp's default of 100 made the 101st terminal wait for a free
connection until its connect timed out.

**Closing.** The clients of a loop are closed when the loop shuts down its asynchronous
generators, which ``asyncio.run()``, ``asyncio.Runner`` (pytest-asyncio's loops) and asgiref's
``async_to_sync`` do before they close it. Daphne's reactor stops its loop without that, so the
server registry's shutdown trigger calls :func:`close_clients` once the sessions have ended
(``terminals.servers.start_with_daphne``): the pooled connections are closed, not cut by the
exit, and no "Unclosed client session" is left for aiohttp to report.

**A TLS read buffer sized for terminals, shared.** asyncio's TLS protocol
(``asyncio.sslproto.SSLProtocol``, the same on Python 3.11, 3.12 and 3.13) allocates a read
buffer of ``max_size``, a class attribute of 256 KiB, for every connection as it is built, and
reads the socket and the decrypted stream in chunks of that size. For an idle terminal that
buffer was 253 of the 434 KiB it cost. The clients' connector builds each TLS connection with
:class:`TerminalTLSProtocol`, the same protocol reading in chunks of :data:`TLS_READ_BUFFER`:
asyncio's ``create_connection(ssl=…)`` always builds its own class, so the connector opens the
TCP connection with the TLS protocol as its protocol, which then does the handshake as it would
have (``create_connection`` does exactly that, after building it). Per connection, so other TLS
users of the process (a TLS Redis, say) keep asyncio's default; process-wide would have been
one assignment to ``SSLProtocol.max_size``. Terminal output arrives in chunks of the PTY's size
(a few KiB), and the exec's WebSocket frames are reassembled from reads of any size: a 64 MiB
``cat`` through Daphne cost the same Daphne CPU per MiB within the noise; a bare client reading
kubesim's large frames spends a few per cent more CPU per MiB in its reads.

The buffer only holds a read between the socket and the TLS object: the transport asks for it
(``get_buffer``), reads the socket into it and hands the bytes over (``buffer_updated``, whose
first step copies them into the TLS object's incoming BIO), all in one call of the event loop,
without yielding. So the connections of a thread share one buffer (:func:`_read_buffer`), and
the one asyncio allocated as it built the protocol is let go at once, before any other
connection can be built: an idle terminal's connection holds none (32 of the 180 KiB an idle
session cost). Shrinking asyncio's buffer later would not do: the buffers allocated
meanwhile by many connects at once stay in the heap (with 256 KiB ones, 100 sessions opened at
once cost 288-405 KiB per idle session, against 207-210 with 32 KiB ones and 432 before).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from asyncio import selector_events, sslproto
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

logger = logging.getLogger(__name__)

#: Bytes each TLS connection to an API server reads into at most (asyncio's default: 256 KiB).
TLS_READ_BUFFER = 32 * 1024


class _ThreadBuffer(threading.local):
    view: memoryview | None = None


_thread_buffer = _ThreadBuffer()
_NO_BUFFER = bytearray()


def _read_buffer() -> memoryview:
    """The calling thread's TLS read buffer, of :data:`TLS_READ_BUFFER` bytes, made on first use."""
    view = _thread_buffer.view
    if view is None:
        view = _thread_buffer.view = memoryview(bytearray(TLS_READ_BUFFER))
    return view


class TerminalTLSProtocol(sslproto.SSLProtocol):
    """asyncio's TLS protocol, reading in chunks of :data:`TLS_READ_BUFFER` bytes into the
    thread's shared read buffer."""

    max_size = TLS_READ_BUFFER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Sharing needs the buffer filled and handed over within one callback, as a selector
        # loop does (a proactor loop does too, from a buffer of its own transport); other loops
        # are not relied on, and their connections keep a buffer each.
        self._shares_buffer = isinstance(self._loop, selector_events.BaseSelectorEventLoop)
        if self._shares_buffer:
            # Let asyncio's own buffer of this connection go now; reads use the shared one.
            self._ssl_buffer = _NO_BUFFER
            self._ssl_buffer_view = _read_buffer()

    def get_buffer(self, n: int) -> memoryview:
        """The shared buffer, for one read; ``buffer_updated`` copies the bytes out of it."""
        if not self._shares_buffer:
            return super().get_buffer(n)
        return self._ssl_buffer_view  # the thread's, set as the protocol was built


class ClusterConnector(aiohttp.TCPConnector):
    """aiohttp's TCP connector, whose TLS connections are :class:`TerminalTLSProtocol` ones."""

    async def _wrap_create_connection(
        self, *args: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        # aiohttp calls this for each new connection with the loop.create_connection()
        # arguments (proxy connectors such as aiohttp-socks override it too); the base class
        # resolves, connects with happy eyeballs, bounds the time and maps the errors.
        context = kwargs.get("ssl")
        if not isinstance(context, ssl.SSLContext) or not isinstance(
            self._loop, asyncio.BaseEventLoop
        ):
            return await super()._wrap_create_connection(*args, **kwargs)  # uvloop: its own TLS
        make_protocol, *rest = args
        handshake: asyncio.Future[None] = self._loop.create_future()
        made: list[ResponseHandler] = []

        def tls_protocol() -> TerminalTLSProtocol:
            made.append(make_protocol())
            return TerminalTLSProtocol(
                self._loop, made[0], context, handshake, server_hostname=kwargs["server_hostname"]
            )

        plain = {**kwargs, "ssl": None, "server_hostname": None}
        tcp, _ = await super()._wrap_create_connection(tls_protocol, *rest, **plain)
        try:
            async with asyncio.timeout(kwargs["timeout"].sock_connect):
                await handshake
        except BaseException as exc:
            tcp.close()
            error = _connect_error(exc, kwargs["req"], kwargs.get("client_error"))
            if error is None:
                raise  # a timeout or a cancellation, as it is
            raise error from exc
        app = made[0]
        assert app.transport is not None  # set by the TLS protocol once the handshake is done
        return app.transport, app


def _connect_error(
    exc: BaseException, req: Any, client_error: type[Exception] | None
) -> Exception | None:
    """A failed handshake as aiohttp reports one (None: raise it as it is)."""
    if isinstance(exc, ssl.CertificateError):
        return aiohttp.ClientConnectorCertificateError(req.connection_key, exc)
    if isinstance(exc, ssl.SSLError):
        return aiohttp.ClientConnectorSSLError(req.connection_key, exc)
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        return (client_error or aiohttp.ClientConnectorError)(req.connection_key, exc)
    return None


def new_client() -> aiohttp.ClientSession:
    """An HTTP client for one cluster: no connection limit, no cookies, TLS per request."""
    return aiohttp.ClientSession(
        connector=ClusterConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar()
    )


class _LoopClients:
    """The clients of one event loop, by cluster name, closed together."""

    def __init__(self) -> None:
        self.by_cluster: dict[str, aiohttp.ClientSession] = {}
        self.closer: AsyncGenerator[None, None] | None = None

    async def close(self) -> None:
        clients, self.by_cluster = list(self.by_cluster.values()), {}
        for client in clients:
            await client.close()


_loops: dict[asyncio.AbstractEventLoop, _LoopClients] = {}


async def client_for(cluster: str) -> aiohttp.ClientSession:
    """The running loop's HTTP client for ``cluster``, made on first use. Do not close it."""
    loop = asyncio.get_running_loop()
    clients = _loops.get(loop)
    if clients is None:
        _forget_closed_loops()
        clients = _loops[loop] = _LoopClients()
        clients.closer = _closed_with_loop(loop, clients)
        await anext(clients.closer)  # registered with the loop, which closes it at shutdown
    client = clients.by_cluster.get(cluster)
    if client is None or client.closed:
        logger.debug("A new HTTP client for cluster %s", cluster)
        client = clients.by_cluster[cluster] = new_client()
    return client


async def close_clients() -> None:
    """Close the running loop's clients and their connections; later use makes new ones."""
    clients = _loops.pop(asyncio.get_running_loop(), None)
    if clients is not None and clients.closer is not None:
        await clients.closer.aclose()


async def _closed_with_loop(
    loop: asyncio.AbstractEventLoop, clients: _LoopClients
) -> AsyncGenerator[None, None]:
    """Suspended until the loop shuts down its asynchronous generators (or close_clients)."""
    try:
        yield
    finally:
        if _loops.get(loop) is clients:
            del _loops[loop]
        await clients.close()


def _forget_closed_loops() -> None:
    # A loop closed without shutting down its generators took its clients' connections with
    # it; nothing can close them now, and they should not be kept for ever.
    for loop in [loop for loop in _loops if loop.is_closed()]:
        del _loops[loop]
