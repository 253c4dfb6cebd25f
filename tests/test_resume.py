"""Resuming a terminal end to end: real Daphne processes, kubesim, a real shell, and sockets
that drop as networks drop them (a TCP reset, no close frame)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from terminals.models import AccessRule, DeniedAttempt, Frame, Resume, Session
from tests.fixtures.daphne import Daphne, daphne_environment, run_daphne
from tests.fixtures.terminal_client import TerminalClient, run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie
from tests.test_faults_process import ended_record

pytestmark = pytest.mark.django_db(transaction=True)

WEB = "/ws/terminals/kubesim/default/web/"
ALPINE = "/ws/terminals/kubesim/default/alpine/"


@contextlib.contextmanager
def resuming_daphne(kubesim: Any, grace: int = 60, **terminals: Any) -> Iterator[Daphne]:
    env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps({"RESUME_GRACE": grace, **terminals})
    with run_daphne(env) as server:
        try:
            yield server
        finally:
            print("".join(server.log[-80:]))  # shown when a test fails


@pytest.fixture
def server(kubesim: Any) -> Iterator[Daphne]:
    with resuming_daphne(kubesim) as daphne:
        yield daphne


@pytest.fixture
def sam() -> str:
    return session_cookie(make_user("sam", everywhere=True))


def resume_path(path: str, token: str, offset: int) -> str:
    return f"{path}?resume={token}&offset={offset}"


async def stored_output(session_id: str) -> bytes:
    frames = Frame.objects.filter(session_id=session_id, direction=Frame.Direction.STDOUT)
    return b"".join([bytes(f.data) async for f in frames.order_by("seq")])


async def caught_up_with_store(client: TerminalClient, session_id: str, before: bytes) -> bytes:
    """The session's stored output once the client has read as much of it as is stored.

    Output is committed before it is sent, so the store may be ahead of what the client has
    read (a prompt sent a moment after the marker waited for), never behind."""
    stored = await stored_output(session_id)
    await client.until_length(len(stored) - len(before))
    return stored


async def detached_record(session_id: str, timeout: float = 20) -> Session:
    """The record once the server has noted the browser gone (another process writes it a
    moment later: poll the store)."""
    async with asyncio.timeout(timeout):
        while (session := await Session.objects.aget(pk=session_id)).detached_at is None:
            assert session.ended_at is None, f"ended instead of detaching: {session.end_message}"
    return session


async def test_a_dropped_socket_resumes_with_the_output_printed_while_away_exactly_once(
    server, sam
):
    client = await TerminalClient.connect(server.ws_url, WEB, sam)
    ready = await client.until_message("ready")
    assert ready["input"] == 0
    await run_line(client, "echo start-$((1+1))", "start-2")
    # Output keeps coming after the drop: the shell prints while nobody is attached.
    away = f"sleep 1; {say('AWAY')}; seq 1 20000 | tail -1\r"
    await client.type(away)
    await client.drop()
    received = bytes(client.output)
    await detached_record(ready["session"])
    path = resume_path(WEB, ready["resume"], len(received))
    async with terminal(server, path, sam, size=None) as resumed:
        again = await resumed.until_message("ready")
        assert again["session"] == ready["session"]
        assert again["resumed"] is True
        assert again["resume"] != ready["resume"]
        # Every stdin byte the dropped socket sent was taken: the page owes nothing again.
        assert again["input"] == len("echo start-$((1+1))\r") + len(away)
        await resumed.until_output("20000")
        end = await run_line(resumed, say("BACK"), "BACK")
        assert end
        # What the page holds is the session's output, every byte once, in order.
        stored = await caught_up_with_store(resumed, ready["session"], received)
        assert received + bytes(resumed.output) == stored
        assert bytes(resumed.output).count(b"AWAY\r\n") == 1
    record = await Session.objects.aget(pk=ready["session"])
    assert record.detached_at is None or record.ended_at is not None
    resumes = [r async for r in Resume.objects.filter(session_id=ready["session"])]
    assert [(r.offset, r.client_address) for r in resumes] == [(len(received), "127.0.0.1")]


async def test_a_token_works_once_and_only_for_its_user_and_pod(server, sam):
    other = await sync_to_async(lambda: session_cookie(make_user("olga", everywhere=True)))()
    client = await TerminalClient.connect(server.ws_url, WEB, sam)
    ready = await client.until_message("ready")
    await client.drop()
    await detached_record(ready["session"])
    token = ready["resume"]
    for cookie, path in [
        (other, resume_path(WEB, token, 0)),  # another user
        (sam, resume_path(ALPINE, token, 0)),  # another pod
        (sam, resume_path(WEB, "x" * 32, 0)),  # a made-up token
    ]:
        async with terminal(server, path, cookie, size=None) as refused:
            assert await refused.until_closed() == 4404
            assert refused.messages[-1]["code"] == "not_resumable"
    async with terminal(server, resume_path(WEB, token, 0), sam, size=None) as lost:
        second = (await lost.until_message("ready"))["resume"]
        assert (lost.messages[-1]["session"], second != token) == (ready["session"], True)
        # Say that socket dropped before its "ready" arrived: the page still has only the
        # first token, and it is still good (the new socket takes the session over).
        retry = await TerminalClient.connect(
            server.ws_url, resume_path(WEB, token, 0), sam, size=None
        )
        third = (await retry.until_message("ready"))["resume"]
        assert await lost.until_closed() == 4411
        await retry.drop()  # (a close with 1000 would end the session on purpose)
        await detached_record(ready["session"])
        # Once the page has used a newer token, the older ones are refused.
        async with terminal(server, resume_path(WEB, third, 0), sam, size=None) as current:
            await current.until_message("ready")
            for old in (token, second):
                async with terminal(server, resume_path(WEB, old, 0), sam, size=None) as stale:
                    assert await stale.until_closed() == 4404
    denials = [d.code async for d in DeniedAttempt.objects.filter(code="not_found")]
    assert len(denials) == 5


async def test_bad_resume_values_are_refused_with_a_message(server, sam):
    for query in ["?resume=&offset=0", "?resume=abc&offset=-1", "?resume=abc&offset=1e9"]:
        async with terminal(server, WEB + query, sam, size=None) as refused:
            assert await refused.until_closed() == 4404
            assert refused.messages[-1]["code"] == "not_resumable"
            assert refused.messages[-1]["message"]


async def test_a_session_not_resumed_within_the_grace_ends_as_browser_gone(kubesim, sam):
    with resuming_daphne(kubesim, grace=1) as server:
        client = await TerminalClient.connect(server.ws_url, WEB, sam)
        ready = await client.until_message("ready")
        await client.drop()
        record = await ended_record(ready["session"])
        assert record.end_reason == Session.EndReason.BROWSER_GONE
        path = resume_path(WEB, ready["resume"], 0)
        async with terminal(server, path, sam, size=None) as late:
            assert await late.until_closed() == 4404
            assert late.messages[-1]["code"] == "not_resumable"


async def test_a_second_socket_takes_over_a_half_open_one(server, sam):
    async with terminal(server, WEB, sam) as first:
        ready = await first.until_message("ready")
        await run_line(first, say("ONE"), "ONE")
        path = resume_path(WEB, ready["resume"], len(first.output))
        async with terminal(server, path, sam, size=None) as second:
            await second.until_message("ready")
            assert await first.until_closed() == 4411
            assert first.messages[-1]["code"] == "resumed_elsewhere"
            await run_line(second, say("TWO"), "TWO")


async def test_an_access_rule_gone_while_detached_refuses_the_resume(kubesim):
    user = await sync_to_async(make_user)("rita", everywhere=True)
    cookie = await sync_to_async(session_cookie)(user)
    # The revoker would end the session soon after the rule goes; here it does not look, so
    # that the resume's own check is what refuses.
    with resuming_daphne(kubesim, REVOCATION_INTERVAL=3600) as server:
        client = await TerminalClient.connect(server.ws_url, WEB, cookie)
        ready = await client.until_message("ready")
        await client.drop()
        await detached_record(ready["session"])
        await AccessRule.objects.filter(name="rita everywhere").adelete()
        path = resume_path(WEB, ready["resume"], 0)
        async with terminal(server, path, cookie, size=None) as refused:
            assert await refused.until_closed() == 4403
            assert "no longer" in refused.messages[-1]["message"]


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="needs Redis (REDIS_URL): two Daphne processes share a channel layer only through it",
)
async def test_a_resume_on_another_daphne_relays_to_the_one_holding_the_exec(kubesim, sam):
    with resuming_daphne(kubesim) as holder, resuming_daphne(kubesim) as other:
        client = await TerminalClient.connect(holder.ws_url, WEB, sam)
        ready = await client.until_message("ready")
        await run_line(client, "echo first-$((1+1))", "first-2")
        await client.type(f"sleep 1; {say('AWAY')}\r")
        await client.drop()
        received = bytes(client.output)
        await detached_record(ready["session"])
        path = resume_path(WEB, ready["resume"], len(received))
        async with terminal(other, path, sam, size=None) as relayed:
            again = await relayed.until_message("ready")
            assert again["session"] == ready["session"] and again["resumed"]
            # Counted by the holder, which took the input.
            assert again["input"] == len("echo first-$((1+1))\r") + len(f"sleep 1; {say('AWAY')}\r")
            await relayed.until_output("AWAY")
            await relayed.resize(100, 30)
            assert b"30 100" in await run_line(relayed, "stty size", "30 100")
            await run_line(relayed, say("THERE"), "THERE")
            stored = await caught_up_with_store(relayed, ready["session"], received)
            assert received + bytes(relayed.output) == stored
            await relayed.type("exit 4\r")
            assert await relayed.until_closed() == 1000
            assert relayed.messages[-1] == {"type": "exit", "code": 4}
        record = await Session.objects.aget(pk=ready["session"])
        assert record.exit_code == 4
        resumes = [r async for r in Resume.objects.filter(session_id=ready["session"])]
        assert len(resumes) == 1 and resumes[0].server_id != record.server_id


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="needs Redis (REDIS_URL): two Daphne processes share a channel layer only through it",
)
async def test_a_relay_takes_over_a_socket_still_open_on_the_holder(kubesim, sam):
    with resuming_daphne(kubesim) as holder, resuming_daphne(kubesim) as other:
        async with terminal(holder, WEB, sam) as first:
            ready = await first.until_message("ready")
            await run_line(first, say("ONE"), "ONE")
            path = resume_path(WEB, ready["resume"], len(first.output))
            async with terminal(other, path, sam, size=None) as relayed:
                await relayed.until_message("ready")
                assert await first.until_closed() == 4411
                # The holder's consumer of the first socket is gone: the session's mailbox
                # takes the relayed frames from now on.
                await run_line(relayed, say("TWO"), "TWO")
                await relayed.type("exit 5\r")
                assert await relayed.until_closed() == 1000
        record = await ended_record(ready["session"])
        assert record.exit_code == 5
