"""Store faults: lost connections are retried without duplicates, hung commits are bounded.

The PostgreSQL tests break the recorder's own connections for real (``pg_terminate_backend``,
a table lock held by another connection), both the writer's threads' (SQLite's path, and
PostgreSQL's retries) and the event loop's (``loopwrites``, PostgreSQL's first attempts); the
rest run on either database.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import (
    IntegrityError,
    OperationalError,
    ProgrammingError,
    connection,
    connections,
    transaction,
)

from terminals.audit import loopwrites, store, writes
from terminals.audit.chain import frame_digest, genesis
from terminals.audit.commands import CommandLine
from terminals.audit.recorder import STDIN, STDOUT, AuditUnavailable, Recorder
from terminals.audit.store import PendingFrame, is_connection_error
from terminals.audit.writer import GroupWriter
from terminals.audit.writes import SessionBatch
from terminals.models import Command, Frame, Session
from tests.fixtures.users import make_user

pytestmark = pytest.mark.django_db(transaction=True)

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL (DATABASE_URL=postgres://…): SQLite has no server connections "
    "to terminate and no statement_timeout",
)


@pytest.fixture
def session_id():
    user = make_user("ann")
    session = Session.objects.create(user=user, username="ann", cluster="c", namespace="n", pod="p")
    return session.pk


def on_every_thread(pool: ThreadPoolExecutor, threads: int, call) -> None:
    """Run ``call`` once on each of the pool's threads (they meet at a barrier)."""
    barrier = threading.Barrier(threads, timeout=10)

    def job():
        barrier.wait()
        call()

    for future in [pool.submit(job) for _ in range(threads)]:
        future.result(timeout=20)


@pytest.fixture
def pool():
    """Two recorder threads of the test's own; their connections are closed afterwards."""
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-audit")
    yield executor
    on_every_thread(executor, 2, connections.close_all)
    executor.shutdown()


def batch(session_id, seq: int, data: bytes, head: bytes) -> tuple[list[PendingFrame], bytes]:
    digest = frame_digest(head, seq, seq * 1000, STDIN, data)
    return [PendingFrame(seq, seq * 1000, STDIN, data, digest.hex())], digest


def write_batch(session_id, frames, commands, *, retry: bool = False) -> dict:
    """One session's batch through the group write."""
    return writes.write_group([SessionBatch(session_id, frames, commands)], retry=retry)


def recorder_on(session_id, pool, *, on_loop: bool = False) -> Recorder:
    """A recorder whose group writer runs on the test's pool (two commits in flight): every
    commit, or with ``on_loop`` (PostgreSQL's default) only the retries."""
    loop_write = "auto" if on_loop else None
    return Recorder(session_id, writer=GroupWriter(pool=pool, in_flight=2, loop_write=loop_write))


# Which errors are a lost connection


def wrapped(cause: Exception) -> OperationalError:
    """A driver error as Django raises it."""
    error = OperationalError(str(cause))
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    "error",
    [
        wrapped(psycopg.errors.AdminShutdown("terminating connection")),  # pg_terminate_backend
        wrapped(psycopg.OperationalError("server closed the connection unexpectedly")),
        wrapped(psycopg.errors.ConnectionFailure("connection failure")),  # class 08
        psycopg.OperationalError("consuming input failed"),  # outside Django's wrappers
        OperationalError("unable to open database file"),  # SQLite, no SQLSTATE
    ],
)
def test_a_lost_connection_is_a_connection_error(error):
    assert is_connection_error(error)


@pytest.mark.parametrize(
    "error",
    [
        wrapped(psycopg.errors.QueryCanceled("statement timeout")),  # already took too long
        wrapped(psycopg.errors.LockNotAvailable("lock timeout")),
        IntegrityError("duplicate key value violates unique constraint"),
        ProgrammingError("relation does not exist"),
        RuntimeError("a bug"),
    ],
)
def test_other_errors_are_not_connection_errors(error):
    assert not is_connection_error(error)


# A retry does not store a batch twice


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's driver is called directly")
def test_a_driver_error_of_sqlite_counts_as_a_lost_connection(session_id, monkeypatch):
    """The frames go to the sqlite3 connection itself; its errors still come out as Django's,
    so a disk or file error is retried on a new connection as it was through the ORM."""
    import sqlite3

    class Failing:
        def execute(self, *args):
            raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(writes, "_sqlite", Failing)
    frames, _ = batch(session_id, 0, b"ls\r", genesis(session_id))
    with pytest.raises(OperationalError) as raised:
        write_batch(session_id, frames, [])
    assert is_connection_error(raised.value)
    monkeypatch.undo()
    assert write_batch(session_id, frames, [], retry=True) == {}
    assert Frame.objects.filter(session_id=session_id).count() == 1


def test_a_retry_of_a_batch_that_landed_stores_nothing_more(session_id):
    frames, _ = batch(session_id, 0, b"ls\r", genesis(session_id))
    commands = [CommandLine(1000, "$ ls", "ls")]
    write_batch(session_id, frames, commands)
    write_batch(session_id, frames, commands, retry=True)
    assert Frame.objects.filter(session_id=session_id).count() == 1
    assert Command.objects.filter(session_id=session_id).count() == 1
    totals = store.totals(session_id)
    assert totals["frames_in"] == 1 and totals["bytes_in"] == 3
    assert store.verify_session(Session.objects.get(pk=session_id)).ok


def test_a_retry_of_a_batch_that_did_not_land_writes_it(session_id):
    frames, _ = batch(session_id, 0, b"ls\r", genesis(session_id))
    write_batch(session_id, frames, [], retry=True)
    assert store.verify_session(Session.objects.get(pk=session_id)).ok


def test_a_commands_only_retry_is_written_once(session_id):
    commands = [CommandLine(2000, "$ pwd", "pwd")]
    write_batch(session_id, [], commands, retry=True)
    write_batch(session_id, [], commands, retry=True)
    assert list(Command.objects.filter(session_id=session_id).values_list("text", flat=True)) == [
        "pwd"
    ]


def test_a_retry_that_finds_another_frame_in_its_place_fails(session_id):
    frames, _ = batch(session_id, 0, b"ls\r", genesis(session_id))
    write_batch(session_id, frames, [])
    other, _ = batch(session_id, 0, b"rm -rf /\r", genesis(session_id))
    with pytest.raises(RuntimeError, match="not this batch's"):
        write_batch(session_id, other, [], retry=True)


# Real faults on PostgreSQL


def audit_backends(pool: ThreadPoolExecutor) -> list[int]:
    """The server processes of the pool's threads, each connected as a recorder thread."""
    pids: list[int] = []

    def connect() -> None:
        store.prepare_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pids.append(cursor.fetchone()[0])

    on_every_thread(pool, 2, connect)
    return pids


def terminate(pids: list[int]) -> list[str]:
    """Kill these backends (waiting until they are gone), as a failover or restart would.

    Only the test's own: another test run may share the database server. Returns the
    application names the victims had.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT application_name, pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE pid = ANY(%s)",
            [pids],
        )
        return [name for name, terminated in cursor.fetchall() if terminated]


@postgresql_only
async def test_a_session_survives_its_threads_connections_being_terminated(session_id, pool):
    recorder = recorder_on(session_id, pool)
    await recorder.record(STDIN, b"before\r")
    # Both threads hold a connection, so the retry finds a dead one wherever it runs.
    pids = await asyncio.to_thread(audit_backends, pool)
    assert await sync_to_async(terminate)(pids) == [store.APPLICATION_NAME] * 2

    # The session was idle; the database is healthy again; the user types.
    await recorder.record(STDIN, b"after\r")
    await recorder.record(STDOUT, b"output")
    await recorder.close()

    assert recorder.failure is None
    rows = [(f.seq, bytes(f.data)) async for f in Frame.objects.filter(session_id=session_id)]
    assert rows == [(0, b"before\r"), (1, b"after\r"), (2, b"output")]
    session = await Session.objects.aget(pk=session_id)
    assert (await sync_to_async(store.verify_session)(session)).ok


@postgresql_only
async def test_a_second_failure_on_the_threads_ends_the_recording(session_id, pool, monkeypatch):
    recorder = recorder_on(session_id, pool)
    await recorder.record(STDIN, b"before\r")
    attempts = []

    def die(*args):
        """Each attempt's connection is killed under it: the database keeps failing."""
        attempts.append(args)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    monkeypatch.setattr(writes, "_write_postgresql", die)
    with pytest.raises(AuditUnavailable):
        await recorder.record(STDIN, b"lost\r")
    assert len(attempts) == 2  # tried, then retried once
    await recorder.close()
    assert await Frame.objects.filter(session_id=session_id).acount() == 1


def audit_connections(*, running: bool = False) -> list[int]:
    """The server processes of the audit connections to this test database (``running``: those
    running a statement now)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s AND pid <> pg_backend_pid()"
            + (" AND state = 'active'" if running else ""),
            [store.APPLICATION_NAME],
        )
        return [row[0] for row in cursor.fetchall()]


@postgresql_only
async def test_a_session_survives_its_loop_connection_being_terminated(session_id, pool):
    """The first attempt on the loop fails; the retry goes to a thread, and lands."""
    others = set(await sync_to_async(audit_connections)())  # earlier tests' (closing)
    recorder = recorder_on(session_id, pool, on_loop=True)
    await recorder.record(STDIN, b"before\r")
    pids = set(await sync_to_async(audit_connections)()) - others
    assert len(pids) == 1
    assert await sync_to_async(terminate)(list(pids)) == [store.APPLICATION_NAME]

    await recorder.record(STDIN, b"after\r")  # retried on the pool's thread
    await recorder.record(STDOUT, b"output")  # on the loop again, on a new connection
    await recorder.close()

    assert recorder.failure is None
    rows = [(f.seq, bytes(f.data)) async for f in Frame.objects.filter(session_id=session_id)]
    assert rows == [(0, b"before\r"), (1, b"after\r"), (2, b"output")]
    now = set(await sync_to_async(audit_connections)()) - others
    assert len(now) == 2 and not now & pids  # the loop's new one, the thread's
    session = await Session.objects.aget(pk=session_id)
    assert (await sync_to_async(store.verify_session)(session)).ok


@postgresql_only
async def test_a_failure_on_the_loop_then_on_the_thread_ends_the_recording(
    session_id, pool, monkeypatch
):
    recorder = recorder_on(session_id, pool, on_loop=True)
    await recorder.record(STDIN, b"before\r")
    attempts = []
    real_execute = loopwrites._execute

    async def die_on_loop(conn, statement, parameters):
        attempts.append("loop")
        await real_execute(conn, "SELECT pg_terminate_backend(pg_backend_pid())", [])

    def die_on_thread(*args):
        attempts.append("thread")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    monkeypatch.setattr(loopwrites, "_execute", die_on_loop)
    monkeypatch.setattr(writes, "_write_postgresql", die_on_thread)
    with pytest.raises(AuditUnavailable):
        await recorder.record(STDIN, b"lost\r")
    assert attempts == ["loop", "thread"]  # tried, then retried once
    await recorder.close()
    assert await Frame.objects.filter(session_id=session_id).acount() == 1


class TableLock:
    """Another connection holding ACCESS EXCLUSIVE on the frame table until released."""

    def __init__(self) -> None:
        self.locked = threading.Event()
        self.released = threading.Event()
        self.thread = threading.Thread(target=self._hold)

    def _hold(self) -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("LOCK TABLE terminals_frame IN ACCESS EXCLUSIVE MODE")
                self.locked.set()
                self.released.wait(30)
        finally:
            connections.close_all()

    def take(self) -> None:
        self.thread.start()
        assert self.locked.wait(10)

    def release(self) -> None:
        self.released.set()
        self.thread.join(10)


async def a_frozen_commit_fails_in_time(session_id, recorder: Recorder, then) -> None:
    """With the frame table locked, the next frame fails within the commit timeout (1 s); then
    ``then()`` is awaited, still under the lock. Only the frame before the lock is stored."""
    await recorder.record(STDIN, b"before\r")
    lock = TableLock()
    await asyncio.to_thread(lock.take)
    try:
        started = time.monotonic()
        with pytest.raises(AuditUnavailable):
            await recorder.record(STDIN, b"frozen\r")
        assert time.monotonic() - started < 2.5
        await then()
    finally:
        await asyncio.to_thread(lock.release)
    await recorder.close()
    rows = [bytes(f.data) async for f in Frame.objects.filter(session_id=session_id)]
    assert rows == [b"before\r"]


@postgresql_only
async def test_a_locked_table_ends_the_session_within_the_commit_timeout_on_a_thread(
    session_id, pool, settings
):
    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_COMMIT_TIMEOUT": 1}

    async def threads_work_again() -> None:
        # The server cancelled the statement too: both threads work again, lock or not.
        async with asyncio.timeout(3):
            await asyncio.to_thread(on_every_thread, pool, 2, lambda: None)

    await a_frozen_commit_fails_in_time(
        session_id, recorder_on(session_id, pool), threads_work_again
    )


@postgresql_only
async def test_a_locked_table_ends_the_session_within_the_commit_timeout_on_the_loop(
    session_id, pool, settings, monkeypatch
):
    """The loop's statement is cancelled on the server after the session has failed: no
    backend is left waiting for the lock once that has ended."""
    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_COMMIT_TIMEOUT": 1}
    statement_ended = asyncio.Event()
    real_execute = loopwrites._execute
    statements = []

    async def execute(*args):
        statements.append(args)
        try:
            return await real_execute(*args)
        finally:
            if len(statements) == 2:  # the frozen frame's (the first is the frame before)
                statement_ended.set()

    async def no_statement_left() -> None:
        async with asyncio.timeout(3):
            await statement_ended.wait()
        assert await sync_to_async(audit_connections)(running=True) == []  # none on the lock

    monkeypatch.setattr(loopwrites, "_execute", execute)
    recorder = recorder_on(session_id, pool, on_loop=True)
    await a_frozen_commit_fails_in_time(session_id, recorder, no_statement_left)


@postgresql_only
def test_the_threads_connections_are_named_and_bounded(settings, pool):
    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_COMMIT_TIMEOUT": 3}

    def show() -> tuple[str, str]:
        store.prepare_connection()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('application_name'), current_setting('statement_timeout')"
            )
            return cursor.fetchone()

    assert pool.submit(show).result(10) == ("terminals-audit", "3s")


@postgresql_only
async def test_the_loop_connections_are_named_and_bounded(settings):
    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_COMMIT_TIMEOUT": 3}
    conn = await loopwrites.connect()
    try:
        cursor = await conn.execute(
            "SELECT current_setting('application_name'), current_setting('statement_timeout')"
        )
        assert await cursor.fetchone() == ("terminals-audit", "3s")
        assert conn.autocommit  # the statement is atomic on its own
    finally:
        await conn.close()
