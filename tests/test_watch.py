"""Watching a live session and ending it, on one Daphne and across two (with Redis)."""

from __future__ import annotations

import json
import os
import re

import aiohttp
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission

from terminals.models import Session
from tests.fixtures.daphne import daphne_environment, run_daphne
from tests.fixtures.terminal_client import TerminalClient, run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

WEB = "/ws/terminals/kubesim/default/web/?container=main"


def people() -> tuple[str, str, str]:
    """Cookies of a user with a terminal, an auditor, and someone who may not watch."""
    user = session_cookie(make_user("sam", everywhere=True))
    auditor = make_user("audrey")
    auditor.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="terminals",
            codename__in=["view_session", "watch_session", "end_session"],
        )
    )
    return user, session_cookie(auditor), session_cookie(make_user("nosy", everywhere=True))


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
            await watcher.until_output("before-watching")  # the current screen, redrawn
            # Typing in the watcher reaches nothing.
            await watcher.type("echo from-the-watcher\r")
            await run_line(client, say("while-watched"), "while-watched")
            await watcher.until_output("while-watched")  # live output
            assert b"from-the-watcher" not in client.output

            await end_session(watch_server, ready["session"], auditor)
            assert await client.until_closed() == 4409
            assert client.messages[-1] == {
                "type": "error",
                "code": "ended_by_auditor",
                "message": "audrey ended this session.",
            }
            ended = await watcher.until_message("ended")
            assert ended["ended_by"] == "audrey"
            assert await watcher.until_closed() == 1000
    session = await Session.objects.aget(pk=ready["session"])
    assert session.end_reason == Session.EndReason.ENDED_BY_AUDITOR
    assert session.ended_by_username == "audrey"


async def end_session(server, session_id: str, cookie: str) -> None:
    """Press "End session" on the watch page, as the auditor's browser would."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, cookies={"sessionid": cookie}) as http:
        page = await (await http.get(f"{server.url}/terminals/sessions/{session_id}/watch/")).text()
        assert "End session" in page
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        response = await http.post(
            f"{server.url}/terminals/sessions/{session_id}/end/",
            data={"csrfmiddlewaretoken": token},
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
