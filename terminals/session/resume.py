"""Resuming a terminal whose browser went away (see the README, "Resuming a terminal").

A session whose socket drops stays attached to its pod for ``RESUME_GRACE`` seconds, detached:
it commits output within its read-ahead bound and delivers nothing. The page comes back with
``?resume=<token>&offset=<N>`` (N output bytes received). The token (:func:`new_token`) is
known only to the browser; the store keeps its digest, replaced on every resume by a
compare-and-swap, so one token opens one socket. The output after byte N is read from the
committed frames (:class:`StoredOutput`), then live output follows.

The process that holds the exec answers the resume itself when the socket reaches it. When
it reaches another process, that one relays: it asks the holder (``terminal.attach`` to the
session's group) to take a :class:`RemoteBrowser` as its browser, sends the browser's frames
on (``terminal.relay``), and reads the output from the store up to where each ``relay.output``
notice says it has been delivered. Every held session reads its group through a
:class:`Mailbox` of its own, whichever socket it has, or none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import secrets
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Length
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from .. import live
from ..flag import Flag
from ..models import Frame, Resume, Session
from ..permissions import ExecTarget

logger = logging.getLogger(__name__)

TOKEN_BYTES = 24  # 192 bits
MAX_TOKEN_LENGTH = 100
READ_CHUNK = 64 * 1024  # output bytes per message when replaying from the store
# A relaying process says it is there every RELAY_BEAT seconds; the holder takes one silent
# for RELAY_LEASE seconds as gone (killed with its browser attached).
RELAY_BEAT, RELAY_LEASE = 10.0, 30.0
ROWS_PER_READ = 200

NOT_RESUMABLE = "not_resumable"
# Marked for translation, kept in English: said through gettext() where they are sent.
GONE = gettext_noop(
    "This terminal cannot be resumed: it has ended, or the link is no longer valid."
)
TAKEN_OVER = gettext_noop("This terminal was opened again in another window.")

# Layer message types (Channels maps a.b to a_b()).
ATTACH = "terminal.attach"  # to a held session: take this relaying process's browser
RELAY = "terminal.relay"  # to a held session: a frame of the relayed browser, or its leaving
RELAY_TEXT = "relay.text"  # to a relaying consumer: a text frame for its browser
RELAY_OUTPUT = "relay.output"  # to a relaying consumer: output is delivered up to a byte
RELAY_CLOSE = "relay.close"  # to a relaying consumer: close the browser's socket


def new_token() -> str:
    """A fresh resume token: opaque, URL-safe, 192 random bits."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def not_resumable_message(message: str | None = None) -> str:
    """The error frame sent before closing with 4404 (by default: :data:`GONE`)."""
    text = _(GONE) if message is None else message
    return json.dumps({"type": "error", "code": NOT_RESUMABLE, "message": text})


def taken_over_message() -> str:
    """The error frame sent to a socket another one resumed the session from."""
    return json.dumps({"type": "error", "code": "resumed_elsewhere", "message": _(TAKEN_OVER)})


class NotResumable(Exception):
    """The session cannot be resumed; the message says why."""


@dataclasses.dataclass(frozen=True)
class ResumeRequest:
    """What a resuming connect asks for."""

    token: str
    offset: int


def resume_request(scope: Mapping[str, Any]) -> ResumeRequest | None:
    """The ``resume`` and ``offset`` of the connect's query, None if it does not resume.

    Raises :class:`NotResumable` for values no page sends (the page then offers a new session).
    """
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    tokens = query.get("resume")
    if tokens is None:
        return None
    token, offset = tokens[0], (query.get("offset") or ["0"])[0]
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise NotResumable(_("That resume token is not valid."))
    if not offset.isdigit() or len(offset) > 18:
        raise NotResumable(_("The resume offset must be a whole number of bytes."))
    return ResumeRequest(token, int(offset))


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A session a resume has taken over: what the new socket needs to know of it."""

    session_id: uuid.UUID
    container: str
    command: list[str]
    target: ExecTarget


def find(user: Any, url_target: ExecTarget, request: ResumeRequest) -> Claimed | None:
    """The live session of ``user`` on the URL's pod that the token names, or None (ended,
    its server lost, another user's or another pod's, or the token was replaced)."""
    digest = token_digest(request.token)
    row = (
        Session.objects.select_related("server")
        .filter(user=user, ended_at__isnull=True)
        .filter(Q(resume_digest=digest) | Q(resume_previous_digest=digest))
        .filter(cluster=url_target.cluster, namespace=url_target.namespace, pod=url_target.pod)
        .first()
    )
    if row is None or not row.is_live:
        return None
    target = ExecTarget(row.cluster, row.namespace, row.pod, row.container)
    return Claimed(row.pk, row.container, list(row.command), target)


def claim(
    found: Claimed,
    request: ResumeRequest,
    new_digest: str,
    client_address: str | None,
    user_agent: str,
    server_id: uuid.UUID | None,
) -> bool:
    """Issue ``new_digest`` if the request's token is still good, and record the resume; False
    if it is not (a newer token was used since, or the session ended).

    A token stays good until the page has used the one issued after it: the page may lose
    its socket before the new token reaches it, and must be able to try again. So the token
    presented is kept beside the new one, and the one before it is dropped."""
    presented = token_digest(request.token)
    with transaction.atomic():
        taken = (
            Session.objects.filter(pk=found.session_id, ended_at__isnull=True)
            .filter(Q(resume_digest=presented) | Q(resume_previous_digest=presented))
            .update(resume_digest=new_digest, resume_previous_digest=presented)
        )
        if not taken:
            return False
        Resume.objects.create(
            session_id=found.session_id,
            client_address=client_address,
            user_agent=user_agent[:512],
            offset=request.offset,
            server_id=server_id,
        )
    return True


def session_state(session_id: uuid.UUID) -> str:
    """ "live", "ended", or "lost" (not ended, but its server is lost, or no such session)."""
    row = Session.objects.select_related("server").filter(pk=session_id).first()
    if row is not None and row.ended_at is not None:
        return "ended"
    return "live" if row is not None and row.is_live else "lost"


class StoredOutput:
    """A session's committed output from byte ``position`` on, read from its frames.

    Output rows are whole pieces of the stream in ``seq`` order, so byte N is found by adding
    up their lengths (in the database) until it is reached; after that the rows are read in
    order. Synchronous: run it in a thread.
    """

    def __init__(self, session_id: uuid.UUID, position: int) -> None:
        self.session_id = session_id
        self.position = position
        self._after_seq: int | None = None  # the last row taken into _row_start
        self._row = b""
        self._row_start = 0  # the stream offset of _row's first byte
        self._rows: deque[tuple[int, bytes]] = deque()

    def read(self, end: int, limit: int = READ_CHUNK) -> bytes:
        """Up to ``limit`` bytes from the position, never past byte ``end``; b"" at the end."""
        if self._after_seq is None:
            self._locate()
        parts: list[bytes] = []
        size = 0
        while self.position < end and size < limit:
            row_end = self._row_start + len(self._row)
            if self.position < row_end:
                stop = min(end, row_end, self.position + limit - size)
                piece = self._row[self.position - self._row_start : stop - self._row_start]
                parts.append(piece)
                self.position += len(piece)
                size += len(piece)
            elif not self._next_row():
                break  # not committed (yet): the caller asked past the store
        return b"".join(parts)

    def _output(self) -> Any:
        return Frame.objects.filter(
            session_id=self.session_id, direction=Frame.Direction.STDOUT
        ).order_by("seq")

    def _locate(self) -> None:
        start, after = 0, -1
        sizes = self._output().annotate(size=Length("data")).values_list("seq", "size")
        for seq, size in sizes.iterator(chunk_size=2000):
            if start + size > self.position:
                break
            start += size
            after = seq
        self._after_seq, self._row_start, self._row = after, start, b""

    def _next_row(self) -> bool:
        if not self._rows:
            rows = self._output().filter(seq__gt=self._after_seq).values_list("seq", "data")
            self._rows.extend((seq, bytes(data)) for seq, data in rows[:ROWS_PER_READ])
            if not self._rows:
                return False
        seq, data = self._rows.popleft()
        self._row_start += len(self._row)
        self._row, self._after_seq = data, seq
        return True


class RemoteBrowser:
    """The browser of a session resumed through another process (the relay).

    Text frames and "delivered up to byte N" notices go to the relaying consumer's channel in
    order, from a task of their own so that the session never waits on the layer; notices in a
    row are merged (the relay reads everything up to the last from the store).

    The relay says it is there at least every :data:`RELAY_BEAT` seconds (a frame, or a beat);
    one silent for ``lease`` seconds (its process was killed, the layer lost) is taken as gone:
    ``on_silent`` is called once, and the session detaches (its grace starts).
    """

    def __init__(
        self,
        layer: Any,
        reply_to: str,
        attach: str,
        on_silent: Callable[[], None] = lambda: None,
        lease: float = RELAY_LEASE,
    ) -> None:
        self.layer = layer
        self.reply_to = reply_to
        self.attach = attach
        self.position = 0
        self._outbox: deque[dict[str, Any]] = deque()
        self._queued = Flag()
        self._task = asyncio.ensure_future(self._run())
        self._lease = lease
        self._on_silent = on_silent
        self._silence: asyncio.TimerHandle | None = None
        self.heard()

    def heard(self) -> None:
        """The relay said something: it is there for another lease."""
        if self._silence is not None:
            self._silence.cancel()
        self._silence = asyncio.get_running_loop().call_later(self._lease, self._silent)

    def _silent(self) -> None:
        self._silence = None
        self._on_silent()

    async def send_text(self, text: str) -> None:
        self._put({"type": RELAY_TEXT, "text": text})

    async def send_bytes(self, data: bytes) -> None:
        self.position += len(data)
        self._put_output()

    async def replay(self, start: int, end: int) -> None:
        self.position = end
        self._put_output()

    async def close_with(self, code: int) -> None:
        self._put({"type": RELAY_CLOSE, "code": code})
        self.stop()

    def stop(self) -> None:
        """Send what is queued, then stop (the session has another browser, or ended)."""
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        self._put({"type": None})

    def _put_output(self) -> None:
        if self._outbox and self._outbox[-1]["type"] == RELAY_OUTPUT:
            self._outbox[-1]["upto"] = self.position
            return
        self._put({"type": RELAY_OUTPUT, "upto": self.position})

    def _put(self, message: dict[str, Any]) -> None:
        self._outbox.append(message)
        self._queued.set()

    async def _run(self) -> None:
        while True:
            while not self._outbox:
                self._queued.clear()
                await self._queued.wait()
            message = self._outbox.popleft()
            if message["type"] is None:
                return
            message["attach"] = self.attach
            await live.attempt(
                "relaying to a resumed terminal", self.layer.send(self.reply_to, message)
            )


class Mailbox:
    """A session's own place on the channel layer, for its whole life: a channel of its own in
    the session's group, read by one task that hands each message to ``dispatch`` (the handlers
    of the consumer that started the session). Sockets come and go (detached, resumed here,
    relayed from elsewhere); the session's group messages never move from one reader to
    another, so none is lost on the way. Stopped (the session ended), it leaves the group."""

    def __init__(
        self, layer: Any, group: str, dispatch: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
        self.layer = layer
        self.group = group
        self.dispatch = dispatch
        self._task: asyncio.Task[None] | None = None
        self._groups: live.Groups | None = None
        self.joined = asyncio.Event()  # set once it is in the group (tests wait for it)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        groups, receive = live.listen(self.layer, await self.layer.new_channel())
        self._groups = groups
        await groups.join(self.group)
        self.joined.set()
        while True:
            message = await receive()
            try:
                await self.dispatch(message)
            except Exception:
                logger.exception("Session %s: a %s message failed", self.group, message.get("type"))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._groups is not None:
            live.background(self._groups.leave_all())
            self._groups = None


# The sessions this process holds the exec of, for resumes that reach it, and the mailboxes
# of those no consumer serves.
_HELD: dict[uuid.UUID, Any] = {}
_MAILBOXES: dict[uuid.UUID, Mailbox] = {}


def hold(session_id: uuid.UUID, session: Any) -> None:
    _HELD[session_id] = session


def release(session_id: uuid.UUID) -> None:
    """The session ended."""
    _HELD.pop(session_id, None)
    close_mailbox(session_id)


def open_mailbox(
    session_id: uuid.UUID, layer: Any, dispatch: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    """Serve the held session's layer messages with ``dispatch`` until it ends (without a
    channel layer there are none)."""
    if layer is None or session_id not in _HELD:
        return
    close_mailbox(session_id)
    mailbox = _MAILBOXES[session_id] = Mailbox(layer, live.terminal_group(session_id), dispatch)
    mailbox.start()


def close_mailbox(session_id: uuid.UUID) -> None:
    mailbox = _MAILBOXES.pop(session_id, None)
    if mailbox is not None:
        mailbox.stop()


def held(session_id: uuid.UUID) -> Any | None:
    """The session, if this process holds it."""
    return _HELD.get(session_id)


def relay_frame(attach: str, text: str | None, data: bytes | None) -> dict[str, Any]:
    """A browser frame for the holding process."""
    return {"type": RELAY, "attach": attach, "text": text, "bytes": data}


def relay_gone(attach: str) -> dict[str, Any]:
    """The relayed browser left."""
    return {"type": RELAY, "attach": attach, "gone": True}


def relay_beat(attach: str) -> dict[str, Any]:
    """The relayed browser is still there (it may just be reading)."""
    return {"type": RELAY, "attach": attach, "beat": True}


def attach_request(reply_to: str, attach: str, offset: int, ready: str) -> dict[str, Any]:
    """Ask the holding process to take a relayed browser that has ``offset`` output bytes."""
    return {
        "type": ATTACH,
        "reply_to": reply_to,
        "attach": attach,
        "offset": offset,
        "ready": ready,
    }
