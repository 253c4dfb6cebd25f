"""Revocation end to end, through real Daphne processes and kubesim: a live terminal whose
user logs out, is deactivated or loses the access rule ends with 4403, the reason and its
record within the bound, on whichever process holds it, and its pod process is gone; a
terminal still permitted carries on."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.utils import timezone

from terminals.models import AccessRule, Session
from tests.fixtures.daphne import Daphne, daphne_environment, run_daphne
from tests.fixtures.terminal_client import TerminalClient, run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie
from tests.test_faults_process import ended_record

pytestmark = pytest.mark.django_db(transaction=True)

WEB = "/ws/terminals/kubesim/default/web/?container=main"
INTERVAL = 1  # REVOCATION_INTERVAL of these Daphnes, in seconds
BOUND = 10  # seconds from the change to the terminal's end, as promised
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@contextlib.contextmanager
def revoking_daphne(kubesim: Any) -> Iterator[Daphne]:
    env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps({"REVOCATION_INTERVAL": INTERVAL})
    with run_daphne(env) as server:
        yield server


def person(name: str) -> tuple[Any, str]:
    """A user with terminals everywhere, and the cookie of a login of theirs."""
    user = make_user(name, everywhere=True)
    return user, session_cookie(user)


async def running(client: TerminalClient, kubesim: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``ready`` message of a terminal that runs a line, and kubesim's start of its exec."""
    ready = await client.until_message("ready")
    word = f"alive{uuid.uuid4().hex[:12]}"
    await run_line(client, say(word), word)
    typed = say(word).encode()
    stdin = await kubesim.event(
        lambda e: e["event"] == "stdin" and typed in base64.b64decode(e["data"])
    )
    start = await kubesim.event(lambda e: e["event"] == "start" and e["exec"] == stdin["exec"])
    return ready, start


async def assert_revoked(
    client: TerminalClient, ready: dict[str, Any], start: dict[str, Any], kubesim: Any, why: str
) -> None:
    """Ended within the bound with 4403 and ``why``; recorded so; its pod process gone."""
    assert await client.until_closed(timeout=BOUND) == 4403
    assert client.messages[-1] == {"type": "error", "code": "forbidden", "message": why}
    record = await ended_record(ready["session"])
    assert (record.end_reason, record.end_message) == (Session.EndReason.FORBIDDEN, why)
    await kubesim.event(lambda e: e["event"] == "exit" and e["exec"] == start["exec"])


async def log_out(server: Daphne, cookie: str) -> None:
    """Press "Log out" on the terminal page, as the browser does (a POST with the CSRF token)."""
    async with aiohttp.ClientSession() as http:
        page = await http.get(
            f"{server.url}/terminals/kubesim/default/web/",
            headers={"Cookie": f"sessionid={cookie}"},
        )
        assert page.status == 200
        token = CSRF_INPUT.search(await page.text())
        assert token is not None, "no logout form on the terminal page"
        csrf = page.cookies["csrftoken"].value
        answer = await http.post(
            f"{server.url}/accounts/logout/",
            data={"csrfmiddlewaretoken": token.group(1)},
            headers={"Cookie": f"sessionid={cookie}; csrftoken={csrf}", "Origin": server.origin},
            allow_redirects=False,
        )
        assert answer.status == 302


async def test_logging_out_ends_the_terminal(kubesim):
    _, cookie = await sync_to_async(person)("sam")
    with revoking_daphne(kubesim) as server:
        async with terminal(server, WEB, cookie) as client:
            ready, start = await running(client, kubesim)
            await log_out(server, cookie)
            await assert_revoked(client, ready, start, kubesim, "You were logged out.")


async def test_deactivating_the_user_ends_their_terminals_on_every_process(kubesim):
    user, cookie = await sync_to_async(person)("sam")
    with revoking_daphne(kubesim) as one, revoking_daphne(kubesim) as two:
        async with terminal(one, WEB, cookie) as first, terminal(two, WEB, cookie) as second:
            sessions = [await running(first, kubesim), await running(second, kubesim)]
            await get_user_model().objects.filter(pk=user.pk).aupdate(is_active=False)
            for client, (ready, start) in zip((first, second), sessions, strict=True):
                why = "Your account was deactivated."
                await assert_revoked(client, ready, start, kubesim, why)


@pytest.mark.parametrize("change", ["delete", "expire"])
async def test_losing_the_access_rule_ends_the_terminal_and_spares_the_others(kubesim, change):
    (sam, sam_cookie), (_, kim_cookie) = [await sync_to_async(person)(n) for n in ("sam", "kim")]
    rules = AccessRule.objects.filter(users=sam)
    with revoking_daphne(kubesim) as server:
        async with (
            terminal(server, WEB, sam_cookie) as lost,
            terminal(server, WEB, kim_cookie) as kept,
        ):
            ready, start = await running(lost, kubesim)
            await running(kept, kubesim)
            if change == "delete":
                await rules.adelete()
            else:
                await rules.aupdate(expires_at=timezone.now() - dt.timedelta(seconds=1))
            why = "Your access to kubesim/default/web/main was revoked."
            await assert_revoked(lost, ready, start, kubesim, why)
            # The round that ended sam's terminal asked about kim's too: it still runs.
            kim = await kept.until_message("ready")
            await run_line(kept, say("still-here"), "still-here")
            assert kept.close_code is None
            assert (await Session.objects.aget(pk=kim["session"])).ended_at is None
        # Kim closed the terminal: it ends as any other does.
        assert (await ended_record(kim["session"])).end_reason == Session.EndReason.CLIENT_CLOSED
