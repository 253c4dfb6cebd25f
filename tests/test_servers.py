"""Serving processes heartbeat; the sessions of a lost one are reaped, their frames untouched."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection
from django.utils import timezone

from terminals import records, servers
from terminals.audit import store
from terminals.audit.chain import frame_digest, genesis
from terminals.models import Frame, Server, Session
from terminals.permissions import ExecTarget
from terminals.servers import ServerRegistry, ServerStore
from tests.fixtures.daphne import run_daphne
from tests.fixtures.users import make_user

TARGET = ExecTarget("kubesim", "default", "web", "main")


def make_server(hostname: str = "web-1", pid: int = 100, *, age: float = 0, stopped=False):
    """A server whose last heartbeat was ``age`` seconds ago."""
    server = servers.register(hostname, pid)
    Server.objects.filter(pk=server.pk).update(
        heartbeat_at=timezone.now() - dt.timedelta(seconds=age),
        stopped_at=timezone.now() if stopped else None,
    )
    server.refresh_from_db()
    return server


def make_session(server=None, *, user=None, ended=False, age: float = 0, frames=()):
    """A session on ``server``, with correctly chained ``frames`` of (direction, data)."""
    session = Session.objects.create(
        user=user, username=user.get_username() if user else "sam", cluster="kubesim",
        namespace="default", pod="web", server=server,
    )  # fmt: skip
    head = genesis(session.pk)
    for seq, (direction, data) in enumerate(frames):
        head = frame_digest(head, seq, seq * 1000, direction, data)
        Frame.objects.create(
            session=session, seq=seq, offset_us=seq * 1000, direction=direction, data=data,
            digest=head.hex(),
        )  # fmt: skip
    update = {"head_digest": head.hex() if frames else ""}
    if ended:
        update.update(ended_at=timezone.now(), end_reason="exit", exit_code=0)
    if age:
        update["started_at"] = timezone.now() - dt.timedelta(seconds=age)
    Session.objects.filter(pk=session.pk).update(**update)
    session.refresh_from_db()
    return session


# The synchronous functions, on the store.


@pytest.mark.django_db
def test_a_server_is_alive_while_it_heartbeats():
    server = make_server(age=0)
    session = make_session(server)
    assert Session.objects.live().get() == session
    Server.objects.filter(pk=server.pk).update(
        heartbeat_at=timezone.now() - dt.timedelta(seconds=61)
    )
    assert not Session.objects.live().exists()
    assert servers.heartbeat(server.pk, [session.pk]) == set()
    assert Session.objects.live().get() == session
    servers.mark_stopped(server.pk)
    assert not Session.objects.live().exists()


@pytest.mark.django_db
def test_a_heartbeat_names_the_sessions_ended_elsewhere_and_adopts_orphans():
    server = make_server()
    running, ended, orphan = make_session(server), make_session(server, ended=True), make_session()
    found = servers.heartbeat(server.pk, [running.pk, ended.pk, orphan.pk])
    assert found == {ended.pk}
    orphan.refresh_from_db()
    assert orphan.server_id == server.pk  # opened before the server registered: now reapable


@pytest.mark.django_db
def test_a_heartbeat_of_a_deleted_server_says_so():
    server = make_server()
    Server.objects.filter(pk=server.pk).delete()
    with pytest.raises(Server.DoesNotExist):
        servers.heartbeat(server.pk, [])


@pytest.mark.django_db
def test_the_reaper_ends_only_the_sessions_of_lost_servers_and_keeps_their_frames():
    alive, dead = make_server(age=10), make_server("web-2", 4242, age=61)
    stopped = make_server("web-3", 7, stopped=True)
    frames = [("r", b"80x24"), ("i", b"ls\r"), ("o", b"a b\r\n$ ")]
    kept = make_session(alive, frames=frames)
    lost = make_session(dead, frames=frames)
    finished = make_session(dead, ended=True, frames=frames)
    left_behind = make_session(stopped)
    old_orphan = make_session(age=28801)
    young_orphan = make_session(age=60)
    before = {s.pk: (s.head_digest, s.ended_at) for s in Session.objects.all()}

    assert servers.reap() == 3

    def reloaded(session):
        session.refresh_from_db()
        return session

    for session in (lost, left_behind, old_orphan):
        session = reloaded(session)
        assert session.ended_at is not None
        assert session.end_reason == Session.EndReason.SERVER_LOST
        assert session.get_end_reason_display() == "server lost"
        assert "the session was ended by the reaper" in session.end_message
    assert "Its server process (web-2 pid 4242) stopped answering" in reloaded(lost).end_message
    assert "(web-3 pid 7) stopped without recording" in reloaded(left_behind).end_message
    for session in (kept, young_orphan):
        assert reloaded(session).ended_at is None
    finished = reloaded(finished)
    assert (finished.end_reason, finished.ended_at) == ("exit", before[finished.pk][1])
    for session in (kept, lost, finished):
        session = reloaded(session)
        assert session.head_digest == before[session.pk][0]
        assert str(store.verify_session(session)) == "intact (3 frames)"
    assert servers.reap() == 0  # an end is never written twice


@pytest.mark.django_db
def test_the_reaper_forgets_long_dead_servers_that_held_no_session():
    forgotten = make_server(age=8 * 86400)
    remembered = make_server(age=8 * 86400)
    make_session(remembered, ended=True)
    recent = make_server(age=3600)
    servers.reap()
    assert set(Server.objects.values_list("pk", flat=True)) == {remembered.pk, recent.pk}
    assert not Server.objects.filter(pk=forgotten.pk).exists()


@pytest.mark.django_db
def test_a_session_of_a_lost_server_does_not_count_against_the_limit():
    user = make_user("sam")
    alive, dead = make_server(), make_server(age=61)
    make_session(dead, user=user)
    opened = records.open_session(user, TARGET, None, "", 1, server_id=alive.pk)
    assert opened is not None and opened.server_id == alive.pk
    assert records.open_session(user, TARGET, None, "", 1, server_id=alive.pk) is None


@pytest.mark.django_db
def test_a_session_opened_on_a_deleted_server_row_opens_without_one():
    gone = make_server()
    Server.objects.filter(pk=gone.pk).delete()
    opened = records.open_session(make_user("sam"), TARGET, None, "", 1, server_id=gone.pk)
    assert opened is not None and opened.server_id is None


# The registry's rounds, against a fake store and a fake clock.


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """Records what the registry asks; ``down`` makes every call fail as a dead database."""

    def __init__(self) -> None:
        self.down = False
        self.refuse_ends = False
        self.gone = False
        self.registered: list[Server] = []
        self.beats: list[list[uuid.UUID]] = []
        self.ended: set[uuid.UUID] = set()
        self.reaps = 0
        self.memory_given_back = 0
        self.memory_steps: list[str] = []
        self.closed: list[tuple] = []
        self.stopped: list[uuid.UUID] = []

    def _check(self) -> None:
        if self.down:
            raise DatabaseError("connection refused")

    def register(self, hostname: str, pid: int) -> Server:
        self._check()
        self.registered.append(Server(hostname=hostname, pid=pid))
        return self.registered[-1]

    def heartbeat(self, server_id, live_ids) -> set[uuid.UUID]:
        self._check()
        if self.gone:
            raise Server.DoesNotExist
        self.beats.append(list(live_ids))
        return self.ended & set(live_ids)

    def reap(self) -> int:
        self._check()
        self.reaps += 1
        return 0

    def close_session(self, *args) -> None:
        self._check()
        if self.refuse_ends:
            raise DatabaseError("still read-only")
        self.closed.append(args)

    def mark_stopped(self, server_id) -> None:
        self._check()
        self.stopped.append(server_id)

    def collect_garbage(self) -> None:
        self.memory_steps.append("collect")

    def give_back_memory(self) -> None:
        self.memory_steps.append("trim")
        self.memory_given_back += 1

    def port(self) -> ServerStore:
        return ServerStore(
            register=self.register, heartbeat=self.heartbeat, mark_stopped=self.mark_stopped,
            reap=self.reap, close_session=self.close_session,
            collect_garbage=self.collect_garbage, give_back_memory=self.give_back_memory,
        )  # fmt: skip


@pytest.fixture
def fake():
    return FakeStore()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def registry(fake, clock):
    return ServerRegistry(store=fake.port(), clock=clock, hostname="web-1", pid=100)


async def ticks_at(registry, clock, *moments):
    for moment in moments:
        clock.now = moment
        await registry.tick()


async def test_a_new_process_reaps_once_healthy_for_the_server_timeout(registry, fake, clock):
    await ticks_at(registry, clock, 0)
    assert registry.server_id == fake.registered[0].pk
    assert (fake.registered[0].hostname, fake.registered[0].pid) == ("web-1", 100)
    await ticks_at(registry, clock, 15, 30, 45)
    assert fake.reaps == 0
    await ticks_at(registry, clock, 60)
    assert fake.reaps == 1


async def test_after_a_failed_heartbeat_it_waits_again_before_reaping(registry, fake, clock):
    await ticks_at(registry, clock, 0, 15, 30, 45, 60)
    assert fake.reaps == 1
    fake.down = True
    await ticks_at(registry, clock, 75)
    fake.down = False
    await ticks_at(registry, clock, 90, 105, 120, 135)
    assert fake.reaps == 1  # every server's heartbeat may be stale after an outage
    await ticks_at(registry, clock, 150)
    assert fake.reaps == 2


async def test_a_gap_between_heartbeats_counts_as_a_failure(registry, fake, clock):
    await ticks_at(registry, clock, 0, 15, 30, 45, 60)
    await ticks_at(registry, clock, 200)  # suspended for longer than the server timeout
    assert fake.reaps == 1
    await ticks_at(registry, clock, 215, 230, 245, 260)
    assert fake.reaps == 2


async def test_registration_is_retried_until_the_store_answers(registry, fake, clock):
    fake.down = True
    await ticks_at(registry, clock, 0, 15)
    assert registry.server_id is None
    fake.down = False
    await ticks_at(registry, clock, 30)
    assert registry.server_id == fake.registered[0].pk


async def test_a_server_whose_row_vanished_registers_again(registry, fake, clock):
    await ticks_at(registry, clock, 0)
    fake.gone = True
    await ticks_at(registry, clock, 15)
    assert registry.server_id is None
    fake.gone = False
    await ticks_at(registry, clock, 30)
    assert len(fake.registered) == 2 and registry.server_id == fake.registered[1].pk


async def test_owed_ends_are_retried_until_the_store_takes_them(registry, fake, clock):
    session = uuid.uuid4()
    registry.track(session, lambda: None)
    registry.owe_end(session, "exit", 0, "", (7, "audrey"))
    assert registry.owed == {session}
    fake.down = True
    await ticks_at(registry, clock, 0)
    fake.down, fake.refuse_ends = False, True
    await ticks_at(registry, clock, 15)
    assert registry.owed == {session} and fake.closed == []
    fake.refuse_ends = False
    await ticks_at(registry, clock, 30)
    assert fake.closed == [(session, "exit", 0, "", (7, "audrey"))]
    assert registry.owed == set()
    await ticks_at(registry, clock, 45)
    assert len(fake.closed) == 1
    assert fake.beats[-1] == []  # an owed session is no longer live here


async def test_sessions_ended_elsewhere_are_ended_here_once(registry, fake, clock):
    plain, coroutine, running = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    calls = []
    ended_here = asyncio.Event()

    async def end_coroutine():
        calls.append(coroutine)
        ended_here.set()

    registry.track(plain, lambda: calls.append(plain))
    registry.track(coroutine, end_coroutine)
    registry.track(running, lambda: calls.append(running))
    await ticks_at(registry, clock, 0, 15)
    assert set(fake.beats[-1]) == {plain, coroutine, running}
    fake.ended = {plain, coroutine}
    await ticks_at(registry, clock, 30)
    await ended_here.wait()
    await ticks_at(registry, clock, 45)
    assert sorted(calls) == sorted([plain, coroutine])
    assert fake.beats[-1] == [running]


async def test_memory_is_given_back_once_after_sessions_end(registry, fake, clock):
    first, second = uuid.uuid4(), uuid.uuid4()
    registry.track(first, lambda: None)
    registry.track(second, lambda: None)
    await ticks_at(registry, clock, 0)
    assert fake.memory_given_back == 0  # nothing has ended yet
    registry.untrack(first)
    registry.untrack(second)
    await ticks_at(registry, clock, 15)
    assert fake.memory_given_back == 1  # once for both
    # Cycles are collected first (a quiet process), so that what they held is trimmed too.
    assert fake.memory_steps == ["collect", "trim"]
    await ticks_at(registry, clock, 30)
    assert fake.memory_given_back == 1


async def test_a_busy_process_leaves_cycles_to_pythons_collector(registry, fake, clock):
    from terminals.servers import QUIET_SESSIONS

    for _ in range(QUIET_SESSIONS + 1):
        registry.track(uuid.uuid4(), lambda: None)
    ending = uuid.uuid4()
    registry.track(ending, lambda: None)
    await ticks_at(registry, clock, 0)
    registry.untrack(ending)
    await ticks_at(registry, clock, 15)
    assert fake.memory_steps == ["trim"]  # no collection holding the loop of a busy process


def test_giving_memory_back_works_here():
    from terminals import memory

    assert memory.give_back()  # glibc: Debian's and the CI's


def test_collecting_frees_what_a_cycle_held():
    import gc
    import weakref

    from terminals import memory

    class Part:
        other: Part

    first, second = Part(), Part()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    gc.disable()  # no automatic collection in between: the call is what frees it
    try:
        del first, second
        assert gone() is not None
        assert memory.collect() >= 2
        assert gone() is None
    finally:
        gc.enable()


async def test_stop_waits_for_the_sessions_then_marks_the_server_stopped(registry, fake, clock):
    await ticks_at(registry, clock, 0)
    session = uuid.uuid4()
    registry.track(session, lambda: None)
    stopping = asyncio.create_task(registry.stop(drain=30))
    await asyncio.sleep(0)  # let stop() start waiting
    assert registry.stopping and not stopping.done() and fake.stopped == []
    registry.untrack(session)
    await stopping
    assert fake.stopped == [registry.server_id]
    registry.start()  # a stopping registry does not start again
    assert registry._task is None


async def test_stop_gives_up_waiting_after_the_drain_timeout(registry, fake, clock):
    await ticks_at(registry, clock, 0)
    registry.track(uuid.uuid4(), lambda: None)
    await registry.stop(drain=0.01)
    assert fake.stopped == [registry.server_id]


# The registry on the real store, and under a real Daphne.


@pytest.mark.django_db(transaction=True)
async def test_a_process_registers_heartbeats_and_stops_on_the_store():
    registry = ServerRegistry(hostname="test-host", pid=4242)
    await registry.ensure_started()
    await registry.ensure_started()  # idempotent
    # By pid: the suite's shared Daphne, if running, registers rows of its own.
    server = await sync_to_async(Server.objects.get)(pid=4242)
    assert server.pk == registry.server_id
    assert (server.hostname, server.stopped_at) == ("test-host", None)
    await registry.tick()
    await registry.stop()
    server = await sync_to_async(Server.objects.get)(pid=4242)
    assert server.stopped_at is not None and server.heartbeat_at > server.started_at


@pytest.mark.django_db(transaction=True)
def test_daphne_registers_at_start_and_marks_itself_stopped_at_shutdown():
    env = {
        "WEBSHELL_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "WEBSHELL_TEST_KUBECONFIG": "/nonexistent/kubeconfig",
    }
    with run_daphne(env) as daphne:
        server = _wait_for(lambda: Server.objects.filter(pid=daphne.process.pid).first())
        assert server.stopped_at is None
        daphne.process.terminate()
        assert daphne.process.wait(20) == 0
    server.refresh_from_db()
    assert server.stopped_at is not None, "".join(daphne.log)


def _wait_for(probe, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        assert time.monotonic() < deadline, "Daphne did not register"
        time.sleep(0.05)  # another process's write: nothing to await but the database
    return found
