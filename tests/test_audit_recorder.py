"""The recorder against the real database: write-ahead, group commit, bounded, fail-closed.

Store faults (a lost connection, a hung commit) are played by fake group writes around or instead
of the real ``writes.write_group``, given to a ``GroupWriter`` passed to the recorder. The group
writer's own rules (grouping, slots, isolation) are tested in ``test_audit_writer.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import sync_to_async
from django.db import IntegrityError, OperationalError, connection, connections, transaction

from terminals.audit import store, writes
from terminals.audit import writer as writer_module
from terminals.audit.loopwrites import LoopWrites
from terminals.audit.recorder import STDIN, STDOUT, AuditUnavailable, Recorder
from terminals.audit.writer import GroupWriter
from terminals.models import Command, Frame, Session
from tests.fixtures.users import make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def executor(monkeypatch):
    """A one-thread executor for this test, whose database connection is closed afterwards
    (the shared executor's threads would keep the test database open past the run)."""
    pool = ThreadPoolExecutor(max_workers=1)
    monkeypatch.setattr(writer_module, "_executor", pool)
    yield pool
    pool.submit(connections.close_all).result()
    pool.shutdown()


@pytest.fixture
def session_id():
    user = make_user("ann")
    session = Session.objects.create(user=user, username="ann", cluster="c", namespace="n", pod="p")
    return session.pk


class GatedWrites:
    """Spy on the real group write (on PostgreSQL the loop's, on SQLite the thread's): counts
    rows per commit and can hold a commit back."""

    def __init__(self, monkeypatch):
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        real = writes.write_group
        real_on_loop = LoopWrites.write

        def write_group(batches, **kwargs):
            self.entered.set()
            self.gate.wait(10)
            self.sizes.append(sum(len(batch.frames) for batch in batches))
            return real(batches, **kwargs)

        async def write_on_loop(loop_writes, batches):
            self.entered.set()
            await asyncio.to_thread(self.gate.wait, 10)
            self.sizes.append(sum(len(batch.frames) for batch in batches))
            return await real_on_loop(loop_writes, batches)

        monkeypatch.setattr(writer_module, "write_group", write_group)
        monkeypatch.setattr(LoopWrites, "write", write_on_loop)


async def stored(session_id) -> int:
    return await Frame.objects.filter(session_id=session_id).acount()


async def test_a_frame_is_released_only_after_its_commit(session_id, monkeypatch):
    writes = GatedWrites(monkeypatch)
    writes.gate.clear()
    recorder = Recorder(session_id)
    done = await recorder.submit(STDIN, b"ls\r")
    await asyncio.to_thread(writes.entered.wait, 10)
    assert not done.done()  # the commit is held back, so the frame may not go anywhere
    assert await stored(session_id) == 0
    writes.gate.set()
    await done
    assert await stored(session_id) == 1
    await recorder.close()


async def test_frames_that_arrive_during_a_commit_join_the_next_one(session_id, monkeypatch):
    writes = GatedWrites(monkeypatch)
    writes.gate.clear()
    recorder = Recorder(session_id)
    first = await recorder.submit(STDOUT, b"first")
    await asyncio.to_thread(writes.entered.wait, 10)
    later = [await recorder.submit(STDOUT, b"x%d" % n) for n in range(50)]
    writes.gate.set()
    await asyncio.gather(first, *later)
    await recorder.close()
    # Two commits; the 50 output frames of the second were merged into one row.
    assert writes.sizes == [1, 1]
    row = await Frame.objects.aget(session_id=session_id, seq=1)
    assert bytes(row.data) == b"".join(b"x%d" % n for n in range(50))
    totals = await sync_to_async(store.totals)(session_id)
    assert totals["frames_out"] == 2  # stored rows, as in the Frame table
    assert totals["bytes_out"] == 5 + sum(len(b"x%d" % n) for n in range(50))
    session = await Session.objects.aget(pk=session_id)
    assert (await sync_to_async(store.verify_session)(session)).ok


async def test_a_batch_holds_at_most_max_batch_bytes(session_id, monkeypatch):
    """A streaming session's backlog goes in several commits, so others wait for less."""
    from terminals.audit.recorder import MAX_BATCH, MAX_ROW

    writes = GatedWrites(monkeypatch)
    writes.gate.clear()
    writer = GroupWriter()
    monkeypatch.setattr(writer, "shared", lambda: False)  # this session alone
    recorder = Recorder(session_id, writer=writer)
    first = await recorder.submit(STDIN, b"cat big\r")
    await asyncio.to_thread(writes.entered.wait, 10)
    chunks = [await recorder.submit(STDOUT, b"x" * MAX_ROW) for _ in range(20)]
    writes.gate.set()
    await asyncio.gather(first, *chunks)
    await recorder.close()
    per_batch = MAX_BATCH // MAX_ROW
    assert writes.sizes == [1, per_batch, per_batch, 20 - 2 * per_batch]
    assert await stored(session_id) == 21


async def test_a_batch_is_smaller_while_the_writer_is_shared(session_id, monkeypatch):
    """Beside other sessions, a stream's backlog goes in small commits: others wait less."""
    from terminals.audit.recorder import MAX_ROW, SHARED_BATCH

    writes = GatedWrites(monkeypatch)
    writes.gate.clear()
    writer = GroupWriter()
    monkeypatch.setattr(writer, "shared", lambda: True)
    recorder = Recorder(session_id, writer=writer)
    first = await recorder.submit(STDIN, b"cat big\r")
    await asyncio.to_thread(writes.entered.wait, 10)
    # PTY-sized reads: a batch of SHARED_BATCH bytes is one stored row of several of them.
    read = SHARED_BATCH // 4
    chunks = [await recorder.submit(STDOUT, b"x" * read) for _ in range(12)]
    writes.gate.set()
    await asyncio.gather(first, *chunks)
    await recorder.close()
    assert writes.sizes == [1, 1, 1, 1]
    output = Frame.objects.filter(session_id=session_id, seq__gt=0).order_by("seq")
    rows = [len(row.data) async for row in output]
    assert rows == [SHARED_BATCH] * 3
    assert SHARED_BATCH < MAX_ROW  # else the rows would say nothing of the batches


async def test_memory_is_bounded_the_reader_waits_for_the_store(session_id, monkeypatch):
    writes = GatedWrites(monkeypatch)
    writes.gate.clear()
    recorder = Recorder(session_id, max_in_flight_bytes=1000)
    await recorder.submit(STDOUT, b"x" * 1000)
    blocked = asyncio.ensure_future(recorder.submit(STDOUT, b"y"))
    await asyncio.to_thread(writes.entered.wait, 10)
    await asyncio.sleep(0.05)  # give the blocked submit every chance to get through; it must not
    assert not blocked.done()
    writes.gate.set()
    await (await blocked)
    await recorder.close()
    assert await stored(session_id) == 2


def rename_table(old: str, new: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {old} RENAME TO {new}")


async def test_a_failing_store_fails_every_waiting_and_later_frame(session_id):
    recorder = Recorder(session_id)
    await recorder.record(STDIN, b"before\r")
    await sync_to_async(rename_table)("terminals_frame", "terminals_frame_away")
    try:
        with pytest.raises(AuditUnavailable):
            await recorder.record(STDOUT, b"lost")
        with pytest.raises(AuditUnavailable):
            await recorder.submit(STDIN, b"after")
    finally:
        await sync_to_async(rename_table)("terminals_frame_away", "terminals_frame")
        await recorder.close()
    frames = [bytes(f.data) async for f in Frame.objects.filter(session_id=session_id)]
    assert frames == [b"before\r"]


class FlakyWrites:
    """The real write_group behind a fake connection loss on the first ``failures`` calls.

    ``landed`` plays an acknowledgement lost after the commit: the batch is written, then the
    connection error is raised anyway.
    """

    def __init__(self, failures: int, landed: bool = False, error: Exception | None = None):
        self.failures = failures
        self.landed = landed
        self.error = error or OperationalError("server closed the connection unexpectedly")
        self.calls: list[bool] = []  # the retry flag of each call

    def __call__(self, batches, *, retry=False):
        self.calls.append(retry)
        if len(self.calls) <= self.failures:
            if self.landed:
                writes.write_group(batches, retry=retry)
            raise self.error
        return writes.write_group(batches, retry=retry)


def recorder_with(write, session_id=None, commit_timeout: float = 10) -> Recorder:
    """A recorder whose group writer commits with ``write``."""
    writer = GroupWriter(write, commit_timeout=commit_timeout)
    return Recorder(session_id or uuid.uuid4(), writer=writer)


@pytest.mark.parametrize("landed", [False, True], ids=["lost-before-commit", "lost-ack"])
async def test_a_lost_connection_is_retried_once_and_each_frame_stored_once(session_id, landed):
    writes = FlakyWrites(failures=1, landed=landed)
    recorder = recorder_with(writes, session_id)
    stored_first = await recorder.record(STDIN, b"ls\r")
    assert writes.calls == [False, True]
    assert stored_first.seq == 0
    # The chain goes on from the batch that was committed (once).
    assert (await recorder.record(STDOUT, b"file\r\n")).seq == 1
    await recorder.close()
    rows = [(f.seq, bytes(f.data)) async for f in Frame.objects.filter(session_id=session_id)]
    assert rows == [(0, b"ls\r"), (1, b"file\r\n")]
    totals = await sync_to_async(store.totals)(session_id)
    assert totals["frames_in"] == 1 and totals["frames_out"] == 1
    session = await Session.objects.aget(pk=session_id)
    assert (await sync_to_async(store.verify_session)(session)).ok


async def test_a_commands_only_batch_that_landed_is_not_stored_twice(session_id):
    from terminals.audit.commands import CommandLine

    writes = FlakyWrites(failures=1, landed=True)
    recorder = recorder_with(writes, session_id)
    await recorder.record(STDIN, b"ls\r")  # fails once, landed: retried
    recorder.add_commands([CommandLine(5, "$ ls", "ls")])
    await recorder.close()
    assert writes.calls == [False, True, False]
    texts = [c.text async for c in Command.objects.filter(session_id=session_id)]
    assert texts == ["ls"]


async def test_a_second_connection_failure_ends_the_recording(session_id):
    writes = FlakyWrites(failures=2)
    recorder = recorder_with(writes, session_id)
    with pytest.raises(AuditUnavailable):
        await recorder.record(STDIN, b"ls\r")
    assert writes.calls == [False, True]
    assert recorder.failure is not None
    with pytest.raises(AuditUnavailable):
        await recorder.submit(STDIN, b"more")
    await recorder.close()
    assert await stored(session_id) == 0


@pytest.mark.parametrize(
    "error",
    [IntegrityError("duplicate key"), RuntimeError("a bug")],
    ids=["integrity", "bug"],
)
async def test_only_connection_errors_are_retried(session_id, error):
    writes = FlakyWrites(failures=1, error=error)
    recorder = recorder_with(writes, session_id)
    with pytest.raises(AuditUnavailable):
        await recorder.record(STDIN, b"ls\r")
    assert writes.calls == [False]
    await recorder.close()


class HangingWrites:
    """A writer that blocks until released (at the end of the test, so its thread ends)."""

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls = 0

    def __call__(self, batches, *, retry=False):
        self.calls += 1
        self.entered.set()
        self.release.wait(30)
        return {}


@pytest.fixture
def hanging():
    writes = HangingWrites()
    yield writes
    writes.release.set()


async def test_a_hung_commit_fails_every_waiter_after_the_commit_timeout(hanging):
    recorder = recorder_with(hanging, commit_timeout=0.05)
    in_commit = await recorder.submit(STDIN, b"ls\r")
    queued = await recorder.submit(STDIN, b"pwd\r")
    started = time.monotonic()
    async with asyncio.timeout(5):  # a test failure, not a hang, if the bound is missing
        with pytest.raises(AuditUnavailable):
            await in_commit
        with pytest.raises(AuditUnavailable):
            await queued
    assert time.monotonic() - started < 2
    assert isinstance(recorder.failure, AuditUnavailable)
    with pytest.raises(AuditUnavailable):
        await recorder.submit(STDIN, b"later")


async def test_close_does_not_wait_for_a_hung_commit(hanging):
    recorder = recorder_with(hanging, commit_timeout=0.05)
    done = await recorder.submit(STDOUT, b"last words")
    async with asyncio.timeout(5):
        await recorder.close()
    with pytest.raises(AuditUnavailable):
        await done


async def test_a_commit_queued_behind_a_hung_thread_is_bounded_too(hanging):
    """Two sessions share a one-thread executor; the second does not wait for the first."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        # Two slots, one thread: the second group is started, and waits for the thread.
        writer = GroupWriter(hanging, commit_timeout=0.05, pool=pool, in_flight=2)
        stuck = Recorder(uuid.uuid4(), writer=writer)
        behind = Recorder(uuid.uuid4(), writer=writer)
        first = await stuck.submit(STDIN, b"a")
        await asyncio.to_thread(hanging.entered.wait, 5)  # the first commit has the thread
        async with asyncio.timeout(5):
            with pytest.raises(AuditUnavailable):
                await behind.record(STDIN, b"b")
            with pytest.raises(AuditUnavailable):
                await first
        assert hanging.calls == 1  # the queued commit never ran: it was given up, not left
    finally:
        hanging.release.set()
        pool.shutdown()


async def test_the_commit_timeout_defaults_to_the_setting(settings):
    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_COMMIT_TIMEOUT": 0.25}
    assert GroupWriter(HangingWrites()).commit_timeout == 0.25


async def test_rows_are_chained_under_the_current_audit_key(session_id):
    from terminals.audit.chain import verify
    from terminals.audit.keyring import AuditKey, current_key

    recorder = Recorder(session_id)
    assert recorder.key is current_key()
    await recorder.record(STDIN, b"ls\r")
    await recorder.close()
    session = await Session.objects.aget(pk=session_id)
    assert session.key_id == current_key().id
    frames = await sync_to_async(lambda: list(store.chain_frames(session_id)))()
    assert verify(session_id, frames, session.head_digest, current_key()).ok
    other = AuditKey(b"not-the-audit-key-of-this-site-0123456789")
    assert not verify(session_id, frames, session.head_digest, other).ok


async def test_nothing_is_recorded_once_the_session_has_ended(session_id):
    """The end seals the frames: a late commit (a session reaped while its process stalled)
    fails, so the frame is not forwarded either."""
    from terminals import records

    recorder = Recorder(session_id)
    await recorder.record(STDIN, b"ls\r")
    await sync_to_async(records.close_session)(session_id, Session.EndReason.SERVER_LOST)
    with pytest.raises(AuditUnavailable):
        await recorder.record(STDOUT, b"after the end")
    await recorder.close()
    assert await stored(session_id) == 1
    session = await Session.objects.aget(pk=session_id)
    assert session.sealed_frames == 1 and session.seal


async def test_one_commit_carries_several_sessions_and_refuses_only_the_ended_one(monkeypatch):
    from terminals import records

    writes_spy = GatedWrites(monkeypatch)
    ids = []
    for name in ("ann", "bob", "cid"):
        user = await sync_to_async(make_user)(name)
        session = await Session.objects.acreate(
            user=user, username=name, cluster="c", namespace="n", pod="p"
        )
        ids.append(session.pk)
    writer = GroupWriter(in_flight=1)
    first, ended, live = (Recorder(pk, writer=writer) for pk in ids)
    writes_spy.gate.clear()
    holding = await first.submit(STDIN, b"a")  # its commit holds the only slot
    await asyncio.to_thread(writes_spy.entered.wait, 10)
    await sync_to_async(records.close_session)(ended.session_id, Session.EndReason.SERVER_LOST)
    refused = await ended.submit(STDOUT, b"too late")
    kept = await live.submit(STDOUT, b"kept")
    writes_spy.gate.set()
    await holding
    with pytest.raises(AuditUnavailable):
        await refused
    await kept
    assert writes_spy.sizes == [1, 2]  # the second commit was given bob's and cid's frames
    for recorder in (first, ended, live):
        await recorder.close()
    assert [await stored(pk) for pk in ids] == [1, 0, 1]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: PostgreSQL only")
async def test_an_end_waits_for_a_commit_in_flight_and_seals_its_frames(session_id):
    """The commit holds the session's row FOR KEY SHARE; the end's FOR UPDATE waits for it.

    The commit is held in flight, its lock taken, by another transaction inserting the same
    frame (seq 0) uncommitted: the commit's insert waits to see whether that one commits."""
    from terminals import records

    inserted, release = threading.Event(), threading.Event()

    def same_frame_uncommitted() -> None:
        try:
            with transaction.atomic():
                Frame.objects.create(
                    session_id=session_id, seq=0, offset_us=0, direction="i", data=b"", digest=""
                )
                inserted.set()
                release.wait(30)
                transaction.set_rollback(True)
        finally:
            connections.close_all()  # this thread's own connection

    def end() -> bool:
        try:
            return records.close_session(session_id, Session.EndReason.SERVER_LOST)
        finally:
            connections.close_all()  # this thread's own connection

    def waiting_on_locks() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
            return int(cursor.fetchone()[0])

    async def until_waiting(count: int) -> None:
        for _ in range(500):  # polling another process's state: there is no event to await
            if await sync_to_async(waiting_on_locks)() >= count:
                return
            await asyncio.sleep(0.02)
        pytest.fail(f"fewer than {count} sessions ever waited for a lock")

    blocker = threading.Thread(target=same_frame_uncommitted)
    blocker.start()
    try:
        assert await asyncio.to_thread(inserted.wait, 10)
        # Held in flight longer than the polling below may take, on a loaded machine too.
        recorder = Recorder(session_id, writer=GroupWriter(in_flight=1, commit_timeout=30))
        done = await recorder.submit(STDIN, b"ls\r")
        await until_waiting(1)  # the commit, its session's row locked, waits on the blocker
        ending = asyncio.ensure_future(asyncio.to_thread(end))
        await until_waiting(2)  # and the end waits too
        assert not done.done()
    finally:
        release.set()
        await asyncio.to_thread(blocker.join, 10)
    await done  # the frame committed, before the end
    assert await ending
    await recorder.close()
    session = await Session.objects.aget(pk=session_id)
    assert (session.sealed_frames, session.frames_in, session.bytes_in) == (1, 1, 3)
    report = await sync_to_async(store.verify_session)(session)
    assert report.ok
