"""The recorder against the real database: write-ahead, group commit, bounded, fail-closed."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections

from terminals.audit import recorder as recorder_module
from terminals.audit import store
from terminals.audit.recorder import STDIN, STDOUT, AuditUnavailable, Recorder
from terminals.models import Frame, Session
from tests.fixtures.users import make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def executor(monkeypatch):
    """A one-thread executor for this test, whose database connection is closed afterwards
    (the shared executor's threads would keep the test database open past the run)."""
    pool = ThreadPoolExecutor(max_workers=1)
    monkeypatch.setattr(recorder_module, "EXECUTOR", pool)
    yield pool
    pool.submit(connections.close_all).result()
    pool.shutdown()


@pytest.fixture
def session_id():
    user = make_user("ann")
    session = Session.objects.create(user=user, username="ann", cluster="c", namespace="n", pod="p")
    return session.pk


class GatedWrites:
    """Spy on the real write_batch: counts batch sizes and can hold a commit back."""

    def __init__(self, monkeypatch):
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        real = recorder_module.write_batch

        def write_batch(session_id, frames, commands, head):
            self.entered.set()
            self.gate.wait(10)
            self.sizes.append(len(frames))
            real(session_id, frames, commands, head)

        monkeypatch.setattr(recorder_module, "write_batch", write_batch)


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
    session = await Session.objects.aget(pk=session_id)
    assert session.frames_out == 2  # stored rows, as in the Frame table
    assert session.bytes_out == 5 + sum(len(b"x%d" % n) for n in range(50))
    assert (await sync_to_async(store.verify_session)(session)).ok


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
