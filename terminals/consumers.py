"""TerminalConsumer: the Channels hooks of a terminal, and nothing else.

``connect`` admits the connect (:mod:`terminals.session.admission`) and starts a
:class:`~terminals.session.core.TerminalSession`, or resumes one (:mod:`terminals.session.resume`:
here if this process holds it, else relayed to the process that does); ``receive`` decodes
browser frames and hands them over; ``disconnect`` detaches a running session (it waits
``RESUME_GRACE`` for the page to come back); an auditor's ``terminal.terminate`` and the
server's cancellation (SIGTERM) end it through its one end path. Any exception here ends the
session too, with 1011 and a message: a bug never leaves a record live or a process running
in the pod. Messages to the browser are in the connection's language
(:mod:`terminals.language`), activated first thing in ``connect``; the session's tasks,
started later, inherit it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.db import DatabaseError
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from . import live, protocol, records
from .clients import client_address
from .conf import get_config
from .flag import Flag
from .language import language_of
from .permissions import ExecTarget
from .protocol import CloseCode, ProtocolError
from .servers import registry
from .session import resume
from .session.admission import STORE_DOWN, Admission, user_agent
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

# Marked for translation, kept in English: said through gettext() where they are sent.
ENDED_ELSEWHERE = gettext_noop(
    "This session's record was ended elsewhere (its server was taken for lost); it is closed."
)


# Seconds a relaying process waits for the holder of a session to answer its attach.
RELAY_WAIT = 5.0
HOLDER_SILENT = gettext_noop(
    "The server that holds this terminal did not answer; it cannot be resumed."
)
CLOSED_ON_PURPOSE = 1000  # the page's close code for "end the session now"
HOLDER_LOST = gettext_noop("The server that held this terminal was lost; the session has ended.")
RELAY_UNAVAILABLE = gettext_noop(
    "Another server process holds this terminal and cannot be reached now (the channel layer "
    "is down). The session waits for you: try again in a moment."
)


class TerminalConsumer(live.ResilientConsumer):
    """Bridges a browser terminal to a shell in a pod; see the module docstring."""

    session: TerminalSession | None = None
    relay: Relay | None = None  # when this socket resumed a session another process holds
    language = ""  # the connection's (set in connect)

    async def connect(self) -> None:
        # First: every message from here on, and from the tasks started here, is in it.
        self.language = language_of(self.scope)
        translation.activate(self.language)
        self.socket_closed = Flag()
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
            request = resume.resume_request(self.scope)
        except resume.NotResumable as refusal:
            await self._not_resumable(admission, str(refusal))
            return
        if request is not None:
            await self._resume(admission, request, servers)
            return
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
        # The session's own reader of its group, whichever socket it has later.
        resume.open_mailbox(session.id, self.channel_layer, self.dispatch)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.relay is not None:
            await self.relay.forward(text_data, bytes_data)
            return
        session = self.session
        if session is None or session.browser is not self:
            return  # not started, or another socket resumed the session: this one is closing
        await self._frame(session, text_data, bytes_data)

    async def _frame(
        self, session: TerminalSession, text_data: str | None, bytes_data: bytes | None
    ) -> None:
        """Decode one browser frame (of this socket, or relayed) and hand it to the session."""
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
        if self.relay is not None:
            self.relay.gone()
        await self.leave_groups()
        session = self.session
        if session is None or session.browser is not self:
            return  # not started, or another socket has the session now
        # A close with 1000 is the page's on purpose (a tab closed in the workspace, another
        # container): the session ends now. Anything else (1006: the network; 1001: a reload
        # or a closed tab) detaches it, to be resumed within the grace.
        if code == CLOSED_ON_PURPOSE or not session.detach(self):
            await session.end(browser_closed(code))

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
        # Called from the registry's shutdown hook too, which is no connection's task.
        with translation.override(self.language or None):
            ending = server_stopping()
        try:
            async with asyncio.timeout(get_config()["DRAIN_TIMEOUT"]):
                await self.session.end(ending)
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

    async def replay(self, start: int, end: int) -> None:
        """Send the committed output bytes ``start`` to ``end`` (this socket resumed)."""
        assert self.session is not None
        reader = resume.StoredOutput(self.session.id, start)
        read = database_sync_to_async(reader.read, thread_sensitive=False)
        while data := await read(end):
            await self.send(bytes_data=data)

    # Resuming.

    async def _resume(
        self, admission: Admission, request: resume.ResumeRequest, servers: Any
    ) -> None:
        """Take over a running session with this socket: here, or relayed to its holder."""
        found = await self._find_resumable(admission, request)
        if found is None:
            return
        token = resume.new_token()
        claimed = await database_sync_to_async(resume.claim)(
            found,
            request,
            resume.token_digest(token),
            client_address(self.scope),
            user_agent(self.scope),
            servers.server_id,
        )
        if not claimed:
            await self._not_resumable(admission, _(resume.GONE))
            return
        held = resume.held(found.session_id)
        ready = protocol.ready_message(
            str(found.session_id),
            found.container,
            found.command,
            resume=token,
            resumed=True,
            containers=held.containers if held is not None else None,
        )
        if held is None:
            await self._relay(found.session_id, request.offset, ready)
            return
        self.session = held  # its replay reads the session's frames
        try:
            await held.attach(self, request.offset, ready)
        except resume.NotResumable as refusal:
            self.session = None
            await self._not_resumable(admission, str(refusal))
            return
        servers.track(held.id, self._ended_elsewhere, self.server_stopping)

    async def _find_resumable(
        self, admission: Admission, request: resume.ResumeRequest
    ) -> resume.Claimed | None:
        """The session the request names, re-authorized; None once refused."""
        try:
            user = await admission.authenticate()  # as for a new terminal
        except EndSession as end:
            await self._refuse(end.ending)
            return None
        try:
            found: resume.Claimed | None = await database_sync_to_async(resume.find)(
                user, admission.target, request
            )
        except DatabaseError:
            await self._refuse(Ending.of(CloseCode.AUDIT_UNAVAILABLE, _(STORE_DOWN)))
            return None
        if found is None:
            await self._not_resumable(admission, _(resume.GONE))
            return None
        try:
            permitted = await admission.permitted(found.target)
        except EndSession as end:
            await self._refuse(end.ending)
            return None
        if permitted is None:
            message = _("You may no longer open a terminal on %(target)s.") % {
                "target": found.target
            }
            await admission.record_denial(found.target, CloseCode.FORBIDDEN, message)
            await self._refuse(Ending.of(CloseCode.FORBIDDEN, message))
            return None
        try:
            # The login session the resume comes with must pass REQUIRE_MFA as the one the
            # terminal was opened with did (another tab's, a new login's may not).
            await admission.second_factor(found.target)
        except EndSession as end:
            await self._refuse(end.ending)
            return None
        return found

    async def _relay(self, session_id: uuid.UUID, offset: int, ready: str) -> None:
        """Another process holds the session: ask it to take this socket, through the layer."""
        relay = self.relay = Relay(self, session_id, offset)
        asked = self.channel_layer is not None and await live.attempt(
            "asking for a held session",
            self.channel_layer.group_send(
                live.terminal_group(session_id),
                resume.attach_request(self.channel_name, relay.attach, offset, ready),
            ),
        )
        if not asked:
            self.relay = None
            await self._refuse(Ending.of(CloseCode.TRY_AGAIN_LATER, _(RELAY_UNAVAILABLE)))
            return
        relay.expect_answer()

    async def _not_resumable(self, admission: Admission, message: str) -> None:
        await admission.record_denial(admission.target, CloseCode.NOT_FOUND, message)
        await self.send(text_data=resume.not_resumable_message(message))
        await self.close(code=int(CloseCode.NOT_FOUND))

    # Messages from the channel layer.

    async def terminal_terminate(self, event: dict[str, Any]) -> None:
        """An auditor ended the session (``terminal.terminate``), saying why."""
        if self.session is not None:
            ending = ended_by_auditor(
                event.get("user_id"),
                str(event.get("username") or ""),
                str(event.get("reason") or ""),
            )
            await self.session.end(ending)

    async def terminal_snapshot(self, event: dict[str, Any]) -> None:
        """A watcher asks for the current screen (``terminal.snapshot``). The screen model is
        fed on demand first: the answer goes in the background, so this socket's frames do
        not wait for it."""
        if (session := self.session) is not None:
            session.watched(*self._watcher(event))
            live.background(self._answer_snapshot(session, event["reply_to"]))

    async def terminal_watching(self, event: dict[str, Any]) -> None:
        """A watcher is still there (``terminal.watching``): keep its notices coming."""
        if self.session is not None:
            self.session.watched(*self._watcher(event))

    async def terminal_unwatch(self, event: dict[str, Any]) -> None:
        """A watcher has left (``terminal.unwatch``): the browser is shown the others."""
        if self.session is not None:
            self.session.unwatched(self._watcher(event)[0])

    @staticmethod
    def _watcher(event: dict[str, Any]) -> tuple[str, str]:
        """Who the watcher is, if the browser is to be shown (``SHOW_WATCHERS``)."""
        return live.watcher_of(event) if get_config()["SHOW_WATCHERS"] else ("", "")

    async def terminal_attach(self, event: dict[str, Any]) -> None:
        """Another process relays a browser that resumes this session (``terminal.attach``)."""
        session = self.session
        if session is None:
            return

        def silent() -> None:
            if session.detach(browser):
                browser.stop()

        browser = resume.RemoteBrowser(
            self.channel_layer, event["reply_to"], event["attach"], on_silent=silent
        )
        try:
            await session.attach(browser, int(event["offset"]), str(event["ready"]))
        except resume.NotResumable as refusal:
            await browser.send_text(resume.not_resumable_message(str(refusal)))
            await browser.close_with(int(CloseCode.NOT_FOUND))

    async def terminal_relay(self, event: dict[str, Any]) -> None:
        """A frame of the relayed browser, or its leaving (``terminal.relay``)."""
        session = self.session
        browser = session.browser if session is not None else None
        if not isinstance(browser, resume.RemoteBrowser) or browser.attach != event["attach"]:
            return  # a browser that was replaced, or a late frame
        assert session is not None
        browser.heard()
        if event.get("gone"):
            if session.detach(browser):
                browser.stop()
            return
        if event.get("beat"):
            return
        await self._frame(session, event.get("text"), event.get("bytes"))

    # Messages to a relaying consumer, from the process that holds its session.

    async def relay_text(self, event: dict[str, Any]) -> None:
        if self.relay is not None and self.relay.attach == event["attach"]:
            self.relay.answered()
            await self.send(text_data=event["text"])

    async def relay_output(self, event: dict[str, Any]) -> None:
        if self.relay is not None and self.relay.attach == event["attach"]:
            await self.relay.send_output(int(event["upto"]))

    async def relay_close(self, event: dict[str, Any]) -> None:
        if self.relay is not None and self.relay.attach == event["attach"]:
            self.relay.answered()
            await self.close(code=int(event["code"]))

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
            # Called from the registry's heartbeat, which is no connection's task.
            with translation.override(self.language or None):
                message = _(ENDED_ELSEWHERE)
            await self.session.end(Ending(CloseCode.INTERNAL_ERROR, message, "server_lost"))

    async def _refuse(self, ending: Ending) -> None:
        await self.send(text_data=protocol.error_message(ending.code, ending.message, ending.word))
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


class Relay:
    """This socket resumed a session that another process holds: its frames go there
    through the layer, and its output is read from the store up to where that process says
    it has delivered (``relay.output``), so nothing is lost if a notice is."""

    def __init__(self, consumer: TerminalConsumer, session_id: uuid.UUID, offset: int) -> None:
        self.consumer = consumer
        self.session_id = session_id
        self.group = live.terminal_group(session_id)
        self.attach = uuid.uuid4().hex
        self.reader = resume.StoredOutput(session_id, offset)
        self._answered = asyncio.Event()
        self._waiting: asyncio.Future[None] | None = None
        self._beating: asyncio.Future[None] | None = None

    def expect_answer(self) -> None:
        """Give the holder :data:`RELAY_WAIT` seconds to answer, then tell the page; and from
        then on, tell the holder now and then that this browser is there."""
        self._waiting = asyncio.ensure_future(self._wait())
        self._beating = asyncio.ensure_future(self._beat())

    async def _beat(self) -> None:
        """Every RELAY_BEAT: tell the holder this browser is there, and check that the session
        still lives (its holder may have been killed: then nobody else would say so)."""
        layer = self.consumer.channel_layer
        ended_seen = False
        while True:
            await asyncio.sleep(resume.RELAY_BEAT)
            beat = layer.group_send(self.group, resume.relay_beat(self.attach))
            await live.attempt("relaying a beat", beat)
            try:
                state = await database_sync_to_async(resume.session_state)(self.session_id)
            except DatabaseError:
                continue
            # An end comes from the holder (its exit or error frame, then the close); only if
            # that is lost, or the holder is, does the relay say so itself.
            if state == "lost" or (state == "ended" and ended_seen):
                self.consumer.relay = None
                message = _(HOLDER_LOST) if state == "lost" else _(resume.GONE)
                await self.consumer.send(text_data=resume.not_resumable_message(message))
                await self.consumer.close(code=int(CloseCode.NOT_FOUND))
                return
            ended_seen = state == "ended"

    def answered(self) -> None:
        self._answered.set()

    async def _wait(self) -> None:
        try:
            async with asyncio.timeout(RELAY_WAIT):
                await self._answered.wait()
        except TimeoutError:
            self.consumer.relay = None
            await self.consumer.send(text_data=resume.not_resumable_message(_(HOLDER_SILENT)))
            await self.consumer.close(code=int(CloseCode.NOT_FOUND))

    async def send_output(self, upto: int) -> None:
        """Send the committed output up to byte ``upto``."""
        self.answered()
        read = database_sync_to_async(self.reader.read, thread_sensitive=False)
        while data := await read(upto):
            await self.consumer.send(bytes_data=data)

    async def forward(self, text_data: str | None, bytes_data: bytes | None) -> None:
        """A browser frame: on to the holder (which decodes it, as for its own sockets)."""
        layer = self.consumer.channel_layer
        frame = resume.relay_frame(self.attach, text_data, bytes_data)
        if not await live.attempt("relaying a frame", layer.group_send(self.group, frame)):
            # The page resumes again (and the holder keeps the session meanwhile).
            await self.consumer.close(code=int(CloseCode.TRY_AGAIN_LATER))

    def gone(self) -> None:
        """The browser left: the holder detaches the session (its grace starts)."""
        for task in (self._waiting, self._beating):
            if task is not None:
                task.cancel()
        layer = self.consumer.channel_layer
        gone = layer.group_send(self.group, resume.relay_gone(self.attach))
        live.background(live.attempt("relaying a leaving", gone))


MALFORMED = gettext_noop(
    "Not a terminal address: expected /ws/terminals/<cluster>/<namespace>/<pod>/."
)


class MalformedPathConsumer(live.ResilientConsumer):
    """Answers a /ws/terminals/ address that is not cluster/namespace/pod, with 4400.

    Without it the router raises and the browser sees a bare handshake failure (HTTP 500).
    """

    async def connect(self) -> None:
        translation.activate(language_of(self.scope))
        await self.accept()
        try:
            # The record keeps the English text, with what came.
            await self._record(f"{MALFORMED} Got {self.scope.get('path', '')[:300]!r}.")
        except Exception as exc:
            logger.error("Could not record a malformed terminal address: %r", exc)
        await self.send(text_data=protocol.error_message(CloseCode.BAD_REQUEST, _(MALFORMED)))
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
