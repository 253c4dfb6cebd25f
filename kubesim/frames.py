"""The exec channel protocol without I/O: subprotocols, frames, resize stream, Status JSON.

Reference: ``shared/reference/kube-exec-protocol.md`` sections 1-8.  Everything here is pure
(bytes in, values out), so it is tested on its own; ``kubesim.session`` does the I/O.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any


class Channel(IntEnum):
    """Channel numbers: the first byte of each data message."""

    STDIN = 0
    STDOUT = 1
    STDERR = 2
    ERROR = 3
    RESIZE = 4
    CLOSE = 255  # v5 only: [0xFF, channel] half-closes that channel


class Subprotocol(StrEnum):
    """WebSocket subprotocols of ``pods/exec``; ``NONE`` is a handshake without the header."""

    V5 = "v5.channel.k8s.io"
    V4 = "v4.channel.k8s.io"
    V4_BASE64 = "v4.base64.channel.k8s.io"
    V1 = "channel.k8s.io"
    V1_BASE64 = "base64.channel.k8s.io"
    NONE = ""

    @property
    def is_base64(self) -> bool:
        """Whether frames are TEXT ``'0'+channel`` followed by base64 data."""
        return self in (Subprotocol.V4_BASE64, Subprotocol.V1_BASE64)

    @property
    def has_status(self) -> bool:
        """Whether channel 3 carries a JSON Status (v4, v5) rather than plain text on failure."""
        return self in (Subprotocol.V5, Subprotocol.V4, Subprotocol.V4_BASE64)

    @property
    def has_close(self) -> bool:
        """Whether the ``[0xFF, channel]`` CLOSE signal exists."""
        return self is Subprotocol.V5


# Maximum number of bytes of process output per frame; the real translator copies 32 KiB.
MAX_CHUNK = 32 * 1024
# Channels that exist on the exec protocols (stdin..resize); higher ones are ignored.
CHANNEL_COUNT = 5
# A resize object is ~30 bytes; a client that keeps sending an unfinished one is broken.
MAX_RESIZE_BUFFER = 4096


class ProtocolError(ValueError):
    """A client message that breaks the channel protocol."""


def parse_subprotocols(header_values: Sequence[str]) -> list[str] | None:
    """The offered subprotocols from all ``Sec-WebSocket-Protocol`` headers, or None if absent.

    Clients differ: kubectl sends one value, the Python client sends ``"v5…,v4…"`` in one
    header, so every header is split on commas and stripped.
    """
    if not header_values:
        return None
    return [p.strip() for value in header_values for p in value.split(",") if p.strip()]


def select_subprotocol(offered: Sequence[str] | None) -> Subprotocol | None:
    """Choose the first offered subprotocol that is supported; None if none is.

    A handshake without the header gets ``Subprotocol.NONE`` (raw binary, like ``channel.k8s.io``).
    """
    if offered is None:
        return Subprotocol.NONE
    supported = {p.value for p in Subprotocol if p is not Subprotocol.NONE}
    for name in offered:
        if name in supported:
            return Subprotocol(name)
    return None


@dataclass(frozen=True)
class Data:
    """A data message: bytes for one channel."""

    channel: int
    data: bytes


@dataclass(frozen=True)
class Close:
    """A v5 CLOSE signal: the client will send nothing more on ``channel``."""

    channel: int


def encode(protocol: Subprotocol, channel: int, data: bytes) -> bytes | str:
    """Encode one server->client message: bytes for a BINARY frame, str for a TEXT frame."""
    if not 0 <= channel < CHANNEL_COUNT:
        # Never send CLOSE (0xFF) downstream: kubectl logs "Unknown stream id" for it.
        raise ValueError(f"cannot send on channel {channel}")
    if protocol.is_base64:
        return chr(ord("0") + channel) + base64.b64encode(data).decode("ascii")
    return bytes((channel,)) + data


def decode(protocol: Subprotocol, payload: bytes | str) -> Data | Close | None:
    """Decode one client->server message (BINARY or TEXT alike); None for an empty one."""
    raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    if not raw:
        return None
    if protocol.is_base64:
        channel = raw[0] - ord("0")
        try:
            data = base64.b64decode(raw[1:], validate=True)
        except binascii.Error as exc:
            raise ProtocolError(f"invalid base64 data on channel {channel}") from exc
        return Data(channel, data)
    if raw[0] == Channel.CLOSE and protocol.has_close:
        # Strict like the real server: exactly [0xFF, channel] for an existing channel.
        if len(raw) != 2 or raw[1] >= CHANNEL_COUNT:
            raise ProtocolError(f"invalid CLOSE signal {raw[:8]!r}")
        return Close(raw[1])
    return Data(raw[0], raw[1:])


def chunks(data: bytes, size: int = MAX_CHUNK) -> Iterable[bytes]:
    """Split output into frames of at most ``size`` bytes."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


# Resize stream ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TerminalSize:
    """A terminal size as sent on channel 4 (``{"Width":W,"Height":H}``)."""

    width: int
    height: int


class ResizeDecoder:
    """Incremental parser of the channel-4 JSON stream.

    One frame can hold several objects or a fragment of one (Go's ``json.Decoder`` on the
    server side), so data is buffered and parsed with ``raw_decode`` in a loop.
    """

    def __init__(self) -> None:
        self._text = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self._json = json.JSONDecoder()

    def feed(self, data: bytes) -> list[TerminalSize]:
        """Add bytes; return every complete size they finish. Raises ProtocolError."""
        try:
            self._text += self._utf8.decode(data)
        except UnicodeDecodeError as exc:
            raise ProtocolError("resize stream is not UTF-8") from exc
        sizes = []
        while True:
            text = self._text.lstrip(" \t\r\n")
            if not text:
                self._text = ""
                break
            if text[0] != "{":
                raise ProtocolError(f"resize stream: expected an object, got {text[:16]!r}")
            try:
                obj, end = self._json.raw_decode(text)
            except json.JSONDecodeError as exc:
                if _incomplete(exc, text):
                    self._text = text
                    break
                raise ProtocolError(f"resize stream: {exc.msg}") from exc
            sizes.append(_terminal_size(obj))
            self._text = text[end:]
        if len(self._text) > MAX_RESIZE_BUFFER:
            raise ProtocolError("resize stream: object too long")
        return sizes


def _incomplete(exc: json.JSONDecodeError, text: str) -> bool:
    # A fragment fails at its very end, except an unfinished string, which is reported
    # where the string starts.
    return exc.pos >= len(text) or exc.msg.startswith("Unterminated string")


def _terminal_size(obj: Any) -> TerminalSize:
    if not isinstance(obj, dict):
        raise ProtocolError("resize stream: expected an object")
    # Go's encoding/json matches field names case-insensitively.
    fields = {str(k).lower(): v for k, v in obj.items()}
    values = []
    for key in ("width", "height"):
        value = fields.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise ProtocolError(f"resize stream: {key} must be an integer 0-65535")
        values.append(value)
    return TerminalSize(*values)


def encode_resize(width: int, height: int) -> bytes:
    """A resize object the way Go's json.Encoder writes it (used by tests and clients)."""
    return json.dumps({"Width": width, "Height": height}, separators=(",", ":")).encode() + b"\n"


# Query parameters -------------------------------------------------------------------------


def parse_bool(values: Sequence[str]) -> bool:
    """Kubernetes' ``Convert_Slice_string_To_bool``: absent, "0", "false" are false; else true."""
    if not values:
        return False
    first = values[0]
    return not (first == "0" or first.lower() == "false")


# Status -----------------------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    """Compact JSON, as Go's encoding/json writes it (no spaces, dict order kept)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def success_status() -> dict[str, Any]:
    """Channel-3 Status for a command that exited 0."""
    return {"metadata": {}, "status": "Success"}


def exit_status(code: int, command: Sequence[str], protocol: Subprotocol) -> dict[str, Any]:
    """Channel-3 Status for a non-zero exit.

    The message is the v5 translator's wording, or the v4 container runtime's.
    """
    if protocol is Subprotocol.V5:
        text = f"command terminated with exit code {code}"
    else:
        text = f"error executing command [{' '.join(command)}], exit code {code}"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {text}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def internal_error_status(error: str) -> dict[str, Any]:
    """Channel-3 Status for a failure that is not an exit code (``apierrors.NewInternalError``)."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {error}",
        "reason": "InternalError",
        "details": {"causes": [{"message": error}]},
        "code": 500,
    }


def status_payload(status: dict[str, Any], protocol: Subprotocol) -> bytes | None:
    """What to write on channel 3: JSON on v4/v5; pre-v4 only the message text, only on failure."""
    if protocol.has_status:
        return dumps(status)
    if status["status"] == "Success":
        return None
    return str(status["message"]).encode("utf-8")


def api_status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An HTTP error body: a ``v1`` Status with kind/apiVersion, in the API server's field order."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        status["details"] = details
    status["code"] = code
    return status
