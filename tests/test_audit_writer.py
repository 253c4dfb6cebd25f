"""The group writer's own rules, in process: grouping across sessions, commits in flight, the
size of a group, and failing closed per session.

The store is a fake (``Store``): a group write that records what it was given and can refuse a
session or raise; the thread pool is a fake too (``ManualPool``), which runs each submitted write
only when the test says, so the order of events is the test's and nothing sleeps. The writer
against the real database is tested through the recorder (``test_audit_recorder.py``,
``test_audit_store_faults.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import pytest
from django.db import IntegrityError, OperationalError

from terminals.audit.store import PendingFrame
from terminals.audit.writer import SHARED_WINDOW, GroupWriter, SessionRefused
from terminals.audit.writes import SessionBatch


class ManualPool(Executor):
    """Runs each submitted call when the test calls :meth:`run`, in submission order."""

    def __init__(self) -> None:
        self.queued: list[tuple[Callable[[], Any], Future[Any]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.queued.append((lambda: fn(*args, **kwargs), future))
        return future

    async def run(self, index: int = 0) -> None:
        """Run one queued call (the oldest by default) and let the loop hear of it."""
        call, future = self.queued.pop(index)
        try:
            future.set_result(call())
        except Exception as exc:
            future.set_exception(exc)
        await turns()


class Store:
    """A fake group write: what each call was given; sessions to refuse; errors to raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[uuid.UUID], bool]] = []
        self.refuse: set[uuid.UUID] = set()
        self.errors: list[Exception] = []  # raised by the next calls, one each
        self.poison: set[uuid.UUID] = set()  # a group holding one of these raises IntegrityError

    def __call__(self, batches: list[SessionBatch], *, retry: bool = False) -> dict[uuid.UUID, str]:
        ids = [batch.session_id for batch in batches]
        self.calls.append((ids, retry))
        if self.errors:
            raise self.errors.pop(0)
        if self.poison & set(ids):
            raise IntegrityError("duplicate key")
        return {session: "ended" for session in ids if session in self.refuse}


async def turns(count: int = 5) -> None:
    """Let the event loop run the callbacks now due (futures resolved across the pool)."""
    for _ in range(count):
        await asyncio.sleep(0)


def batch(size: int = 1, session: uuid.UUID | None = None) -> SessionBatch:
    frame = PendingFrame(0, 0, "i", b"x" * size, "0" * 64)
    return SessionBatch(session or uuid.uuid4(), [frame])


@pytest.fixture
def pool() -> ManualPool:
    return ManualPool()


@pytest.fixture
def store() -> Store:
    return Store()


def writer(store: Store, pool: ManualPool, **options: Any) -> GroupWriter:
    options.setdefault("in_flight", 2)
    return GroupWriter(store, pool=pool, commit_timeout=10, **options)


def commit(group: GroupWriter, one: SessionBatch) -> asyncio.Task[None]:
    return asyncio.ensure_future(group.commit(one))


async def one_group(group: GroupWriter, pool: ManualPool, *batches: SessionBatch) -> list[Any]:
    """Commit ``batches`` in one group of a one-slot writer: queued while another commit runs.
    Returns their tasks, with the group's write submitted (not run yet)."""
    blocker = commit(group, batch())
    await turns()
    tasks = [commit(group, one) for one in batches]
    await turns()
    await pool.run()
    await blocker
    return tasks


async def test_batches_queued_during_a_commit_go_together_in_the_next(store, pool):
    group = writer(store, pool, in_flight=1)
    first = commit(group, batch())
    await turns()
    later = [commit(group, batch()) for _ in range(3)]
    await turns()
    assert len(pool.queued) == 1  # one slot: the three wait for it
    await pool.run()
    await pool.run()
    await asyncio.gather(first, *later)
    assert [len(ids) for ids, _ in store.calls] == [1, 3]
    assert group.commits == 2


async def test_a_batch_starts_at_once_in_a_free_slot(store, pool):
    """A keystroke does not wait for a commit already running when a slot is free."""
    group = writer(store, pool, in_flight=2)
    running = commit(group, batch(size=1000))
    await turns()
    keystroke = commit(group, batch())
    await turns()
    assert len(pool.queued) == 2
    await pool.run(1)  # the keystroke's commit ends first
    assert keystroke.done() and not running.done()
    await pool.run()
    await running


async def test_no_more_commits_run_than_slots(store, pool):
    group = writer(store, pool, in_flight=2)
    tasks = []
    for _ in range(5):
        tasks.append(commit(group, batch()))
        await turns()
    assert len(pool.queued) == 2  # the third and later wait, together
    await pool.run()
    assert len(pool.queued) == 2
    await pool.run()
    await pool.run()
    await asyncio.gather(*tasks)
    assert [len(ids) for ids, _ in store.calls] == [1, 1, 3]


async def test_a_group_holds_at_most_its_byte_bound_and_at_least_one_batch(store, pool):
    group = writer(store, pool, in_flight=1, max_group_bytes=100)
    first = commit(group, batch())
    await turns()
    rest = [commit(group, batch(size)) for size in (60, 40, 30, 500)]
    await turns()
    for _ in range(4):
        await pool.run()
    await asyncio.gather(first, *rest)
    sizes = [len(ids) for ids, _ in store.calls]
    assert sizes == [1, 2, 1, 1]  # 60 + 40; 30 (500 would pass 100); 500 alone


async def test_a_refused_session_fails_alone(store, pool):
    group = writer(store, pool, in_flight=1)
    ended, live = batch(), batch()
    store.refuse.add(ended.session_id)
    tasks = await one_group(group, pool, ended, live)
    await pool.run()
    with pytest.raises(SessionRefused, match="ended"):
        await tasks[0]
    await tasks[1]


async def test_a_lost_connection_is_retried_once_for_the_whole_group(store, pool):
    group = writer(store, pool, in_flight=1)
    tasks = await one_group(group, pool, batch(), batch())
    store.errors = [OperationalError("server closed the connection unexpectedly")]
    await pool.run()
    await pool.run()
    await asyncio.gather(*tasks)
    assert [(len(ids), retry) for ids, retry in store.calls[1:]] == [(2, False), (2, True)]


async def test_a_second_connection_failure_fails_every_session_of_the_group(store, pool):
    group = writer(store, pool, in_flight=1)
    tasks = await one_group(group, pool, batch(), batch())
    store.errors = [OperationalError("gone"), OperationalError("gone again")]
    await pool.run()
    await pool.run()
    for task in tasks:
        with pytest.raises(OperationalError):
            await task
    assert len(store.calls) == 3  # the blocker's, the group's and its retry


async def test_another_error_is_isolated_to_the_batch_that_causes_it(store, pool):
    group = writer(store, pool, in_flight=1)
    good, bad, other = batch(), batch(), batch()
    store.poison.add(bad.session_id)
    tasks = await one_group(group, pool, good, bad, other)
    await pool.run()  # the group fails
    for _ in range(3):  # each batch alone
        await pool.run()
    await tasks[0]
    await tasks[2]
    with pytest.raises(IntegrityError):
        await tasks[1]
    assert [ids for ids, _ in store.calls[2:]] == [
        [good.session_id],
        [bad.session_id],
        [other.session_id],
    ]


async def test_a_single_batch_that_fails_is_not_tried_again(store, pool):
    group = writer(store, pool, in_flight=1)
    store.errors = [RuntimeError("a bug")]
    task = commit(group, batch())
    await turns()
    await pool.run()
    with pytest.raises(RuntimeError):
        await task
    assert len(store.calls) == 1


async def test_a_group_that_does_not_commit_in_time_fails_all_its_sessions(store, pool):
    group = writer(store, pool, in_flight=1)
    blocker = commit(group, batch())
    await turns()
    tasks = [commit(group, batch()), commit(group, batch())]
    await turns()
    group.commit_timeout = 0.01  # for the group of two, which is never run
    await pool.run()
    await blocker
    async with asyncio.timeout(5):
        for task in tasks:
            with pytest.raises(TimeoutError):
                await task
    # The slot is free again: the next batch gets a commit of its own.
    group.commit_timeout = 10
    later = commit(group, batch())
    await turns()
    assert len(pool.queued) == 2  # the hung call (still "running") and the new one
    await pool.run(1)
    await later
    assert group.commits == 2  # the blocker's and the later one
    assert [len(ids) for ids, _ in store.calls] == [1, 1]  # the hung one never ran


class SlowToCancel:
    """A fake write on the event loop (as PostgreSQL's) whose cancellation is answered only when
    the test says, as psycopg waits for the server's answer to a cancel request."""

    def __init__(self) -> None:
        self.calls = 0
        self.running = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.cancel_answered = asyncio.Event()

    async def __call__(self, batches: list[SessionBatch]) -> dict[uuid.UUID, str]:
        self.calls += 1
        if self.calls > 1:
            return {}
        self.running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            await self.cancel_answered.wait()
            raise
        raise AssertionError("not reached")


async def test_a_group_given_up_on_does_not_wait_for_its_cancellation(store, pool):
    """The sessions fail at the deadline and the slot goes to the next group, while the
    cancelled commit is still waiting for the store's answer."""
    slow = SlowToCancel()
    group = GroupWriter(store, pool=pool, loop_write=slow, in_flight=1, commit_timeout=0.01)
    stuck = commit(group, batch())
    await slow.running.wait()
    await asyncio.wait([stuck], timeout=5)  # (a timeout would cancel the wait, and hang)
    with pytest.raises(TimeoutError):
        stuck.result()
    assert slow.cancelled.is_set() and not slow.cancel_answered.is_set()
    group.commit_timeout = 10
    await group.commit(batch())  # the slot is free: committed on the loop at once
    assert slow.calls == 2 and group.commits == 1 and not store.calls
    slow.cancel_answered.set()
    await turns()


async def test_a_batch_whose_session_stopped_waiting_is_left_out(store, pool):
    group = writer(store, pool, in_flight=1)
    running = commit(group, batch())
    await turns()
    gone, kept = batch(), batch()
    gone_task, kept_task = commit(group, gone), commit(group, kept)
    await turns()
    gone_task.cancel()  # the session was torn down
    await pool.run()
    await pool.run()
    await asyncio.gather(running, kept_task)
    assert store.calls[-1][0] == [kept.session_id]


def test_sqlite_has_one_commit_in_flight(settings):
    from django.db import connection

    from terminals.audit.writer import commits_in_flight

    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_COMMITS_IN_FLIGHT": 3}
    assert commits_in_flight() == (1 if connection.vendor == "sqlite" else 3)


async def test_the_writer_is_shared_for_a_while_after_two_sessions_commit_in_turn(store, pool):
    now = [100.0]
    group = GroupWriter(store, pool=pool, commit_timeout=10, in_flight=1, clock=lambda: now[0])
    stream = uuid.uuid4()
    for _ in range(3):  # one session alone: not shared, however often it commits
        task = commit(group, batch(session=stream))
        await turns()
        await pool.run()
        await task
        now[0] += 1
    assert not group.shared()
    typist = commit(group, batch())
    await turns()
    assert group.shared()
    await pool.run()
    await typist
    now[0] += SHARED_WINDOW - 0.01
    assert group.shared()
    now[0] += 0.02
    assert not group.shared()
