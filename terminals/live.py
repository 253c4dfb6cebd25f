"""The channel-layer contract: group names, message types, and calls that survive its faults.

A terminal's consumer joins :func:`terminal_group` (auditors' ``terminal.terminate``, and
watchers' ``terminal.snapshot`` requests, their ``terminal.watching`` renewals and their
``terminal.unwatch`` when they leave, each naming the watcher); watchers join
:func:`watchers_group` (the session's ``watch.progress`` notices, its ``watch.ended`` and the
``watch.snapshot`` reply). The terminal never depends on the layer: a Redis that is down, slow
or full must not end a terminal, so every call here is bounded in time, and failures are
logged and reported, never raised.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch

from .flag import Flag

logger = logging.getLogger(__name__)

# Message types, the "type" of each channel-layer message (Channels maps a.b to a_b()).
TERMINATE = "terminal.terminate"  # to a terminal: an auditor ends it
SNAPSHOT_REQUEST = "terminal.snapshot"  # to a terminal: a watcher wants the screen
WATCHING = "terminal.watching"  # to a terminal: a watcher is still there (renews the lease)
UNWATCH = "terminal.unwatch"  # to a terminal: a watcher has left
SNAPSHOT = "watch.snapshot"  # to one watcher: the screen
PROGRESS = "watch.progress"  # to watchers: more output is committed
ENDED = "watch.ended"  # to watchers: the session ended

# Seconds a terminal sends its watchers notices after a watcher last said it is there (its
# snapshot request, then a renewal every WATCH_RENEWAL): a session nobody watches sends none.
WATCH_LEASE, WATCH_RENEWAL = 30.0, 10.0
# The most characters of an auditor's reason for ending a session (the reason is required).
MAX_END_REASON = 500
# A layer call that has not answered by then is taken as failed (Redis slow or gone).
CALL_TIMEOUT = 2.0
# Back-off between attempts to receive from a layer that fails, doubling up to the maximum.
RETRY_FIRST, RETRY_MAX = 0.5, 5.0


def terminal_group(session_id: uuid.UUID | str) -> str:
    """The group of a running terminal (snapshot requests, terminate)."""
    return f"terminals.session.{session_id}"


def watchers_group(session_id: uuid.UUID | str) -> str:
    """The group of a session's watchers (progress, ended)."""
    return f"terminals.watchers.{session_id}"


def terminate_message(user_id: int | None, username: str, reason: str = "") -> dict[str, Any]:
    """Ask a terminal to end, naming the auditor and why (shown to the terminal's user)."""
    return {"type": TERMINATE, "user_id": user_id, "username": username, "reason": reason}


def snapshot_request(reply_to: str, watcher: str = "") -> dict[str, Any]:
    """Ask a terminal for its screen, to be sent to channel ``reply_to``, by user ``watcher``
    (the terminal's user may be shown who watches)."""
    return {"type": SNAPSHOT_REQUEST, "reply_to": reply_to, "watcher": watcher}


def watching_message(channel: str = "", watcher: str = "") -> dict[str, Any]:
    """Tell a terminal that the watcher at ``channel`` (user ``watcher``) is still there."""
    return {"type": WATCHING, "channel": channel, "watcher": watcher}


def unwatch_message(channel: str) -> dict[str, Any]:
    """Tell a terminal that the watcher at ``channel`` has left."""
    return {"type": UNWATCH, "channel": channel}


def watcher_of(event: dict[str, Any]) -> tuple[str, str]:
    """The watcher (its channel) and its username in a :data:`SNAPSHOT_REQUEST`,
    :data:`WATCHING` or :data:`UNWATCH` message; empty strings from a watcher that does not
    say (a process of an older release)."""
    channel = event.get("channel") or event.get("reply_to") or ""
    return str(channel), str(event.get("watcher") or "")


def snapshot_message(screen: bytes, cols: int, rows: int, seq: int) -> dict[str, Any]:
    """A terminal's screen, drawn as of output frame ``seq``."""
    return {"type": SNAPSHOT, "screen": screen, "cols": cols, "rows": rows, "seq": seq}


def progress_message(seq: int, final: bool = False) -> dict[str, Any]:
    """Tell watchers that frames up to ``seq`` are committed (and, if ``final``, the end)."""
    return {"type": ENDED if final else PROGRESS, "seq": seq}


async def attempt(what: str, call: Awaitable[Any], timeout: float = CALL_TIMEOUT) -> bool:
    """Await one layer call within ``timeout``; log a failure and return False, never raise."""
    try:
        async with asyncio.timeout(timeout):
            await call
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # Redis down, slow, full ("Too many connections"), …
        logger.warning("Channel layer: %s failed: %r", what, exc)
        return False
    return True


class ResilientReceiver:
    """``receive()`` from the layer that never raises its faults: it waits and tries again.

    Channels ends a consumer whose channel-layer receive raises (a terminal closed with 1011
    when Redis went away). This retries with back-off instead. It calls ``on_failed`` when a
    run of failures starts and ``on_recovered`` when a message arrives after one, so the
    consumer can rejoin its groups: a Redis that restarted has forgotten them.
    """

    def __init__(
        self,
        receive: Callable[[], Awaitable[dict[str, Any]]],
        on_recovered: Callable[[], Awaitable[Any]],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_failed: Callable[[], None] = lambda: None,
    ) -> None:
        self._receive = receive
        self._on_recovered = on_recovered
        self._on_failed = on_failed
        self._sleep = sleep
        self._nap: asyncio.Future[None] | None = None
        self.failing = False

    def wake(self) -> None:
        """The layer answers again (a group join went through): stop backing off now, so a
        message waiting for this consumer is not left for up to ``RETRY_MAX``."""
        if self._nap is not None:
            self._nap.cancel()

    async def __call__(self) -> dict[str, Any]:
        delay = RETRY_FIRST
        while True:
            try:
                message = await self._receive()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # redis-py can turn a cancellation into its own error: the task is
                    # being cancelled all the same (a consumer ending), so it must not retry.
                    raise asyncio.CancelledError from exc
                if not self.failing:
                    logger.warning("Channel layer: receive failed, retrying: %r", exc)
                    self._on_failed()
                self.failing = True
                nap = self._nap = asyncio.ensure_future(self._sleep(delay))
                try:
                    await asyncio.wait({nap})  # returns early when wake() cancels the nap
                finally:
                    self._nap = None
                    nap.cancel()
                delay = RETRY_FIRST if nap.cancelled() else min(delay * 2, RETRY_MAX)
                continue
            if self.failing:
                self.failing = False
                logger.info("Channel layer: receiving again")
                await self._on_recovered()
            return message


class Groups:
    """The groups one consumer belongs to, joined again whenever the layer may have lost them.

    A Redis that restarted has forgotten every group, and a consumer whose receive blocks on
    an empty Redis never hears that it is back. So once the layer has failed (a join, or a
    receive: :meth:`repair`), a task of its own joins every group again, with back-off, until
    the layer takes them all.
    """

    def __init__(
        self,
        layer: Any,
        channel: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._layer = layer
        self._channel = channel
        self._sleep = sleep
        self._names: set[str] = set()
        self._repairing: asyncio.Task[None] | None = None
        # Called once the groups are joined again after a failure (the consumer's receiver
        # stops backing off: the layer is back).
        self.on_repaired: Callable[[], None] = lambda: None

    async def join(self, group: str) -> bool:
        """Join ``group`` (and remember it; if the layer fails, keep trying in the background)."""
        self._names.add(group)
        joined = await attempt(f"joining {group}", self._layer.group_add(group, self._channel))
        if not joined:
            self.repair()
        return joined

    async def rejoin(self) -> bool:
        """Join every remembered group again; True if the layer took them all."""
        joined = True
        for group in sorted(self._names):
            added = self._layer.group_add(group, self._channel)
            joined = await attempt(f"joining {group}", added) and joined
        return joined

    def repair(self) -> None:
        """The layer failed: rejoin every group in the background until it works again."""
        if self._repairing is None or self._repairing.done():
            self._repairing = asyncio.ensure_future(self._rejoin_until_joined())

    @property
    def repairing(self) -> bool:
        """True while groups are being joined again in the background."""
        return self._repairing is not None and not self._repairing.done()

    async def _rejoin_until_joined(self) -> None:
        delay = RETRY_FIRST
        while True:
            await self._sleep(delay)
            if await self.rejoin():
                logger.info("Channel layer: groups joined again")
                self.on_repaired()
                return
            delay = min(delay * 2, RETRY_MAX)

    async def leave_all(self) -> None:
        """Leave every group; failures only leave entries that expire in the layer."""
        if self._repairing is not None:
            self._repairing.cancel()
        names, self._names = sorted(self._names), set()
        for group in names:
            await attempt(f"leaving {group}", self._layer.group_discard(group, self._channel))


def listen(layer: Any, channel: str) -> tuple[Groups, ResilientReceiver]:
    """The groups of ``channel`` and its receive that survives the layer's faults, each
    telling the other: a receive that fails repairs the groups, groups joined again wake it."""
    groups = Groups(layer, channel)
    receive = ResilientReceiver(
        functools.partial(layer.receive, channel), groups.rejoin, on_failed=groups.repair
    )
    groups.on_repaired = receive.wake
    return groups, receive


class WatcherNotices:
    """Tells a session's watchers that more output is committed, at most every ``interval``,
    while it is watched: for :data:`WATCH_LEASE` seconds after a watcher last said so
    (:meth:`watched`). A session nobody watches makes no layer call for its output (a
    watcher's first read is of the store, and it reads the store every second anyway).

    The output path only calls :meth:`progress` (no await, no layer call); :meth:`run` sends
    the notices from a task of its own (:meth:`start`), and :meth:`close` sends the last one in
    the background: a slow or dead layer never holds output or a session's end back. (redis-py
    can swallow a cancellation and wait out its socket timeout, so nothing on a session's path
    awaits a layer call, not even bounded.)
    """

    def __init__(
        self,
        layer: Any,
        session_id: uuid.UUID,
        interval: float = 0.1,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        lease: float = WATCH_LEASE,
    ) -> None:
        self._layer = layer
        self._clock = clock
        self._lease = lease
        self._watched_until = -math.inf
        self._group = watchers_group(session_id)
        self._interval = interval
        self._sleep = sleep
        self._seq = -1
        self._pending = Flag()
        self._closed = False
        self._task: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Send notices from a task of their own until :meth:`close`."""
        self._task = asyncio.ensure_future(self.run())

    def close(self, seq: int) -> None:
        """Stop, and tell watchers (in the background) that the session ended at ``seq``."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        background(self.ended(seq))

    def watched(self) -> None:
        """A watcher is there: send notices for the next :data:`WATCH_LEASE` seconds."""
        self._watched_until = self._clock() + self._lease
        self._pending.set()

    def progress(self, seq: int) -> None:
        """Frames up to ``seq`` are delivered."""
        self._seq = seq
        if self._clock() < self._watched_until:
            self._pending.set()

    async def run(self) -> None:
        """Send throttled notices until cancelled; never raises the layer's faults."""
        while not self._closed:
            await self._pending.wait()
            self._pending.clear()
            if self._layer is not None:
                await attempt(
                    "notifying watchers",
                    self._layer.group_send(self._group, progress_message(self._seq)),
                )
            await self._sleep(self._interval)

    async def ended(self, seq: int) -> None:
        """The session ended; watchers read the rest from the store and say so."""
        if self._layer is not None:
            await attempt(
                "notifying watchers of the end",
                self._layer.group_send(self._group, progress_message(seq, final=True)),
            )


#: Layer calls left to finish on their own, kept referenced until they are done.
_BACKGROUND: set[asyncio.Future[Any]] = set()


def background(call: Awaitable[Any]) -> None:
    """Run a layer call (already wrapped in :func:`attempt`) without waiting for it."""
    task = asyncio.ensure_future(call)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


class ResilientConsumer(AsyncWebsocketConsumer):
    """A WebSocket consumer that the channel layer's faults cannot end, and that hears of its
    own cancellation.

    As Channels' ``AsyncConsumer.__call__``, except that the layer is read through a
    :class:`ResilientReceiver` (groups are joined with :meth:`join` and joined again when the
    layer recovers), and that :meth:`cancelled` runs when the ASGI server cancels the
    consumer: Daphne does that to every connection when it stops (SIGTERM), and to one whose
    socket closed but whose consumer has not finished after its close timeout.
    """

    layer_groups: Groups | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = scope
        self.base_send = send
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.layer_groups, self.channel_receive = listen(self.channel_layer, self.channel_name)
            sources.append(self.channel_receive)
        try:
            await await_many_dispatch(sources, self.dispatch)
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            await self.cancelled()
            raise

    async def dispatch(self, message: dict[str, Any]) -> None:
        """As Channels' ``dispatch``, without its ``aclose_old_connections()`` before each
        message: that is a hop through the one database thread every consumer shares, so a
        hung query would freeze every terminal's input; our ORM work goes through
        ``database_sync_to_async``, which closes old connections itself."""
        try:
            handler = getattr(self, get_handler_name(message), None)
        except ValueError:
            handler = None
        if handler is None:
            logger.warning("Ignored a message of unknown type %r", message.get("type"))
            return
        try:
            await handler(message)
        except StopConsumer:
            raise
        except Exception:
            # A bug in a handler must not kill the consumer silently (Daphne would close with
            # a bare 1011 and whatever the consumer holds would run on): end it properly.
            logger.exception("A %s handler failed", message.get("type"))
            await self.failed()

    async def join(self, group: str) -> bool:
        """Join a channel-layer group; False (logged, retried on recovery) if the layer fails."""
        if self.layer_groups is None:
            return False
        return await self.layer_groups.join(group)

    async def leave_groups(self) -> None:
        """Leave every group joined with :meth:`join`."""
        if self.layer_groups is not None:
            await self.layer_groups.leave_all()

    async def cancelled(self) -> None:
        """The ASGI server cancelled this consumer; override to end what it holds."""

    async def failed(self) -> None:
        """A handler raised; override to end what the consumer holds and tell the browser."""
        await self.close(code=1011)
