"""The async exec upstream: ``pods/exec`` over a WebSocket, v5 preferred and v4 accepted.

Plain aiohttp, as serious Python clients do it: the ``kubernetes`` package's own stream client
blocks, decodes each frame as UTF-8 and misreads statuses (see the protocol reference, §14).
Output stays bytes; the one Status on channel 3 gives the exit code.

The functions take the HTTP client to use (the cluster's shared one, :mod:`.http`, in the
product); what belongs to one person goes with each request: the credentials and impersonation
headers, and the TLS context.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from multidict import CIMultiDict

from .clusters import Connection

V5_PROTOCOL = "v5.channel.k8s.io"
V4_PROTOCOL = "v4.channel.k8s.io"
PROTOCOLS = (V5_PROTOCOL, V4_PROTOCOL)


class Channel(IntEnum):
    """Channel bytes of the Kubernetes streaming protocol."""

    STDIN = 0
    STDOUT = 1
    STDERR = 2
    ERROR = 3
    RESIZE = 4
    CLOSE = 255


@dataclass(frozen=True)
class ExecStatus:
    """How the exec ended, from the Status on channel 3."""

    code: int | None  # exit code; None if the process never ran or the status was lost
    reason: str  # "Success", "NonZeroExitCode", "InternalError", … or "" if none came
    message: str

    @property
    def executable_not_found(self) -> bool:
        """True when the command does not exist in the container (try the next shell)."""
        text = self.message.lower()
        return self.code is None and (
            "executable file not found" in text or "no such file or directory" in text
        )


def parse_status(raw: bytes) -> ExecStatus:
    """Decode channel 3, reading ``causes[reason=ExitCode]`` (not ``causes[0]``, a known bug)."""
    if not raw:
        return ExecStatus(code=None, reason="", message="The cluster sent no exit status.")
    try:
        status = json.loads(raw)
    except ValueError:
        # Pre-v4 servers send plain text, and only on failure.
        return ExecStatus(code=None, reason="", message=raw.decode("utf-8", "replace"))
    if not isinstance(status, dict):
        return ExecStatus(code=None, reason="", message="The cluster sent an unreadable status.")
    if status.get("status") == "Success":
        return ExecStatus(code=0, reason="Success", message="")
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    if reason == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                try:
                    return ExecStatus(
                        code=int(str(cause.get("message"))), reason=reason, message=""
                    )
                except (TypeError, ValueError):
                    break
    return ExecStatus(code=None, reason=reason, message=message)


class KubernetesError(Exception):
    """The API server refused a request, with its Status reason and message."""

    def __init__(self, http_status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.reason = reason
        self.message = message

    @classmethod
    def from_response(cls, http_status: int, body: bytes) -> KubernetesError:
        """Build the error from an HTTP status and a ``Status`` body (or any body)."""
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("kind") == "Status":
            return cls(http_status, str(status.get("reason", "")), str(status.get("message", "")))
        text = body.decode("utf-8", "replace").strip()[:500]
        return cls(http_status, "", text or f"HTTP {http_status}")


def exec_path(
    namespace: str, pod: str, command: list[str], container: str | None, tty: bool = True
) -> str:
    """The ``pods/exec`` path with its query, encoded as ``PodExecOptions``."""
    query: list[tuple[str, str]] = [("command", part) for part in command]
    if container:
        query.append(("container", container))
    query += [("stdin", "true"), ("stdout", "true"), ("tty", "true" if tty else "false")]
    if not tty:
        query.append(("stderr", "true"))
    return (
        f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}/exec?"
        + urlencode(query, quote_via=quote)
    )


#: Extra request headers; a list, because Impersonate-Group may repeat.
Headers = Iterable[tuple[str, str]]


def request_headers(connection: Connection, extra: Headers, accept: str = "") -> CIMultiDict[str]:
    """The connection's credentials plus ``extra``, keeping repeated headers."""
    headers = CIMultiDict(connection.headers)
    for name, value in extra:
        headers.add(name, value)
    if accept:
        headers["Accept"] = accept
    return headers


async def get_json(
    http: aiohttp.ClientSession,
    connection: Connection,
    path: str,
    headers: Headers,
    timeout: float,
) -> dict[str, Any]:
    """GET an API path and return its JSON, or raise :class:`KubernetesError`."""
    async with http.get(
        connection.url(path),
        headers=request_headers(connection, headers, "application/json"),
        ssl=connection.ssl,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        body = await response.read()
        if response.status != 200:
            raise KubernetesError.from_response(response.status, body)
    result = json.loads(body)
    if not isinstance(result, dict):
        raise KubernetesError(502, "", "The API server sent an unexpected answer.")
    return result


@dataclass(frozen=True)
class Output:
    """Bytes the process wrote to its terminal."""

    data: bytes


class ExecStream:
    """One running exec: write stdin and resizes, read output until the Status arrives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._status = bytearray()
        self.protocol: str = ws.protocol or ""

    async def send_stdin(self, data: bytes) -> None:
        """Write bytes to the process's stdin."""
        await self._ws.send_bytes(bytes((Channel.STDIN,)) + data)

    async def send_resize(self, cols: int, rows: int) -> None:
        """Resize the terminal; Kubernetes reads channel 4 as a stream of JSON objects."""
        size = json.dumps({"Width": cols, "Height": rows}).encode() + b"\n"
        await self._ws.send_bytes(bytes((Channel.RESIZE,)) + size)

    async def receive(self) -> Output | ExecStatus:
        """The next output, or the final status once the server closes the stream."""
        while True:
            message = await self._ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                data: bytes = message.data
                if not data:
                    continue
                channel = data[0]
                if channel in (Channel.STDOUT, Channel.STDERR):
                    if len(data) > 1:
                        return Output(data[1:])
                elif channel == Channel.ERROR:
                    self._status += data[1:]
                # The initial empty frame and unknown channels carry nothing for us.
                continue
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return parse_status(bytes(self._status))
            # TEXT frames are not part of the binary protocols; ignore them as kubectl would not.

    @property
    def closed(self) -> bool:
        """True once the WebSocket is closed."""
        return self._ws.closed

    async def close(self) -> None:
        """Close the exec; the API server hangs up the process."""
        await self._ws.close()


# Seconds the API server has to answer the close of an exec; then the connection is cut. A
# session's end waits for it, and the process is hung up either way.
HANGUP_TIMEOUT = 2.0


async def open_exec(
    http: aiohttp.ClientSession,
    connection: Connection,
    path: str,
    headers: Headers,
    timeout: float,
    heartbeat: float,
) -> ExecStream:
    """Open the exec WebSocket, or raise :class:`KubernetesError` with the server's Status."""
    try:
        ws = await http.ws_connect(
            connection.ws_url(path),
            protocols=PROTOCOLS,
            headers=request_headers(connection, headers),
            ssl=connection.ssl,
            heartbeat=heartbeat,
            max_msg_size=0,
            autoping=True,
            compress=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=HANGUP_TIMEOUT),
        )
    except aiohttp.WSServerHandshakeError as exc:
        raise await _refusal(http, connection, path, headers, exc) from exc
    if ws.protocol not in PROTOCOLS:
        await ws.close()
        raise KubernetesError(
            502, "", f"The API server chose no exec protocol we speak ({ws.protocol!r})."
        )
    return ExecStream(ws)


async def _refusal(
    http: aiohttp.ClientSession,
    connection: Connection,
    path: str,
    headers: Headers,
    exc: aiohttp.WSServerHandshakeError,
) -> KubernetesError:
    """Read the Status of a refused handshake, which aiohttp discards.

    kubectl gets it by retrying over SPDY; we repeat the request without the upgrade, which
    the API server refuses for the same reason (authorization, pod, container) with the same
    Status, before it would complain about the missing upgrade.
    """
    fallback = KubernetesError(
        exc.status, "", f"The API server refused the exec (HTTP {exc.status})."
    )
    try:
        async with http.get(
            connection.url(path),
            headers=request_headers(connection, headers, "application/json"),
            ssl=connection.ssl,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response:
            error = KubernetesError.from_response(response.status, await response.read())
    except (aiohttp.ClientError, TimeoutError):
        return fallback
    if error.http_status == exc.status and error.message:
        return error
    return fallback
