"""Serving processes: registration, heartbeats, and the reaper of lost servers' sessions.

Every serving process (a Daphne) registers a :class:`~terminals.models.Server` row and heartbeats
it every ``HEARTBEAT_INTERVAL`` seconds; every session it opens names it. A server that marked
itself stopped, or whose last heartbeat is older than ``SERVER_TIMEOUT``, is lost: its sessions
no longer count as live (``Session.objects.live()``), and the reaper (:func:`reap`), which every
process runs after each heartbeat, ends their records with the reason "server lost", touching
nothing but the end columns (the frames and the chain's head stay as committed), each through
``records.close_session``, which seals it. With the defaults a process that dies at T has a
stale heartbeat by T + 60 s and is reaped by the next sweep of any healthy process, by T + 75 s.
``manage.py audit close-stale`` runs the same reaper.

A process reaps only once its own heartbeats have succeeded without a gap for ``SERVER_TIMEOUT``.
After a database outage (or a suspended host) every server's heartbeat is stale, and a process
that reaped at once would end the sessions of servers that are alive and simply have not
heartbeated since the store came back. A freshly started process therefore reaps after it has
been up and healthy for ``SERVER_TIMEOUT``. Heartbeats and the reaper use each host's clock:
keep the clocks in step (NTP) well within ``SERVER_TIMEOUT``.

Until a process has registered (the store may be down when it starts) its sessions are opened
without a server; the next heartbeat adopts those it tracks. The heartbeat also reports which
tracked sessions have ended in the store meanwhile (reaped while this process was stalled, say),
so that they end here too. A session whose end could not be written is owed: the registry
retries it on every tick until the store takes it, and if this process dies first, the reaper
ends it.

The ORM functions are synchronous. :class:`ServerRegistry` runs them on a thread of its own (see
:data:`EXECUTOR`); :meth:`ServerRegistry.tick` is one round, which tests call directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import close_old_connections
from django.db.models import Q, QuerySet
from django.utils import timezone

from . import memory, records
from .conf import get_config
from .models import Server, Session

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: One thread for this module's ORM work: a heartbeat must not queue behind the thread that
#: ``database_sync_to_async`` shares across every consumer, or a busy process would look dead.
EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="terminals-servers")

#: Rows of servers that have been dead this long and never held a session are deleted by reap().
FORGET_AFTER = dt.timedelta(days=7)

# A process serving at most this many sessions collects reference cycles after sessions end
# (terminals.memory): quiet, it takes milliseconds; busier, Python's own collector runs often.
QUIET_SESSIONS = 64
_CHUNK = 500  # session ids per query, well under every database's limit on parameters

#: Called when a tracked session is found ended in the store; may return an awaitable.
OnEnded = Callable[[], Awaitable[None] | None]


# Synchronous ORM functions (run in a thread by the registry).


def register(hostname: str, pid: int) -> Server:
    """Record a new serving process, alive as of now."""
    return Server.objects.create(hostname=hostname[:253], pid=pid, heartbeat_at=timezone.now())


def heartbeat(server_id: uuid.UUID, live_ids: Collection[uuid.UUID] = ()) -> set[uuid.UUID]:
    """Mark the server alive; return those of ``live_ids`` whose record has ended.

    Tracked sessions opened before the server was registered are adopted. Raises
    ``Server.DoesNotExist`` if the server's row is gone (deleted by hand or by a test's flush).
    """
    if not Server.objects.filter(pk=server_id).update(heartbeat_at=timezone.now()):
        raise Server.DoesNotExist(f"Server {server_id} is not registered.")
    ended: set[uuid.UUID] = set()
    ids = list(live_ids)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        Session.objects.filter(pk__in=chunk, server__isnull=True, ended_at__isnull=True).update(
            server_id=server_id
        )
        ended.update(
            Session.objects.filter(pk__in=chunk, ended_at__isnull=False).values_list(
                "pk", flat=True
            )
        )
    return ended


def mark_stopped(server_id: uuid.UUID) -> None:
    """Record that the server stopped, so that nobody waits for its heartbeat to go stale."""
    Server.objects.filter(pk=server_id, stopped_at__isnull=True).update(stopped_at=timezone.now())


def reap(now: dt.datetime | None = None) -> int:
    """End the records of sessions whose server is lost; return how many were ended.

    Lost: stopped, or no heartbeat for ``SERVER_TIMEOUT``; sessions without a server count as
    lost once older than ``MAX_DURATION``. Only unended records are touched, and only their end.
    """
    now = now or timezone.now()
    config = get_config()
    since = now - dt.timedelta(seconds=config["SERVER_TIMEOUT"])
    lost = Q(stopped_at__isnull=False) | Q(heartbeat_at__lt=since)
    count = 0
    for server in Server.objects.filter(lost, sessions__ended_at__isnull=True).distinct():
        # The server is checked again as each ends, in case it heartbeated meanwhile.
        still_lost = Q(server__stopped_at__isnull=False) | Q(server__heartbeat_at__lt=since)
        ended = _end_each(
            Session.objects.filter(still_lost, server=server, ended_at__isnull=True),
            _why(server),
            now,
            still_lost,
        )
        if ended:
            logger.warning("Ended %d session(s) of lost server %s (%s)", ended, server.pk, server)
        count += ended
    oldest = now - dt.timedelta(seconds=config["MAX_DURATION"])
    orphaned = Q(server__isnull=True, started_at__lt=oldest)
    orphans = _end_each(
        Session.objects.filter(orphaned, ended_at__isnull=True),
        "It names no server process and is older than the maximum duration; "
        "the session was ended by the reaper.",
        now,
        orphaned,
    )
    if orphans:
        logger.warning("Ended %d session(s) without a server, past the maximum duration", orphans)
    # Rows of servers that held sessions are kept: the admin shows where a session ran.
    Server.objects.filter(heartbeat_at__lt=now - FORGET_AFTER, sessions__isnull=True).delete()
    return count + orphans


def _end_each(sessions: QuerySet[Session], message: str, now: dt.datetime, only: Q) -> int:
    """End (and seal) each of ``sessions`` that still matches ``only``; return how many."""
    ended = 0
    for session_id in list(sessions.values_list("pk", flat=True)):
        ended += records.close_session(
            session_id, Session.EndReason.SERVER_LOST, None, message, at=now, only=only
        )
    return ended


def _why(server: Server) -> str:
    if server.stopped_at is not None:
        return (
            f"Its server process ({server}) stopped without recording the session's end; "
            "the session was ended by the reaper."
        )
    return (
        f"Its server process ({server}) stopped answering (last heartbeat "
        f"{server.heartbeat_at:%Y-%m-%d %H:%M:%S %Z}); the session was ended by the reaper."
    )


# The async side: one registry per process.


@dataclass(frozen=True)
class ServerStore:
    """The synchronous operations the registry runs in its thread; tests pass fakes."""

    register: Callable[[str, int], Server] = register
    heartbeat: Callable[[uuid.UUID, Collection[uuid.UUID]], set[uuid.UUID]] = heartbeat
    mark_stopped: Callable[[uuid.UUID], None] = mark_stopped
    reap: Callable[[], int] = reap
    close_session: Callable[..., object] = records.close_session
    flush_denials: Callable[[], None] = records.flush_denials
    collect_garbage: Callable[[], object] = memory.collect  # on the loop: see memory
    give_back_memory: Callable[[], object] = memory.give_back


@dataclass(frozen=True)
class OwedEnd:
    """The end of a session that the store could not take yet (``records.close_session``)."""

    reason: str
    exit_code: int | None
    message: str
    ended_by: tuple[int | None, str] | None


class ServerRegistry:
    """This process's server row: registers, heartbeats, reaps, retries owed ends."""

    def __init__(
        self,
        *,
        store: ServerStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        hostname: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.store = store or ServerStore()
        self.clock = clock
        self.hostname = hostname or socket.gethostname()
        self.pid = pid or os.getpid()
        self.stopping = False
        self._server_id: uuid.UUID | None = None
        self._healthy_since: float | None = None
        self._last_beat = 0.0
        self._failing = False
        self._tracked: dict[uuid.UUID, OnEnded] = {}
        self._stoppers: dict[uuid.UUID, Callable[[], Awaitable[None]]] = {}
        self._owed: dict[uuid.UUID, OwedEnd] = {}
        self._task: asyncio.Task[None] | None = None
        self._first_tick: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._callbacks: set[asyncio.Task[None]] = set()
        self._sessions_ended = False  # since the last round: their memory may be given back

    @property
    def server_id(self) -> uuid.UUID | None:
        """This process's server id; None until registration has succeeded."""
        return self._server_id

    @property
    def may_reap(self) -> bool:
        """True once this process's heartbeats have succeeded without a gap for SERVER_TIMEOUT."""
        timeout = get_config()["SERVER_TIMEOUT"]
        return self._healthy_since is not None and self.clock() - self._healthy_since >= timeout

    @property
    def owed(self) -> set[uuid.UUID]:
        """Sessions whose end is still to be written."""
        return set(self._owed)

    def track(
        self,
        session_id: uuid.UUID,
        on_ended_elsewhere: OnEnded,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """A session lives in this process; call ``on_ended_elsewhere`` if the store ends it,
        and ``on_stop`` when this server stops (SIGTERM)."""
        self._tracked[session_id] = on_ended_elsewhere
        if on_stop is not None:
            self._stoppers[session_id] = on_stop

    def untrack(self, session_id: uuid.UUID) -> None:
        """The session has ended here."""
        self._tracked.pop(session_id, None)
        self._stoppers.pop(session_id, None)
        self._sessions_ended = True
        if not self._tracked and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def owe_end(
        self,
        session_id: uuid.UUID,
        reason: str,
        exit_code: int | None = None,
        message: str = "",
        ended_by: tuple[int | None, str] | None = None,
    ) -> None:
        """The store could not take this session's end: retry it on every tick until it does."""
        self._owed[session_id] = OwedEnd(reason, exit_code, message, ended_by)
        self.untrack(session_id)

    def start(self) -> None:
        """Start heartbeating on the running loop, unless already doing so (or stopping)."""
        loop = asyncio.get_running_loop()
        task = self._task
        if self.stopping or (task is not None and not task.done() and task.get_loop() is loop):
            return
        # A task of another loop is dead with its loop (a test's loop, say): start afresh.
        self._first_tick = loop.create_future()
        self._task = loop.create_task(self._run(self._first_tick), name="terminals heartbeat")

    async def ensure_started(self) -> None:
        """Start if needed; wait (at most AUDIT_COMMIT_TIMEOUT) for the first registration."""
        self.start()
        first = self._first_tick
        if self._server_id is not None or first is None or first.get_loop() is not _loop():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(get_config()["AUDIT_COMMIT_TIMEOUT"]):
                await asyncio.shield(first)

    async def stop(self, drain: float | None = None) -> None:
        """Once the tracked sessions have ended (or ``drain`` seconds), mark this server stopped.

        ``drain`` defaults to DRAIN_TIMEOUT. New sessions should be refused once ``stopping``.
        """
        if self.stopping:
            return
        self.stopping = True
        # Daphne cancels its applications at shutdown too, but its own trigger can fail
        # (daphne 4.2: a KeyError on a connection without an application), so the sessions
        # are ended from here, each through its own end path.
        stopping = [asyncio.ensure_future(stop()) for stop in self._stoppers.values()]
        try:
            async with asyncio.timeout(get_config()["DRAIN_TIMEOUT"] if drain is None else drain):
                if stopping:
                    await asyncio.wait(stopping)
                if self._tracked:
                    self._drained = _loop().create_future()
                    await self._drained
        except TimeoutError:
            logger.warning("Stopping with %d session(s) not ended", len(self._tracked))
        task = self._task
        if task is not None and task.get_loop() is _loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._settle_owed()
        if self._server_id is not None:
            try:
                await self._call(self.store.mark_stopped, self._server_id)
            except Exception:
                # Other processes reap its sessions once its heartbeat is SERVER_TIMEOUT old.
                logger.warning("Could not mark server %s stopped", self._server_id, exc_info=True)
            else:
                logger.info("Server %s stopped", self._server_id)

    async def tick(self) -> None:
        """One round: register or heartbeat; reap when healthy long enough; retry owed ends."""
        if not await self._beat():
            return
        if self.may_reap:
            try:
                await self._call(self.store.reap)
            except Exception:
                logger.warning("Could not reap lost servers' sessions", exc_info=True)
        await self._settle_owed()
        try:
            # Counts of refusals not recorded one by one would otherwise wait for the next
            # refusal, and be lost if the process exited first.
            await self._call(self.store.flush_denials)
        except Exception:
            logger.warning("Could not record the counts of refused connects", exc_info=True)
        if self._sessions_ended:
            self._sessions_ended = False
            if len(self._tracked) <= QUIET_SESSIONS:
                self.store.collect_garbage()
            await self._call(self.store.give_back_memory)

    async def _run(self, first_tick: asyncio.Future[None]) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a bug must not stop the heartbeat
                logger.exception("A heartbeat round failed")
            if not first_tick.done():
                first_tick.set_result(None)
            await asyncio.sleep(get_config()["HEARTBEAT_INTERVAL"])

    async def _beat(self) -> bool:
        """Register or heartbeat; True if the store took it."""
        try:
            if self._server_id is None:
                server = await self._call(self.store.register, self.hostname, self.pid)
                self._server_id = server.pk
                logger.info(
                    "Registered as server %s (%s pid %d)", server.pk, self.hostname, self.pid
                )
                ended: set[uuid.UUID] = set()
            else:
                ended = await self._call(self.store.heartbeat, self._server_id, list(self._tracked))
        except Server.DoesNotExist:
            logger.warning("Server %s is no longer registered; registering again", self._server_id)
            self._server_id = None
            self._healthy_since = None
            return False
        except Exception:
            if not self._failing:
                logger.warning("Heartbeat failed; not reaping until healthy again", exc_info=True)
            self._failing = True
            self._healthy_since = None
            return False
        if self._failing:
            logger.info("Heartbeats succeed again")
            self._failing = False
        now = self.clock()
        if self._healthy_since is None or now - self._last_beat > get_config()["SERVER_TIMEOUT"]:
            self._healthy_since = now
        self._last_beat = now
        for session_id in ended:
            self._ended_elsewhere(session_id)
        return True

    def _ended_elsewhere(self, session_id: uuid.UUID) -> None:
        callback = self._tracked.get(session_id)
        if callback is None:
            return
        self.untrack(session_id)
        logger.info("Session %s was ended elsewhere; ending it here", session_id)
        try:
            result = callback()
        except Exception:
            logger.exception("Ending session %s here failed", session_id)
            return
        if inspect.isawaitable(result):
            self._callbacks_task(result)

    def _callbacks_task(self, awaitable: Awaitable[None]) -> None:
        """Run a session's callback as a task that is kept until it is done."""
        task = asyncio.ensure_future(awaitable)
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)

    async def _settle_owed(self) -> None:
        for session_id, end in list(self._owed.items()):
            try:
                await self._call(
                    self.store.close_session,
                    session_id,
                    end.reason,
                    end.exit_code,
                    end.message,
                    end.ended_by,
                )
            except Exception:
                logger.info("The end of session %s is still owed", session_id, exc_info=True)
                return  # the store still refuses; the rest wait for the next tick
            del self._owed[session_id]
            logger.info("Recorded the owed end of session %s", session_id)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        return await _loop().run_in_executor(EXECUTOR, _with_connection, function, *args)


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _with_connection(function: Callable[..., T], *args: Any) -> T:
    """Run ORM work in the registry's thread, its connection checked as a request's would be."""
    close_old_connections()
    try:
        return function(*args)
    finally:
        close_old_connections()


@functools.cache
def registry() -> ServerRegistry:
    """This process's registry (``registry.cache_clear()`` gives a fresh one, in tests)."""
    return ServerRegistry()


def start_with_daphne(reactor: Any = None) -> None:
    """Under Daphne: start the registry when the reactor runs; stop it as Daphne shuts down.

    Nothing happens in a process that imports Daphne but never runs its reactor (management
    commands, tests). At shutdown Daphne's own "before" trigger cancels the applications, whose
    sessions then end and untrack themselves; ours (``stop()``) waits for that, at most
    DRAIN_TIMEOUT, then marks the server stopped and closes the clusters' HTTP clients (their
    execs are closed by then). Twisted waits only for "before" triggers.
    """
    from twisted.internet.defer import Deferred

    from .kube.http import close_clients

    if reactor is None:
        from twisted.internet import reactor as installed

        reactor = installed

    def start() -> None:
        memory.freeze_startup()  # what the process started with is never garbage
        registry().start()

    async def stop_serving() -> None:
        try:
            await registry().stop()
        finally:
            # Daphne stops the loop without closing what runs on it (terminals.kube.http).
            await close_clients()

    def stop() -> Deferred[None]:
        return Deferred.fromFuture(asyncio.ensure_future(stop_serving()))

    def running() -> None:
        # Startup triggers run before the asyncio loop does; callLater runs start() on it.
        reactor.callLater(0, start)
        reactor.addSystemEventTrigger("before", "shutdown", stop)

    reactor.callWhenRunning(running)
