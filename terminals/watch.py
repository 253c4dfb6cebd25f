"""WatchConsumer: an auditor watches a live session, read-only, from any Daphne process.

The watcher asks the session's consumer (through the channel layer) for its current screen,
then reads the committed frames after it from the audit store. It names its user in that
request and in each renewal, and says when it leaves (``terminal.unwatch``), so that the
person at the terminal can be shown who watches (``TERMINALS["SHOW_WATCHERS"]``). The session
only sends a throttled "there is more" notice to its watchers, never its output, so watchers
can neither slow it down nor lose bytes: whatever a notice misses, the next read of the store
finds. Messages to the watcher are in its connection's language (:mod:`terminals.language`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from . import live, protocol
from .audit.cast import parse_size
from .language import language_of
from .models import Frame, Session
from .protocol import CloseCode

logger = logging.getLogger(__name__)

SNAPSHOT_WAIT = 3.0  # seconds to wait for the session's screen before replaying the store
POLL_INTERVAL = 1.0  # seconds between reads of the store when no notice comes
BATCH = 500  # frames per read
FALLBACK_BYTES = 256 * 1024  # output replayed when the session's process does not answer
# Marked for translation, kept in English: said through gettext() where it is sent.
LIVE_UNAVAILABLE = gettext_noop(
    "Watching is unavailable: the server cannot reach its channel layer (Redis). The session "
    "goes on and is recorded; try again in a moment, or replay it later."
)


class WatchConsumer(live.ResilientConsumer):
    """Streams a live session's screen and output to an auditor; input is ignored."""

    async def connect(self) -> None:
        translation.activate(language_of(self.scope))  # first: the tasks started here inherit it
        self.tasks: list[asyncio.Task[None]] = []
        self.watching = False  # the session was told this watcher is there
        self.last_seq = -1
        self.more = asyncio.Event()
        self.snapshot: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(CloseCode.NOT_AUTHENTICATED, _("Log in to watch sessions."))
            return
        if not await self._may_watch():
            await self._refuse(CloseCode.FORBIDDEN, _("You may not watch terminal sessions."))
            return
        try:
            self.session_id = uuid.UUID(self.scope["url_route"]["kwargs"]["session"])
        except ValueError:
            await self._refuse(CloseCode.BAD_REQUEST, _("That is not a session id."))
            return
        session = await self._session()
        if session is None:
            await self._refuse(CloseCode.NOT_FOUND, _("There is no such session."))
            return
        if not session.is_live:
            await self._refuse(CloseCode.NOT_FOUND, _("The session has ended: replay it instead."))
            return
        self.username = user.get_username()
        joined = await self.join(live.watchers_group(self.session_id))
        asked = joined and await live.attempt(
            "asking for a screen",
            self.channel_layer.group_send(
                live.terminal_group(self.session_id),
                live.snapshot_request(self.channel_name, self.username),
            ),
        )
        self.watching = asked
        if not asked:
            await self.leave_groups()
            await self._refuse(CloseCode.TRY_AGAIN_LATER, _(LIVE_UNAVAILABLE))
            return
        self.tasks.append(asyncio.create_task(self._stream()))
        self.tasks.append(asyncio.create_task(self._renew_lease()))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Watching is read-only: anything the watcher sends is ignored."""

    async def disconnect(self, code: int) -> None:
        for task in self.tasks:
            task.cancel()
        if self.watching:
            # A renewal cut short must not follow the goodbye (and list this watcher again).
            await asyncio.gather(*self.tasks, return_exceptions=True)
            # At once, rather than when the lease lapses: the terminal's user sees it now.
            await live.attempt(
                "saying a watcher left",
                self.channel_layer.group_send(
                    live.terminal_group(self.session_id), live.unwatch_message(self.channel_name)
                ),
            )
        await self.leave_groups()

    # Channel-layer messages.

    async def watch_snapshot(self, event: dict[str, Any]) -> None:
        if not self.snapshot.done():
            self.snapshot.set_result(event)

    async def watch_progress(self, event: dict[str, Any]) -> None:
        self.more.set()

    async def watch_ended(self, event: dict[str, Any]) -> None:
        self.more.set()

    # The stream.

    async def _renew_lease(self) -> None:
        """Tell the session now and then that it is watched, so it keeps notifying us."""
        while True:
            await asyncio.sleep(live.WATCH_RENEWAL)
            await live.attempt(
                "renewing a watch",
                self.channel_layer.group_send(
                    live.terminal_group(self.session_id),
                    live.watching_message(self.channel_name, self.username),
                ),
            )

    async def _stream(self) -> None:
        try:
            snapshot = await asyncio.wait_for(self.snapshot, SNAPSHOT_WAIT)
        except TimeoutError:
            # The session's process did not answer (it may have died): replay the recent output.
            await self._send_recent_output()
        else:
            self.last_seq = snapshot["seq"]
            await self.send(
                text_data=json.dumps(
                    {"type": "snapshot", "cols": snapshot["cols"], "rows": snapshot["rows"]}
                )
            )
            await self.send(bytes_data=snapshot["screen"])
        while True:
            while await self._send_new_frames():
                pass
            session = await self._session()
            if session is None or not session.is_live:
                await self._send_new_frames()
                await self.send(
                    text_data=json.dumps(
                        {
                            "type": "ended",
                            "reason": _reason(session),
                            "exit_code": session.exit_code if session else None,
                            "ended_by": session.ended_by_username if session else "",
                            # What the terminal's user was told (an auditor's reason, …).
                            "message": session.end_message if session else "",
                        }
                    )
                )
                await self.close(code=int(CloseCode.NORMAL))
                return
            self.more.clear()
            try:
                await asyncio.wait_for(self.more.wait(), POLL_INTERVAL)
            except TimeoutError:
                pass

    async def _send_new_frames(self) -> bool:
        """Send committed frames after the last one sent; True if there may be more."""
        frames = await self._frames_after(self.last_seq)
        for seq, direction, data in frames:
            self.last_seq = seq
            if direction == Frame.Direction.STDOUT:
                await self.send(bytes_data=data)
            elif direction == Frame.Direction.RESIZE and (size := parse_size(data)):
                await self.send(
                    text_data=json.dumps({"type": "resize", "cols": size[0], "rows": size[1]})
                )
        return len(frames) == BATCH

    async def _send_recent_output(self) -> None:
        frames = await self._recent_output()
        if frames:
            self.last_seq = frames[-1][0]
            await self.send(text_data=json.dumps({"type": "snapshot", "cols": 0, "rows": 0}))
            await self.send(bytes_data=b"".join(data for _, data in frames))

    async def _refuse(self, code: CloseCode, message: str) -> None:
        await self.send(text_data=protocol.error_message(code, message))
        await self.close(code=int(code))

    # Database work.

    @database_sync_to_async
    def _may_watch(self) -> bool:
        return bool(self.scope["user"].has_perm("terminals.watch_session"))

    @database_sync_to_async
    def _session(self) -> Session | None:
        return Session.objects.select_related("server").filter(pk=self.session_id).first()

    @database_sync_to_async
    def _frames_after(self, seq: int) -> list[tuple[int, str, bytes]]:
        rows = (
            Frame.objects.filter(session_id=self.session_id, seq__gt=seq)
            .exclude(direction=Frame.Direction.STDIN)
            .order_by("seq")
            .values_list("seq", "direction", "data")[:BATCH]
        )
        return [(s, d, bytes(data)) for s, d, data in rows]

    @database_sync_to_async
    def _recent_output(self) -> list[tuple[int, bytes]]:
        rows = (
            Frame.objects.filter(session_id=self.session_id, direction=Frame.Direction.STDOUT)
            .order_by("-seq")
            .values_list("seq", "data")
        )
        frames, size = [], 0
        for seq, data in rows.iterator(chunk_size=100):
            frames.append((seq, bytes(data)))
            size += len(data)
            if size >= FALLBACK_BYTES:
                break
        return frames[::-1]


def _reason(session: Session | None) -> str:
    """Why the watched session is over, also when its server was lost and not yet reaped."""
    if session is None:
        return "deleted"
    if session.ended_at is None:
        return str(Session.EndReason.SERVER_LOST.label)
    return str(session.get_end_reason_display())
