"""TerminalConsumer: the Channels hooks of a terminal, and nothing else.

``connect`` admits the connect (:mod:`terminals.session.admission`) and starts a
:class:`~terminals.session.core.TerminalSession`; ``receive`` decodes browser frames and hands
them over; ``disconnect``, an auditor's ``terminal.terminate`` and the server's cancellation
(SIGTERM) end it through its one end path. Any exception here ends the session too, with 1011
and a message: a bug never leaves a record live or a process running in the pod.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async

from . import live, protocol, records
from .clients import client_address
from .conf import get_config
from .permissions import ExecTarget
from .protocol import CloseCode, ProtocolError
from .servers import registry
from .session.admission import Admission
from .session.assembly import assemble
from .session.core import TerminalSession
from .session.ending import (
    Ending,
    EndSession,
    browser_closed,
    ended_by_auditor,
    internal_error,
    server_stopping,
)

logger = logging.getLogger(__name__)

ENDED_ELSEWHERE = (
    "This session's record was ended elsewhere (its server was taken for lost); it is closed."
)


class TerminalConsumer(live.ResilientConsumer):
    """Bridges a browser terminal to a shell in a pod; see the module docstring."""

    session: TerminalSession | None = None

    async def connect(self) -> None:
        self.socket_closed = asyncio.Event()
        # Refusals go after accept(), as an error message and a close code, so the page can
        # say why; a refused handshake would only show "connection failed".
        await self.accept()
        try:
            await self._open()
        except Exception:
            logger.exception("Opening a terminal failed")
            await self._fail()

    async def _open(self) -> None:
        config = get_config()
        servers = registry()
        await servers.ensure_started()
        admission = Admission(self.scope, config, servers.server_id, servers.stopping)
        try:
            admitted = await admission.admit()
        except EndSession as end:
            await self._refuse(end.ending)
            return
        session = self.session = assemble(
            admitted, admission, self, self.channel_layer, config, servers
        )
        servers.track(session.id, self._ended_elsewhere, self.server_stopping)
        session.start()
        self.join_soon(live.terminal_group(session.id))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        session = self.session
        if session is None:
            return
        try:
            message = protocol.decode_client_frame(
                text_data, bytes_data, get_config()["MAX_FRAME_SIZE"]
            )
        except ProtocolError as error:
            await session.end(Ending.of(error.code, error.message))
            return
        try:
            await session.handle(message)
        except Exception:
            logger.exception("Terminal session %s failed on a browser frame", session.id)
            await session.end(internal_error())

    async def disconnect(self, code: int) -> None:
        self.socket_closed.set()
        if self.session is not None:
            await self.session.end(browser_closed(code))
        await self.leave_groups()

    async def cancelled(self) -> None:
        """Daphne cancelled this consumer (it does at shutdown): end the session with 1012."""
        # No disconnect will come to a cancelled consumer: nobody may wait for one.
        if (closed := getattr(self, "socket_closed", None)) is not None:
            closed.set()
        await self.server_stopping(wait_for_close=False)

    async def server_stopping(self, wait_for_close: bool = True) -> None:
        """The server is stopping: end the session with 1012, bounded by DRAIN_TIMEOUT, and
        (from the registry's shutdown hook) wait for the browser's close reply, so that the
        close frame has left before Daphne drops every connection."""
        if self.session is None:
            return
        try:
            async with asyncio.timeout(get_config()["DRAIN_TIMEOUT"]):
                await self.session.end(server_stopping())
                if wait_for_close:
                    await self.socket_closed.wait()
        except TimeoutError:
            logger.error("Session %s did not end within DRAIN_TIMEOUT", self.session.id)

    async def failed(self) -> None:
        """A handler raised (a bug): the session ends with 1011 and its record says so."""
        await self._fail()

    # The session's browser port.

    async def send_text(self, text: str) -> None:
        await self.send(text_data=text)

    async def send_bytes(self, data: bytes) -> None:
        await self.send(bytes_data=data)

    async def close_with(self, code: int) -> None:
        await self.close(code=code)

    # Messages from the channel layer.

    async def terminal_terminate(self, event: dict[str, Any]) -> None:
        """An auditor ended the session (``terminal.terminate``)."""
        if self.session is not None:
            ending = ended_by_auditor(event.get("user_id"), str(event.get("username", "")))
            await self.session.end(ending)

    async def terminal_snapshot(self, event: dict[str, Any]) -> None:
        """A watcher asks for the current screen (``terminal.snapshot``). The screen model is
        fed on demand first: the answer goes in the background, so this socket's frames do
        not wait for it."""
        if self.session is not None:
            self.session.watched()
            live.background(self._answer_snapshot(self.session, event["reply_to"]))

    async def terminal_watching(self, event: dict[str, Any]) -> None:
        """A watcher is still there (``terminal.watching``): keep its notices coming."""
        if self.session is not None:
            self.session.watched()

    async def _answer_snapshot(self, session: TerminalSession, reply_to: str) -> None:
        try:
            reply = live.snapshot_message(**await session.fresh_snapshot())
        except Exception:
            logger.exception("Session %s: no screen for a watcher", session.id)
            return
        await live.attempt("answering a watcher", self.channel_layer.send(reply_to, reply))

    # Ending without a session.

    async def _ended_elsewhere(self) -> None:
        if self.session is not None:
            await self.session.end(Ending(CloseCode.INTERNAL_ERROR, ENDED_ELSEWHERE, "server_lost"))

    async def _refuse(self, ending: Ending) -> None:
        await self.send(text_data=protocol.error_message(ending.code, ending.message))
        await self.close(code=int(ending.code))

    async def _fail(self) -> None:
        """A bug while opening: end whatever was started, and say so."""
        if self.session is not None:
            await self.session.end(internal_error())
            return
        ending = internal_error()
        try:
            await self._refuse(ending)
        except Exception:
            logger.debug("Could not tell the browser that opening failed")


class MalformedPathConsumer(live.ResilientConsumer):
    """Answers a /ws/terminals/ address that is not cluster/namespace/pod, with 4400.

    Without it the router raises and the browser sees a bare handshake failure (HTTP 500).
    """

    async def connect(self) -> None:
        await self.accept()
        message = "Not a terminal address: expected /ws/terminals/<cluster>/<namespace>/<pod>/."
        try:
            await self._record(f"{message} Got {self.scope.get('path', '')[:300]!r}.")
        except Exception as exc:
            logger.error("Could not record a malformed terminal address: %r", exc)
        await self.send(text_data=protocol.error_message(CloseCode.BAD_REQUEST, message))
        await self.close(code=int(CloseCode.BAD_REQUEST))

    @database_sync_to_async
    def _record(self, reason: str) -> None:
        records.record_denial(
            self.scope.get("user"),
            ExecTarget("", "", ""),
            protocol.ERROR_WORDS[CloseCode.BAD_REQUEST],
            reason,
            client_address(self.scope),
        )
