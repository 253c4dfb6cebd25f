"""A client that acks output it never reads, through a real Daphne and kubesim.

It keeps the flow window open (1 GiB acked every 250 ms) and takes nothing off its socket, so
only the server's own bound (terminals.daphne) stands between the endless output of its
shell and Daphne's memory. The output the server has stored, and so read from the pod, stops
growing within that bound, and a normal session on the same Daphne carries on meanwhile.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from bench.hostile import HostileClient
from terminals.audit import store
from terminals.models import Session
from terminals.session.pump import CHUNK, READ_AHEAD
from tests.fixtures.terminal_client import run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

WEB = "/ws/terminals/kubesim/default/web/?container=main"
# What the server may hold besides the kernel's buffers: the pump's read-ahead, one read from
# the exec past it (kubesim's are 32 KiB at most), and in Daphne's transport up to its 64 KiB
# mark plus one message (a chunk and its frame header); with room to spare.
SERVER_BOUND = READ_AHEAD + 4 * CHUNK


async def output_stored(session: Session) -> int:
    """Bytes of output a live session has stored (its counters are written when it ends)."""
    totals = await sync_to_async(store.totals)(session.pk)
    return int(totals["bytes_out"])


async def live_session_of(username: str, timeout: float = 20) -> Session:
    """The user's live session, once it has stored output (another process writes it)."""
    deadline = time.monotonic() + timeout
    while True:
        session = await Session.objects.filter(username=username, ended_at__isnull=True).afirst()
        if session is not None and await output_stored(session) > 0:
            return session
        assert time.monotonic() < deadline, f"no live session with output for {username}"
        await asyncio.sleep(0.1)  # another process's write: nothing to await but the store


async def stops_growing(session: Session, tries: int = 60) -> int:
    """The stored output once two readings half a second apart agree; fails if it never does."""
    previous, now = -1, await output_stored(session)
    for _ in range(tries):
        if now == previous:
            return now
        await asyncio.sleep(0.5)  # another process's progress: nothing to await but time
        previous, now = now, await output_stored(session)
    raise AssertionError(f"the stored output kept growing: {now} bytes and counting")


@pytest.fixture
def cookies() -> tuple[str, str]:
    """Session cookies of the hostile user and of a normal one."""
    users = (make_user("mallory", everywhere=True), make_user("norma", everywhere=True))
    return session_cookie(users[0]), session_cookie(users[1])


async def test_acks_for_output_never_read_do_not_make_the_server_hold_it(daphne, cookies):
    cookie, normal = cookies
    hostile = await HostileClient.open("127.0.0.1", daphne.port, WEB, cookie)
    try:
        await hostile.start("yes")
        session = await live_session_of("mallory")

        stored = await stops_growing(session)

        # All the output stored is either still in the server (bounded) or in the kernel.
        held_by_kernel = hostile.kernel_held()
        assert stored <= SERVER_BOUND + held_by_kernel, (
            f"{stored} bytes read from the pod, {held_by_kernel} in the kernel's buffers"
        )
        assert hostile.acking, "bounded by backpressure, not by dropping the client"

        async with terminal(daphne, WEB, normal) as client:
            await client.until_message("ready")
            output = await run_line(client, say("STILL-HERE"), "STILL-HERE")
            assert b"STILL-HERE" in output, "another session on the same Daphne carries on"

        await session.arefresh_from_db()
        assert session.ended_at is None
        assert await output_stored(session) <= SERVER_BOUND + hostile.kernel_held(), "and stays so"
    finally:
        await hostile.close()

    # Leaving releases the send that waited on the full socket: the session ends.
    deadline = time.monotonic() + 20
    while session.ended_at is None:
        assert time.monotonic() < deadline, "the session outlived its client"
        await asyncio.sleep(0.1)  # another process's write: nothing to await but the store
        await session.arefresh_from_db()
    assert session.end_reason == Session.EndReason.CLIENT_CLOSED
