"""Watching a live session and ending it (with a reason), on one Daphne and across two (with
Redis); the person at the terminal is shown who watches (``TERMINALS["SHOW_WATCHERS"]``)."""

from __future__ import annotations

import asyncio
import json
import os
import re

import aiohttp
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import Permission

from terminals import live
from terminals.models import Session
from tests.fixtures.daphne import daphne_environment, run_daphne
from tests.fixtures.terminal_client import TerminalClient, run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

WEB = "/ws/terminals/kubesim/default/web/?container=main"
REASON = "Production change outside the approved window"


def make_auditor(username: str):
    """A user who may review, watch and end sessions."""
    auditor = make_user(username)
    auditor.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="terminals",
            codename__in=["view_session", "watch_session", "end_session"],
        )
    )
    return auditor


def people() -> tuple[str, str, str]:
    """Cookies of a user with a terminal, an auditor, and someone who may not watch."""
    user = session_cookie(make_user("sam", everywhere=True))
    auditor = make_auditor("audrey")
    return user, session_cookie(auditor), session_cookie(make_user("nosy", everywhere=True))


async def watchers_shown(client: TerminalClient, count: int, timeout: float = 20) -> list[str]:
    """The ``count``-th ``watchers`` frame the terminal's browser got: who it is shown."""
    async with asyncio.timeout(timeout):
        while True:
            frames = [m["watchers"] for m in client.messages if m.get("type") == "watchers"]
            if len(frames) >= count:
                return frames[count - 1]
            if not await client._read_one():
                raise AssertionError(f"closed ({client.close_code}): {client.messages}")


async def watch_and_end(session_server, watch_server, kubesim):
    user, auditor, nosy = await sync_to_async(people)()
    async with terminal(session_server, WEB, user, size=(80, 24)) as client:
        ready = await client.until_message("ready")
        await run_line(client, say("before-watching"), "before-watching")
        path = f"/ws/terminals/watch/{ready['session']}/"

        # Not everyone may watch.
        async with terminal(watch_server, path, nosy, size=None) as refused:
            assert await refused.until_closed() == 4403

        async with terminal(watch_server, path, auditor, size=None) as watcher:
            snapshot = await watcher.until_message("snapshot")
            assert (snapshot["cols"], snapshot["rows"]) == (80, 24)
            # The user sees who watches (only audrey: the refused one never watched).
            assert await watchers_shown(client, 1) == ["audrey"]
            await watcher.until_output("before-watching")  # the current screen, redrawn
            # Typing in the watcher reaches nothing.
            await watcher.type("echo from-the-watcher\r")
            await run_line(client, say("while-watched"), "while-watched")
            await watcher.until_output("while-watched")  # live output
            assert b"from-the-watcher" not in client.output

            await end_session(watch_server, ready["session"], auditor, REASON)
            assert await client.until_closed() == 4409
            assert client.messages[-1] == {
                "type": "error",
                "code": "ended_by_auditor",
                "message": f"audrey ended this session: {REASON}",
            }
            ended = await watcher.until_message("ended")
            assert ended["ended_by"] == "audrey"
            assert ended["message"] == f"audrey ended this session: {REASON}"
            assert await watcher.until_closed() == 1000
    session = await Session.objects.aget(pk=ready["session"])
    assert session.end_reason == Session.EndReason.ENDED_BY_AUDITOR
    assert session.ended_by_username == "audrey"
    assert session.end_message == f"audrey ended this session: {REASON}"


async def end_session(server, session_id: str, cookie: str, reason: str = REASON) -> None:
    """Press "End session" on the watch page and give ``reason``, as a form would."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, cookies={"sessionid": cookie}) as http:
        page = await (await http.get(f"{server.url}/terminals/sessions/{session_id}/watch/")).text()
        assert "End session" in page
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        response = await http.post(
            f"{server.url}/terminals/sessions/{session_id}/end/",
            data={"csrfmiddlewaretoken": token, "reason": reason},
            allow_redirects=False,
        )
        assert response.status == 302


async def test_watch_and_end_on_one_daphne(daphne, kubesim):
    await watch_and_end(daphne, daphne, kubesim)


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="needs Redis (REDIS_URL): two Daphne processes share a channel layer only through it",
)
async def test_watch_and_end_across_two_daphne_processes(daphne, kubesim):
    from django.db import connection  # noqa: F401  (the env helper reads it)

    env = await sync_to_async(daphne_environment)(kubesim)
    with run_daphne(env) as second:
        await watch_and_end(daphne, second, kubesim)


async def test_an_ended_session_cannot_be_watched(daphne):
    user, auditor, _ = await sync_to_async(people)()
    async with terminal(daphne, WEB, user) as client:
        ready = await client.until_message("ready")
        await client.type("exit\r")
        await client.until_closed()
    async with terminal(
        daphne, f"/ws/terminals/watch/{ready['session']}/", auditor, size=None
    ) as w:
        assert await w.until_closed() == 4404
        assert "replay it instead" in w.messages[-1]["message"]
    async with terminal(daphne, "/ws/terminals/watch/not-a-uuid/", auditor, size=None) as w:
        assert await w.until_closed() == 4400


async def test_watchers_do_not_slow_the_session_down(daphne, kubesim):
    """A watcher that reads nothing: the session still streams 20 MiB to its own browser."""
    user, auditor, _ = await sync_to_async(people)()
    async with terminal(daphne, WEB, user) as client:
        ready = await client.until_message("ready")
        idle_watcher = await TerminalClient.connect(
            daphne.ws_url, f"/ws/terminals/watch/{ready['session']}/", auditor, size=None
        )
        try:
            await client.type(f"stty -echo; {say('BEGIN')}; seq 1 2700000; {say('DONE')}\r")
            start = await client.until_output("BEGIN\r\n")
            await client.until_output("DONE", start, timeout=120)
        finally:
            await idle_watcher.close()
    assert len(client.output) > 20 * 1024 * 1024
    assert json.dumps(client.messages[0]).startswith('{"type": "ready"')


# The person at the terminal sees who watches.


async def test_the_user_sees_who_watches_and_sees_them_leave_at_once(daphne, kubesim):
    user, auditor, _ = await sync_to_async(people)()
    bert = await sync_to_async(lambda: session_cookie(make_auditor("bert")))()
    async with terminal(daphne, WEB, user) as client:
        ready = await client.until_message("ready")
        path = f"/ws/terminals/watch/{ready['session']}/"
        async with terminal(daphne, path, auditor, size=None) as watcher:
            await watcher.until_message("snapshot")
            assert await watchers_shown(client, 1) == ["audrey"]
            async with terminal(daphne, path, bert, size=None) as second:
                await second.until_message("snapshot")
                assert await watchers_shown(client, 2) == ["audrey", "bert"]
            # bert's page closed: the user is told at once, not when bert's lease lapses.
            assert await watchers_shown(client, 3, timeout=live.WATCH_LEASE / 3) == ["audrey"]
        assert await watchers_shown(client, 4, timeout=live.WATCH_LEASE / 3) == []
        await run_line(client, say("still-mine"), "still-mine")  # the terminal is unharmed


async def test_with_show_watchers_off_the_user_is_not_told(kubesim):
    from tests.test_consumers import daphne_with

    user, auditor, _ = await sync_to_async(people)()
    with daphne_with(kubesim, SHOW_WATCHERS=False) as server:
        async with terminal(server, WEB, user) as client:
            ready = await client.until_message("ready")
            path = f"/ws/terminals/watch/{ready['session']}/"
            async with terminal(server, path, auditor, size=None) as watcher:
                await watcher.until_message("snapshot")
                # The terminal took the watcher's request before it answered it; a watchers
                # frame would be on its way before this line's output.
                await run_line(client, say("unwatched-here"), "unwatched-here")
                await watcher.until_output("unwatched-here")
            await run_line(client, say("after-watching"), "after-watching")
        assert [m["type"] for m in client.messages] == ["ready"]


# Ending needs a reason, and the reason is what is sent.


def test_ending_needs_a_reason_of_at_most_500_characters_and_sends_it(client):
    auditor = make_auditor("audrey")
    client.force_login(auditor)
    session = Session.objects.create(
        username="sam", cluster="kubesim", namespace="default", pod="web"
    )
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(live.terminal_group(session.pk), channel)
    url = f"/terminals/sessions/{session.pk}/end/"

    page = client.post(url, {"reason": "  \n  "}, follow=True).content.decode()
    assert "the reason is required" in page
    response = client.post(url, {}, HTTP_ACCEPT="application/json")
    assert response.status_code == 400
    assert response.json()["ok"] is False
    assert "the reason is required" in response.json()["message"]
    response = client.post(url, {"reason": "x" * 501}, HTTP_ACCEPT="application/json")
    assert response.status_code == 400
    assert response.json()["message"].startswith("The reason is too long: 501 characters")

    response = client.post(
        url,
        {"reason": "  Policy  breach:\r\n no writes  " + " " * 600},
        HTTP_ACCEPT="application/json",
    )
    assert response.json() == {"ok": True, "message": "Asked the session of sam to end."}
    # The first message the terminal gets is this one: the refusals sent nothing.
    message = async_to_sync(layer.receive)(channel)
    assert message == live.terminate_message(auditor.pk, "audrey", "Policy breach: no writes")


def test_the_watch_page_asks_for_the_reason_in_a_dialog(client):
    client.force_login(make_auditor("audrey"))
    session = Session.objects.create(
        username="sam", cluster="kubesim", namespace="default", pod="web"
    )
    page = client.get(f"/terminals/sessions/{session.pk}/watch/").content.decode()
    assert '<dialog class="end-dialog" id="end-dialog"' in page
    assert 'name="reason"' in page and "required" in page and 'maxlength="500"' in page
    assert f'action="/terminals/sessions/{session.pk}/end/"' in page
