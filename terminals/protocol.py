"""The browser protocol: pure encoding and decoding, no I/O.

Client to server: binary frames are stdin bytes; text frames are JSON objects
``{"type": "stdin", "data": "ls\\r"}``, ``{"type": "resize", "cols": 120, "rows": 40}`` or
``{"type": "ack", "bytes": 65536}`` (flow control: output bytes the client has processed).
Server to client: binary frames are terminal output; text frames are ``ready``, ``exit`` and
``error`` messages. The README documents it for other clients.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeGuard

from django.utils.translation import gettext as _


class CloseCode(IntEnum):
    """WebSocket close codes the terminal socket ends with."""

    NORMAL = 1000
    INTERNAL_ERROR = 1011  # a bug: the session ended, its record says so
    SERVER_RESTARTING = 1012  # the server is stopping (a deploy); connect again
    TRY_AGAIN_LATER = 1013  # live watching is unavailable (the channel layer is down)
    BAD_REQUEST = 4400
    NOT_AUTHENTICATED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    IDLE = 4408
    ENDED_BY_AUDITOR = 4409
    MAX_DURATION = 4410
    RESUMED_ELSEWHERE = 4411  # another socket resumed this session (the page must not retry)
    FRAME_TOO_LARGE = 4413
    TOO_MANY_SESSIONS = 4429
    UPSTREAM_FAILED = 4502
    AUDIT_UNAVAILABLE = 4503


#: The ``code`` word of the error message sent before each close code.
ERROR_WORDS: dict[CloseCode, str] = {
    CloseCode.INTERNAL_ERROR: "internal_error",
    CloseCode.SERVER_RESTARTING: "server_restarting",
    CloseCode.TRY_AGAIN_LATER: "live_unavailable",
    CloseCode.BAD_REQUEST: "bad_request",
    CloseCode.NOT_AUTHENTICATED: "not_authenticated",
    CloseCode.FORBIDDEN: "forbidden",
    CloseCode.NOT_FOUND: "not_found",
    CloseCode.IDLE: "idle",
    CloseCode.ENDED_BY_AUDITOR: "ended_by_auditor",
    CloseCode.MAX_DURATION: "max_duration",
    CloseCode.RESUMED_ELSEWHERE: "resumed_elsewhere",
    CloseCode.FRAME_TOO_LARGE: "frame_too_large",
    CloseCode.TOO_MANY_SESSIONS: "too_many_sessions",
    CloseCode.UPSTREAM_FAILED: "upstream",
    CloseCode.AUDIT_UNAVAILABLE: "audit_unavailable",
}

# A terminal larger than this is a mistake or an attack; the kernel takes 16-bit sizes.
MAX_COLS = 1000
MAX_ROWS = 1000


class ProtocolError(Exception):
    """A client frame that ends the session with ``code`` and a message the page shows."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Stdin:
    data: bytes


@dataclass(frozen=True)
class Resize:
    cols: int
    rows: int


@dataclass(frozen=True)
class Ack:
    bytes: int


ClientMessage = Stdin | Resize | Ack


def decode_client_frame(
    text_data: str | None, bytes_data: bytes | None, max_size: int
) -> ClientMessage:
    """Turn one browser frame into a message, or raise :class:`ProtocolError`."""
    if bytes_data is not None:
        if len(bytes_data) > max_size:
            raise _too_large(len(bytes_data), max_size)
        return Stdin(bytes_data)
    if text_data is None:
        raise ProtocolError(CloseCode.BAD_REQUEST, _("Empty frame."))
    # len(str) <= len(utf-8 bytes) <= 4 * len(str): check cheaply before encoding.
    if len(text_data) > max_size or len(text_data.encode()) > max_size:
        raise _too_large(len(text_data.encode()), max_size)
    try:
        message = json.loads(text_data)
    except ValueError:
        raise ProtocolError(CloseCode.BAD_REQUEST, _("Text frames must be JSON objects.")) from None
    except RecursionError:
        # json nests by recursion: "[[[[…" 30,000 deep fits in a frame and would crash here.
        raise ProtocolError(CloseCode.BAD_REQUEST, _("Text frames nest too deeply.")) from None
    if not isinstance(message, dict):
        raise ProtocolError(CloseCode.BAD_REQUEST, _("Text frames must be JSON objects."))
    kind = message.get("type")
    if kind == "stdin":
        data = message.get("data")
        if not isinstance(data, str):
            raise ProtocolError(CloseCode.BAD_REQUEST, _('A stdin message needs a string "data".'))
        return Stdin(data.encode("utf-8", "surrogatepass"))
    if kind == "resize":
        cols, rows = message.get("cols"), message.get("rows")
        if not (_whole(cols) and _whole(rows)):
            raise ProtocolError(
                CloseCode.BAD_REQUEST,
                _('A resize message needs whole numbers "cols" and "rows".'),
            )
        if not (1 <= cols <= MAX_COLS and 1 <= rows <= MAX_ROWS):
            raise ProtocolError(
                CloseCode.BAD_REQUEST,
                _(
                    "Terminal size %(cols)sx%(rows)s is out of range "
                    "(1-%(max_cols)s columns, 1-%(max_rows)s rows)."
                )
                % {"cols": cols, "rows": rows, "max_cols": MAX_COLS, "max_rows": MAX_ROWS},
            )
        return Resize(cols, rows)
    if kind == "ack":
        count = message.get("bytes")
        if not _whole(count) or count < 0:
            raise ProtocolError(CloseCode.BAD_REQUEST, _('An ack message needs a whole "bytes".'))
        return Ack(count)
    raise ProtocolError(
        CloseCode.BAD_REQUEST, _("Unknown message type %(type)s.") % {"type": repr(kind)}
    )


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _too_large(size: int, max_size: int) -> ProtocolError:
    return ProtocolError(
        CloseCode.FRAME_TOO_LARGE,
        _("Frame of %(size)s bytes exceeds the limit of %(limit)s bytes.")
        % {"size": size, "limit": max_size},
    )


def ready_message(
    session: str,
    container: str,
    command: list[str],
    resume: str | None = None,
    resumed: bool = False,
    containers: list[str] | None = None,
    input_bytes: int | None = None,
) -> str:
    """The message sent once the exec is running, and again to a browser that resumed it;
    ``resume`` is the token to resume with next (none when resuming is off); ``input_bytes``
    the stdin bytes the session has taken so far (:func:`with_input` sets it on a resume)."""
    payload: dict[str, Any] = {
        "type": "ready",
        "session": session,
        "container": container,
        "command": command,
    }
    if containers:
        payload["containers"] = containers
    if resume is not None:
        payload["resume"] = resume
    if resumed:
        payload["resumed"] = True
    if input_bytes is not None:
        payload["input"] = input_bytes
    return json.dumps(payload)


def with_input(ready: str, input_bytes: int) -> str:
    """``ready`` (a :func:`ready_message`) saying that the session has taken ``input_bytes``
    stdin bytes: set by the process that holds the session, as the browser is attached."""
    payload = json.loads(ready)
    payload["input"] = input_bytes
    return json.dumps(payload)


def exit_message(code: int | None, message: str = "") -> str:
    """The message sent when the process ended; ``code`` is None if the cluster gave none."""
    payload: dict[str, Any] = {"type": "exit", "code": code}
    if message:
        payload["message"] = message
    return json.dumps(payload)


def error_message(code: CloseCode, message: str, word: str = "") -> str:
    """The message sent right before closing with ``code`` (``word``: other than its own)."""
    return json.dumps({"type": "error", "code": word or ERROR_WORDS[code], "message": message})
