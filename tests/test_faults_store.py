"""The database rows of the fault table, through real processes: a real Daphne, kubesim, and
PostgreSQL failing for real (the server's connections terminated, a table locked by another
connection, a database that refuses connections).

Each test checks the records, the close code and message the client saw, and that the pod's
process has exited (kubesim's ``exit`` event of the session's exec).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from terminals.audit import store
from terminals.models import Frame, Session
from tests.fixtures.daphne import Daphne, daphne_environment, run_daphne
from tests.fixtures.databases import (
    ScratchDatabase,
    TableLock,
    manage,
    scratch_database,
    terminate_backends_of,
)
from tests.fixtures.terminal_client import run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="needs PostgreSQL (DATABASE_URL=postgres://…): SQLite has no server whose "
        "connections can be terminated, no statement timeout to bound a lock wait, and no "
        "connection limit",
    ),
]

T = TypeVar("T")
WEB = "/ws/terminals/kubesim/default/web/?container=main"
EndReason = Session.EndReason

# What the page shows (README, "The browser protocol").
SESSION_STOPPED = {
    "type": "error",
    "code": "audit_unavailable",
    "message": "The audit store cannot be written, so the session was stopped.",
}
NO_TERMINAL_CAN_OPEN = {
    "type": "error",
    "code": "audit_unavailable",
    "message": "The audit store is unavailable, so no terminal can open.",
}
CREATE_USER = (
    "from tests.fixtures.users import make_user, session_cookie; "
    "print(session_cookie(make_user('dora', everywhere=True)))"
)


def serve(env: dict[str, str]) -> Iterator[Daphne]:
    """A Daphne for one test; what it logged is printed, so a failing test shows it."""
    with run_daphne(env) as server:
        yield server
    print("server.log of the Daphne:\n" + "".join(server.log))


@pytest.fixture
def server(kubesim: Any, transactional_db: Any) -> Iterator[Daphne]:
    """A Daphne of this test's own (its database connections get terminated)."""
    yield from serve(daphne_environment(kubesim))


@pytest.fixture
def strict_server(kubesim: Any, transactional_db: Any) -> Iterator[Daphne]:
    """A Daphne that gives up on a commit after 1 s."""
    env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps({"AUDIT_COMMIT_TIMEOUT": 1})
    yield from serve(env)


@pytest.fixture
def cookie() -> str:
    return session_cookie(make_user("sam", everywhere=True))


@pytest.fixture
def scratch() -> Iterator[tuple[ScratchDatabase, str]]:
    """A migrated database of the test's own, with a user who may open any pod, and the
    session cookie of that user's login."""
    with scratch_database() as database:
        database.migrate()
        output = manage("shell", "-c", CREATE_USER, env=database.env)
        yield database, output.strip().splitlines()[-1]


@pytest.fixture
def scratch_server(kubesim: Any, scratch: tuple[ScratchDatabase, str]) -> Iterator[Daphne]:
    """A Daphne on the scratch database, quick to give up on the store and to heartbeat."""
    database, _ = scratch
    terminals = {"AUDIT_COMMIT_TIMEOUT": 1, "HEARTBEAT_INTERVAL": 1, "SERVER_TIMEOUT": 3}
    env = {
        **daphne_environment(kubesim),
        **database.env,
        "WEBSHELL_TEST_TERMINALS": json.dumps(terminals),
    }
    yield from serve(env)


def current_database() -> str:
    return str(connection.settings_dict["NAME"])


def stdin_by_exec(kubesim: Any) -> dict[str, bytes]:
    """What each kubesim exec's process received on stdin."""
    received: dict[str, bytes] = defaultdict(bytes)
    for event in kubesim.transcript_events():
        if event["event"] == "stdin":
            received[event["exec"]] += base64.b64decode(event["data"])
    return received


def exec_that_received(kubesim: Any, typed: str) -> str:
    """The id of the one kubesim exec whose process received ``typed``."""
    received = stdin_by_exec(kubesim)
    execs = [
        event["exec"]
        for event in kubesim.transcript_events()
        if event["event"] == "start" and typed.encode() in received[event["exec"]]
    ]
    assert len(execs) == 1, f"{len(execs)} execs received {typed!r}"
    return execs[0]


async def process_exited(kubesim: Any, exec_id: str) -> dict[str, Any]:
    """kubesim's ``exit`` event of the exec (its process is gone)."""
    return await kubesim.event(lambda e: e["event"] == "exit" and e["exec"] == exec_id)


async def poll(read: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float) -> T:
    """Read until ``done`` (or ``timeout`` seconds); the last value read, for the assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)  # another process's write: nothing to await but the database


def stored_frames(session_id: str) -> list[tuple[int, str, bytes]]:
    frames = Frame.objects.filter(session_id=session_id).order_by("seq")
    return [(f.seq, f.direction, bytes(f.data)) for f in frames]


async def test_a_connection_terminated_once_is_replaced_and_no_frame_is_lost_or_doubled(
    kubesim, server, cookie
):
    async with terminal(server, WEB, cookie) as client:
        ready = await client.until_message("ready")
        await run_line(client, say("before-drop"), "before-drop")
        killed = await asyncio.to_thread(
            terminate_backends_of, server.process.pid, current_database()
        )
        # The recorder's connection was among them: its next commit meets a dead connection.
        assert store.APPLICATION_NAME in killed, killed
        # The user types on at once: the output arrives and the terminal stays open.
        await run_line(client, say("after-drop"), "after-drop")
        await run_line(client, "echo more; " + say("still-here"), "still-here")
        await client.type("exit\r")
        assert await client.until_closed() == 1000
    assert client.messages == [ready, {"type": "exit", "code": 0}]

    exec_id = exec_that_received(kubesim, say("before-drop"))
    await process_exited(kubesim, exec_id)
    session_id = ready["session"]
    frames = await sync_to_async(stored_frames)(session_id)
    assert [seq for seq, _, _ in frames] == list(range(len(frames)))
    stdin = b"".join(data for _, direction, data in frames if direction == "i")
    stdout = b"".join(data for _, direction, data in frames if direction == "o")
    # Stored exactly once each: what the pod received and what the browser was sent.
    assert stdin == stdin_by_exec(kubesim)[exec_id]
    assert stdout == bytes(client.output)
    assert [data for _, direction, data in frames if direction == "r"] == [b"80x24"]
    session = await Session.objects.aget(pk=session_id)
    assert (session.end_reason, session.exit_code) == (EndReason.EXIT, 0)
    assert (session.bytes_in, session.bytes_out) == (len(stdin), len(stdout))
    assert session.frames_in == sum(1 for _, direction, _ in frames if direction == "i")
    assert session.frames_out == sum(1 for _, direction, _ in frames if direction == "o")
    verified = await asyncio.to_thread(
        manage, "audit", "verify", session_id, env={"WEBSHELL_TEST_DB_NAME": current_database()}
    )
    assert f"{session_id}: intact" in verified


async def test_a_table_lock_ends_the_session_with_4503_long_before_the_lock_is_released(
    kubesim, strict_server, cookie
):
    async with terminal(strict_server, WEB, cookie) as client:
        ready = await client.until_message("ready")
        await run_line(client, say("before-lock"), "before-lock")
        # Held as a migration or a careless maintenance job would (for up to 30 s): released
        # only once the client has seen the session end.
        lock = await asyncio.to_thread(TableLock, current_database(), "terminals_frame")
        try:
            await client.type("echo typed-under-the-lock\r")
            # AUDIT_COMMIT_TIMEOUT is 1 s: the end comes in seconds, not when the lock goes.
            assert await client.until_closed(timeout=10) == 4503
        finally:
            await asyncio.to_thread(lock.release)
    assert client.messages[-1] == SESSION_STOPPED

    session = await poll(
        lambda: Session.objects.aget(pk=ready["session"]), lambda s: s.ended_at is not None, 10
    )
    assert session.end_reason == EndReason.AUDIT_UNAVAILABLE
    exec_id = exec_that_received(kubesim, say("before-lock"))
    await process_exited(kubesim, exec_id)
    # Fail closed: the line that could not be recorded never reached the pod.
    assert b"typed-under-the-lock" not in stdin_by_exec(kubesim)[exec_id]
    assert (await sync_to_async(store.verify_session)(session)).ok
    # The store's threads are not stuck behind the lock: the next terminal works.
    async with terminal(strict_server, WEB, cookie) as second:
        await second.until_message("ready")
        await run_line(second, say("after-lock"), "after-lock")
        await second.type("exit\r")
        assert await second.until_closed() == 1000


async def test_a_database_refusing_connections_fails_closed_and_the_end_is_written_later(
    kubesim, scratch, scratch_server
):
    database, cookie = scratch
    session_row = "SELECT ended_at, end_reason FROM terminals_session WHERE id = %s"
    async with terminal(scratch_server, WEB, cookie) as first:
        ready = await first.until_message("ready")
        session_id = uuid.UUID(ready["session"])
        await run_line(first, say("before-refusal"), "before-refusal")
        await asyncio.to_thread(database.refuse_connections)
        try:
            # The live terminal: the next keystroke cannot be recorded, so the session ends.
            await first.type("echo typed-while-refused\r")
            assert await first.until_closed(timeout=10) == 4503
            assert first.messages[-1] == SESSION_STOPPED
            # A new terminal is refused with the documented error, not a failed handshake.
            async with terminal(scratch_server, WEB, cookie) as second:
                assert await second.until_closed(timeout=10) == 4503
            assert second.messages == [NO_TERMINAL_CAN_OPEN]
            # The first session's end cannot be written yet.
            row = await asyncio.to_thread(database.fetch_one, session_row, [session_id])
            assert row == (None, "")
        finally:
            await asyncio.to_thread(database.accept_connections)

    # The server owes that end and writes it within a few heartbeats (1 s apart).
    row = await poll(
        lambda: asyncio.to_thread(database.fetch_one, session_row, [session_id]),
        lambda row: row[0] is not None,
        10,
    )
    assert row[1] == EndReason.AUDIT_UNAVAILABLE
    exec_id = exec_that_received(kubesim, say("before-refusal"))
    await process_exited(kubesim, exec_id)
    assert b"typed-while-refused" not in stdin_by_exec(kubesim)[exec_id]
    # With the database back, terminals open again.
    async with terminal(scratch_server, WEB, cookie) as third:
        await third.until_message("ready")
        await run_line(third, say("after-refusal"), "after-refusal")
        await third.type("exit\r")
        assert await third.until_closed() == 1000
