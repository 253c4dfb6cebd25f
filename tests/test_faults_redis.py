"""Redis (channels-redis) down or full: terminals go on; watching and ending say they cannot.

Two real Daphne processes share a private redis-server (tests/fixtures/redis_server.py) that the
tests kill, start again on the same port, or fill up. The terminal never depends on the channel
layer: a Redis that fails must not end a terminal nor keep one from opening, and once Redis is
back, watching and ending work again without restarting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission

from terminals import live, views, watch
from terminals.models import Frame, Session
from terminals.protocol import CloseCode
from tests.fixtures.daphne import (
    Daphne,
    _wait_for_other_connections_to_close,
    daphne_environment,
    run_daphne,
)
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.terminal_client import TerminalClient, run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

WEB = "/ws/terminals/kubesim/default/web/?container=main"
LOG_WAIT = 30.0  # seconds for a line to show up in a Daphne's log
REJOIN_WAIT = 15.0  # seconds for a terminal to be back in its group (retries back off to 5 s)


def people() -> tuple[str, str]:
    """Cookies of a user with a terminal and of an auditor who may watch and end sessions."""
    user = session_cookie(make_user("sam", everywhere=True))
    auditor = make_user("audrey")
    auditor.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="terminals",
            codename__in=["view_session", "watch_session", "end_session"],
        )
    )
    return user, session_cookie(auditor)


@contextlib.asynccontextmanager
async def two_daphnes(kubesim: Any, redis: RedisServer) -> AsyncIterator[tuple[Daphne, Daphne]]:
    """Daphne processes A and B whose channel layer is ``redis``."""
    env = {**await sync_to_async(daphne_environment)(kubesim), "REDIS_URL": redis.url}
    stacks = (contextlib.ExitStack(), contextlib.ExitStack())
    try:
        a, b = await asyncio.gather(
            *(asyncio.to_thread(stack.enter_context, run_daphne(env)) for stack in stacks)
        )
        try:
            yield a, b
        finally:
            for name, server in (("A", a), ("B", b)):
                # Shown by pytest when the test fails: what the processes said.
                print(f"--- Daphne {name} (port {server.port}) stderr:\n{''.join(server.log)}")
    finally:
        await asyncio.gather(*(asyncio.to_thread(stack.close) for stack in stacks))
        await sync_to_async(_wait_for_other_connections_to_close)()


async def logged(server: Daphne, text: str, timeout: float = LOG_WAIT) -> str:
    """The first line of ``server``'s log containing ``text``, waiting for it."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                for line in list(server.log):
                    if text in line:
                        return line
                await asyncio.sleep(0.05)  # a log a thread reads from the process: poll it
    except TimeoutError:
        raise AssertionError(
            f"Daphne on port {server.port} did not log {text!r} within {timeout} s:\n"
            + "".join(server.log[-40:])
        ) from None


def _group_size(redis: RedisServer, group: str) -> int:
    client = redis.client()
    try:
        return int(client.zcard(f"asgi:group:{group}"))  # channels-redis's key for a group
    except Exception:
        return 0  # not up yet
    finally:
        client.close()


async def in_group_again(redis: RedisServer, session_id: str, where: str) -> None:
    """Wait until the terminal of ``session_id`` is a member of its group in ``redis``."""
    group = live.terminal_group(session_id)
    try:
        async with asyncio.timeout(REJOIN_WAIT):
            while True:
                if await asyncio.to_thread(_group_size, redis, group):
                    return
                await asyncio.sleep(0.1)  # another process's writes to Redis: poll them
    except TimeoutError:
        raise AssertionError(
            f"the terminal on Daphne {where} did not join {group} again within {REJOIN_WAIT} s "
            "of Redis coming back: auditors can neither watch it (no screen) nor end it"
        ) from None


def kinds(client: TerminalClient) -> list[str]:
    """The types of the messages a terminal got, but the ``watchers`` notices."""
    return [m["type"] for m in client.messages if m["type"] != "watchers"]


async def press_end(server: Daphne, session_id: str, cookie: str) -> str:
    """Press "End session" on the watch page through ``server``; the page it leads back to."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, cookies={"sessionid": cookie}) as http:
        watch_page = f"{server.url}/terminals/sessions/{session_id}/watch/"
        page = await (await http.get(watch_page)).text()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page
        response = await http.post(
            f"{server.url}/terminals/sessions/{session_id}/end/",
            data={"csrfmiddlewaretoken": token[1], "reason": "a fault test"},
            allow_redirects=False,
        )
        assert response.status == 302, await response.text()
        assert response.headers["Location"].endswith(f"/terminals/sessions/{session_id}/watch/")
        return await (await http.get(watch_page)).text()  # with the message of the end


async def exit_shell(client: TerminalClient) -> None:
    """Type ``exit``: the terminal says the process exited and closes normally."""
    await client.type("exit\r")
    assert await client.until_closed() == 1000, client.messages
    assert client.messages[-1] == {"type": "exit", "code": 0}


async def streams_through(client: TerminalClient, word: str, seconds: int = 8) -> None:
    """The shell prints a line a second for ``seconds``, then ``word``; all of it arrives."""
    start = len(client.output)
    await client.type(f"for i in $(seq 1 {seconds}); do sleep 1; echo tick-$i; done; {say(word)}\r")
    await client.until_output(word, start, timeout=seconds + 20)


@contextlib.asynccontextmanager
async def watching_again(
    server: Daphne, session_id: str, cookie: str
) -> AsyncIterator[tuple[TerminalClient, dict[str, Any]]]:
    """A watch socket showing the session, and its snapshot, once Redis is back. As the page
    does, a watch refused as unavailable (1013) is tried again: the first join after a restart
    can still fail (seen once in CI, at the watcher's join moments after the process's own
    groups were joined again)."""
    for attempt in range(1, 11):
        async with terminal(server, watch_path(session_id), cookie, size=None) as watcher:
            try:
                snapshot = await watcher.until_message("snapshot")
            except AssertionError:
                if watcher.close_code != CloseCode.TRY_AGAIN_LATER or attempt == 10:
                    raise
            else:
                yield watcher, snapshot
                return
        await asyncio.sleep(0.5)  # the page's pause; Redis's readiness has no event


def watch_path(session_id: str) -> str:
    return f"/ws/terminals/watch/{session_id}/"


async def no_process_left(kubesim: Any, since: int) -> list[dict[str, Any]]:
    """Every exec started after transcript event ``since`` has exited; the starts."""
    events = (await asyncio.to_thread(kubesim.transcript_events))[since:]
    starts = [event for event in events if event["event"] == "start"]
    for start in starts:
        await kubesim.event(lambda e, x=start["exec"]: e["event"] == "exit" and e["exec"] == x)
    return starts


async def test_terminals_outlive_a_redis_outage_and_watching_comes_back(kubesim, redis_server):
    user, auditor = await sync_to_async(people)()
    since = len(await asyncio.to_thread(kubesim.transcript_events))
    async with two_daphnes(kubesim, redis_server) as (a, b), contextlib.AsyncExitStack() as open_:
        on_a = await open_.enter_async_context(terminal(a, WEB, user))
        on_b = await open_.enter_async_context(terminal(b, WEB, user))
        ready_a, ready_b = await on_a.until_message("ready"), await on_b.until_message("ready")
        await run_line(on_a, say("before-a"), "before-a")
        await run_line(on_b, say("before-b"), "before-b")
        await in_group_again(redis_server, ready_a["session"], "A")  # joined, to begin with
        await in_group_again(redis_server, ready_b["session"], "B")

        await asyncio.to_thread(redis_server.kill)
        # Both processes notice: their terminals' channel-layer receive fails.
        await logged(a, "Channel layer: receive failed")
        await logged(b, "Channel layer: receive failed")

        # The terminals go on.
        await run_line(on_a, say("outage-a"), "outage-a")
        await run_line(on_b, say("outage-b"), "outage-b")

        # A terminal opened while Redis is down works.
        on_c = await open_.enter_async_context(terminal(a, WEB, user))
        ready_c = await on_c.until_message("ready")
        await run_line(on_c, say("outage-c"), "outage-c")

        # Watching answers that it is unavailable, with its own close code.
        async with terminal(b, watch_path(ready_a["session"]), auditor, size=None) as watcher:
            assert await watcher.until_closed() == CloseCode.TRY_AGAIN_LATER  # 1013
        assert watcher.messages == [
            {"type": "error", "code": "live_unavailable", "message": watch.LIVE_UNAVAILABLE}
        ]
        # So does ending; the session is not ended.
        page = await press_end(b, ready_c["session"], auditor)
        assert html.escape(views.LIVE_UNAVAILABLE) in page

        # The terminals stream on through seconds of outage, while their consumers' receives
        # fail again and again (the retries back off up to live.RETRY_MAX).
        await asyncio.gather(
            *(
                streams_through(client, name)
                for client, name in ((on_a, "still-a"), (on_b, "still-b"), (on_c, "still-c"))
            )
        )

        # Redis comes back, empty; the terminals join their groups again, C for the first time.
        await asyncio.to_thread(redis_server.start)
        await in_group_again(redis_server, ready_a["session"], "A")
        await in_group_again(redis_server, ready_b["session"], "B")
        await in_group_again(redis_server, ready_c["session"], "A (opened during the outage)")

        # Watching works again, across processes: B shows the session on A.
        async with watching_again(b, ready_a["session"], auditor) as (watcher, snapshot):
            assert (snapshot["cols"], snapshot["rows"]) == (80, 24)  # A's screen, not a replay
            await watcher.until_output("still-a")
            await run_line(on_a, say("watched-a"), "watched-a")
            await watcher.until_output("watched-a")

            # Ending works again: an auditor on B ends C, on A.
            page = await press_end(b, ready_c["session"], auditor)
            assert "Asked the session of sam to end." in page
            assert await on_c.until_closed() == 4409
            assert on_c.messages[-1]["code"] == "ended_by_auditor"

            # Opening works too (no leftover record counts against the user).
            on_d = await open_.enter_async_context(terminal(b, WEB, user))
            ready_d = await on_d.until_message("ready")
            await run_line(on_d, say("after-d"), "after-d")

            await exit_shell(on_a)
            ended = await watcher.until_message("ended")
            assert (ended["reason"], ended["exit_code"]) == (Session.EndReason.EXIT.label, 0)
            assert await watcher.until_closed() == 1000
        await exit_shell(on_b)
        await exit_shell(on_d)

        # No terminal heard of the outage (who watches is no news of it).
        for client in (on_a, on_b, on_d):
            assert kinds(client) == ["ready", "exit"], client.messages
        assert kinds(on_c) == ["ready", "error"], on_c.messages

        # The records: ended, each with its reason; C recorded what ran during the outage.
        ids = [ready["session"] for ready in (ready_a, ready_b, ready_c, ready_d)]
        sessions = {str(s.pk): s async for s in Session.objects.filter(pk__in=ids)}
        for ready in (ready_a, ready_b, ready_d):
            session = sessions[ready["session"]]
            assert (session.end_reason, session.exit_code) == (Session.EndReason.EXIT, 0)
        ended_c = sessions[ready_c["session"]]
        assert ended_c.end_reason == Session.EndReason.ENDED_BY_AUDITOR
        assert ended_c.ended_by_username == "audrey"
        assert await Frame.objects.filter(session_id=ended_c.pk).acount() > 0
        assert not await Session.objects.filter(ended_at__isnull=True).aexists()

        # No process left running in the pod: every exec of the test has exited.
        starts = await no_process_left(kubesim, since)
        assert len([s for s in starts if s["pod"] == "web"]) >= 4


def _fill_up(admin: Any) -> None:
    """Redis is full: no client but ``admin`` may connect, and every other one is dropped."""
    admin.config_set("maxclients", 1)
    admin.client_kill_filter(_type="normal", skipme=True)


async def test_a_full_redis_does_not_end_a_streaming_session(kubesim, redis_server):
    user, auditor = await sync_to_async(people)()
    since = len(await asyncio.to_thread(kubesim.transcript_events))
    # The one connection Redis accepts while full: ours, kept to make room again.
    admin = redis_server.client(single_connection_client=True)
    with contextlib.closing(admin):
        async with two_daphnes(kubesim, redis_server) as (a, b):
            client, watcher = await stream_while_full(a, b, admin, user, auditor)
    assert kinds(client) == ["ready", "exit"], client.messages
    assert watcher.close_code == 1000
    session = await Session.objects.aget(pk=client.messages[0]["session"])
    assert (session.end_reason, session.exit_code) == (Session.EndReason.EXIT, 0)
    await no_process_left(kubesim, since)


async def stream_while_full(
    a: Daphne, b: Daphne, admin: Any, user: str, auditor: str
) -> tuple[TerminalClient, TerminalClient]:
    """A terminal on A streams with a watcher on B while Redis fills up; then it exits."""
    async with terminal(a, WEB, user) as client:
        ready = await client.until_message("ready")
        async with terminal(b, watch_path(ready["session"]), auditor, size=None) as watcher:
            await watcher.until_message("snapshot")
            await client.type(
                f"for i in $(seq 1 80); do echo tick-$i; sleep 0.1; done; {say('streamed')}\r"
            )
            await client.until_output("tick-2\r\n")
            await asyncio.to_thread(_fill_up, admin)
            # The session's notices to its watchers fail now ("max number of clients")...
            await logged(a, "Channel layer: notifying watchers failed")
            # ...and it streams on to the end, to its user and, from the store, to the watcher.
            await client.until_output("streamed", timeout=30)
            await watcher.until_output("streamed", timeout=30)
            await asyncio.to_thread(admin.config_set, "maxclients", 10000)
            await run_line(client, say("after-full"), "after-full")
            await exit_shell(client)
            ended = await watcher.until_message("ended")
            assert ended["reason"] == Session.EndReason.EXIT.label
            await watcher.until_closed()
    return client, watcher
