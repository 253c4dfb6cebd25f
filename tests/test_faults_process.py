"""Faults of the serving process itself, through real Daphne processes and kubesim: a Daphne
killed (SIGKILL) has its sessions reaped by another; a Daphne stopped (SIGTERM) ends its
sessions with 1012 and a message; an exception inside a session ends it with its record."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission

from terminals.audit import store
from terminals.models import Session
from tests.fixtures.daphne import Daphne, daphne_environment, run_daphne
from tests.fixtures.terminal_client import run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

WEB = "/ws/terminals/kubesim/default/web/?container=main"
# Fast heartbeats, so that a lost server is noticed in seconds, not a minute.
FAST = {"HEARTBEAT_INTERVAL": 1, "SERVER_TIMEOUT": 3}


@contextlib.contextmanager
def daphne_with(kubesim: Any, **terminals: Any) -> Iterator[Daphne]:
    env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps(terminals)
    with run_daphne(env) as server:
        yield server


def people() -> tuple[str, str]:
    """Cookies of a user with terminals everywhere and of an auditor."""
    user = session_cookie(make_user("sam", everywhere=True))
    auditor = make_user("audrey")
    auditor.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="terminals", codename__in=["view_session", "watch_session"]
        )
    )
    return user, session_cookie(auditor)


async def ended_record(session_id: str, timeout: float = 20) -> Session:
    """The session's record once it has ended (another process writes it: poll the store)."""
    deadline = time.monotonic() + timeout
    while True:
        session = await Session.objects.aget(pk=session_id)
        if session.ended_at is not None:
            return session
        assert time.monotonic() < deadline, f"session {session_id} still live after {timeout} s"
        await asyncio.sleep(0.1)  # another process's write: nothing to await but the store


async def exec_of(kubesim: Any, word: str) -> dict[str, Any]:
    """kubesim's ``start`` event of the exec whose stdin carried ``say(word)``."""
    typed = say(word).encode()
    stdin = await kubesim.event(
        lambda e: e["event"] == "stdin" and typed in base64.b64decode(e["data"])
    )
    return await kubesim.event(lambda e: e["event"] == "start" and e["exec"] == stdin["exec"])


async def assert_process_gone(kubesim: Any, start: dict[str, Any]) -> None:
    """The pod process of that exec has exited (kubesim wrote its ``exit`` event)."""
    await kubesim.event(lambda e: e["event"] == "exit" and e["exec"] == start["exec"])


async def assert_chain_intact(session_id: str) -> None:
    session = await Session.objects.aget(pk=session_id)
    verdict = await sync_to_async(store.verify_session)(session)
    assert verdict.ok, verdict


async def test_sigterm_ends_every_session_with_1012_and_its_record(kubesim):
    user, _ = await sync_to_async(people)()
    with daphne_with(kubesim) as server:
        async with terminal(server, WEB, user) as first, terminal(server, WEB, user) as second:
            one = await first.until_message("ready")
            two = await second.until_message("ready")
            await run_line(first, say("first-marker"), "first-marker")
            await run_line(second, say("second-marker"), "second-marker")
            execs = [await exec_of(kubesim, word) for word in ("first-marker", "second-marker")]
            server.process.send_signal(signal.SIGTERM)
            for client in (first, second):
                assert await client.until_closed() == 1012, "".join(server.log)
                error = client.messages[-1]
                assert error["type"] == "error" and error["code"] == "server_restarting"
                assert "restarting" in error["message"]
            # Daphne waits for its sessions to end, then exits by itself.
            assert await asyncio.to_thread(server.process.wait, 20) == 0
    for ready in (one, two):
        session = await Session.objects.aget(pk=ready["session"])
        assert session.end_reason == Session.EndReason.SERVER_STOPPED
        assert session.ended_at is not None
        await assert_chain_intact(ready["session"])
    for start in execs:
        await assert_process_gone(kubesim, start)


async def test_a_killed_server_is_reaped_by_another_and_its_user_is_not_locked_out(kubesim):
    user, auditor = await sync_to_async(people)()
    limits = {**FAST, "MAX_SESSIONS_PER_USER": 1}
    with daphne_with(kubesim, **limits) as survivor, daphne_with(kubesim, **limits) as doomed:
        async with terminal(doomed, WEB, user) as client:
            ready = await client.until_message("ready")
            await run_line(client, say("doomed-marker"), "doomed-marker")
            start = await exec_of(kubesim, "doomed-marker")
            watch = f"/ws/terminals/watch/{ready['session']}/"
            async with terminal(survivor, watch, auditor, size=None) as watcher:
                await watcher.until_output("doomed-marker")
                doomed.process.send_signal(signal.SIGKILL)
                assert await client.until_closed() is not None
                # The watcher is told the session ended, with why.
                ended = await watcher.until_message("ended", timeout=30)
                assert ended["reason"] == "server lost"
        await assert_process_gone(kubesim, start)
        session = await ended_record(ready["session"], timeout=30)
        assert session.end_reason == Session.EndReason.SERVER_LOST
        assert "reaper" in session.end_message
        await assert_chain_intact(ready["session"])
        # The orphan no longer counts against the limit of one session.
        async with terminal(survivor, WEB, user) as again:
            await again.until_message("ready")
            await run_line(again, say("after-reaping"), "after-reaping")


async def test_a_session_of_a_lost_server_does_not_count_before_it_is_reaped(kubesim):
    """The per-user limit counts only sessions whose server is alive."""
    user, _ = await sync_to_async(people)()
    limits = {**FAST, "MAX_SESSIONS_PER_USER": 1}
    with daphne_with(kubesim, **limits) as doomed:
        async with terminal(doomed, WEB, user) as client:
            ready = await client.until_message("ready")
            doomed.process.send_signal(signal.SIGKILL)
            await client.until_closed()
    # No server is left to reap it: the record is still open, but its server is lost.
    session = await Session.objects.select_related("server").aget(pk=ready["session"])
    assert session.ended_at is None and session.server is not None
    with daphne_with(kubesim, **limits) as fresh:
        deadline = time.monotonic() + 20
        while True:  # until the lost server's heartbeat is older than SERVER_TIMEOUT
            async with terminal(fresh, WEB, user) as again:
                answer = await again.first_message()
                if answer["type"] == "ready":
                    break
                assert answer["code"] == "too_many_sessions"
            assert time.monotonic() < deadline, "the lost server's session kept counting"
            await asyncio.sleep(0.5)  # the lost server's heartbeat ageing: only time
        session = await ended_record(ready["session"], timeout=30)
        assert session.end_reason == Session.EndReason.SERVER_LOST


@pytest.mark.parametrize(
    ("frame", "code", "word"),
    [
        # json.loads recurses: this used to crash the consumer (1011, record left live).
        ("[" * 30_000 + "]" * 30_000, 4400, "bad_request"),
        ('{"type": "resize", "cols": 1e400, "rows": 1}', 4400, "bad_request"),
    ],
)
async def test_a_hostile_frame_ends_its_session_with_its_record_and_no_process(
    daphne, kubesim, frame, code, word
):
    user, _ = await sync_to_async(people)()
    async with terminal(daphne, WEB, user) as client:
        ready = await client.until_message("ready")
        marker = f"hostile-{len(frame)}"
        await run_line(client, say(marker), marker)
        start = await exec_of(kubesim, marker)
        await client.ws.send_str(frame)
        assert await client.until_closed() == code
        assert client.messages[-1]["code"] == word
    session = await ended_record(ready["session"])
    assert session.end_reason == Session.EndReason.PROTOCOL_ERROR
    await assert_process_gone(kubesim, start)
