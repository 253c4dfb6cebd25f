"""``loopwrites.LoopWrites``' own rules, in process, with a fake connection (``FakeConnection``)
in place of psycopg's: connections reused one per commit in flight, never after a failure or a
cancellation. The real statement on a real PostgreSQL, its faults and its retries are in
``test_audit_store_faults.py``.
"""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from terminals.audit import loopwrites
from terminals.audit.loopwrites import LoopWrites
from terminals.audit.store import PendingFrame
from terminals.audit.writes import REFUSED, SessionBatch


class FakeConnection:
    """Answers the statement with the sessions it is told are live; ``hold`` keeps a statement
    running, and its cancellation too (as psycopg waits for the server's answer to a cancel)."""

    def __init__(self, live: set[uuid.UUID], fail: Exception | None = None) -> None:
        self.live = live
        self.fail = fail
        self.hold = False
        self.running = asyncio.Event()
        self.cancel_answered = asyncio.Event()
        self.statements = 0
        self.closing = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self.closing.is_set()

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    async def close(self) -> None:
        self.closing.set()

    @property
    def pgconn(self) -> FakeConnection:  # close_all() closes through the driver's own
        return self

    def finish(self) -> None:
        self.closing.set()


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn

    async def __aenter__(self) -> FakeCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, statement: str, parameters: list, *, binary: bool) -> None:
        assert binary
        self.conn.statements += 1
        await asyncio.sleep(0)  # the round trip: other commits run meanwhile
        if self.conn.fail is not None:
            raise self.conn.fail
        if self.conn.hold:
            self.conn.running.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await self.conn.cancel_answered.wait()
                raise

    async def fetchall(self) -> list[tuple[uuid.UUID]]:
        return [(session,) for session in self.conn.live]


@pytest.fixture
def connections(monkeypatch):
    """The connections ``loopwrites.connect`` made, in order, and the settings (sessions
    live, an error to raise) of those it makes next."""
    made: list[FakeConnection] = []
    settings: dict = {"live": set(), "fail": None}

    async def connect() -> FakeConnection:
        made.append(FakeConnection(settings["live"], settings["fail"]))
        return made[-1]

    monkeypatch.setattr(loopwrites, "connect", connect)
    return made, settings


def one_frame(session: uuid.UUID) -> SessionBatch:
    return SessionBatch(session, [PendingFrame(0, 0, "i", b"x", "00" * 32)])


async def test_a_connection_serves_one_commit_at_a_time_and_is_kept(connections):
    made, settings = connections
    ann, bob = uuid.uuid4(), uuid.uuid4()
    settings["live"].add(ann)
    writes = LoopWrites()
    # Two commits at once take two connections; the next ones reuse them.
    assert await asyncio.gather(writes.write([one_frame(ann)]), writes.write([one_frame(bob)])) == [
        {},
        {bob: REFUSED},
    ]
    assert len(made) == 2
    await writes.write([one_frame(ann)])
    await writes.write([one_frame(ann)])
    assert len(made) == 2 and sum(conn.statements for conn in made) == 4


async def test_a_connection_whose_commit_failed_is_closed_and_never_used_again(connections):
    made, settings = connections
    settings["fail"] = psycopg.OperationalError("server closed the connection unexpectedly")
    writes = LoopWrites()
    with pytest.raises(psycopg.OperationalError):
        await writes.write([one_frame(uuid.uuid4())])
    assert made[0].closed
    settings["fail"] = None
    await writes.write([one_frame(uuid.uuid4())])
    assert len(made) == 2 and made[1].statements == 1 and not made[1].closed


async def test_a_cancelled_commit_closes_its_connection_once_the_cancel_is_answered(
    connections,
):
    """The writer gave up on it: psycopg cancels the statement on the server and waits for the
    answer (the writer does not wait for that: ``test_audit_writer.py``); then the connection
    is closed, and the next commit connects anew."""
    made, _ = connections
    writes = LoopWrites()
    await writes.write([one_frame(uuid.uuid4())])
    held = made[0]
    held.hold = True
    commit = asyncio.ensure_future(writes.write([one_frame(uuid.uuid4())]))
    await held.running.wait()
    commit.cancel()
    await asyncio.sleep(0)
    assert not commit.done() and not held.closed  # waiting for the server's answer
    held.cancel_answered.set()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await commit
    assert held.closed
    await writes.write([one_frame(uuid.uuid4())])
    assert len(made) == 2 and made[1].statements == 1


async def test_close_all_closes_the_idle_connections(connections):
    made, _ = connections
    writes = LoopWrites()
    await writes.write([one_frame(uuid.uuid4())])
    loopwrites.close_all()
    assert made[0].closed
    await writes.write([one_frame(uuid.uuid4())])
    assert len(made) == 2
