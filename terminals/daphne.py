"""A small, documented extension of Daphne: the server close codes 1011-1014.

RFC 6455 (7.4.1) and the IANA registry give servers 1011 (internal error), 1012 (service
restart), 1013 (try again later) and 1014 (bad gateway). Daphne closes a socket with
autobahn's ``sendClose()``, which accepts only 1000 and 3000-4999 from applications, so an
ASGI ``websocket.close`` with 1012 raised and the browser saw a bare 1006 instead. Installed
once per Daphne process (``TerminalsConfig.ready``), these four codes go out through autobahn's
lower-level ``sendCloseFrame()``, which writes the same close frame without the check; every
other code takes Daphne's own path unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

SERVER_CLOSE_CODES = frozenset({1011, 1012, 1013, 1014})


def allow_server_close_codes() -> None:
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
