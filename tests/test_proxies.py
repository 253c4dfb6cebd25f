"""Client addresses behind proxies, end to end: Daphne as deploy/kubernetes.yaml runs it.

Each test starts Daphne with the manifest's command line (the one the README gives, on a free
loopback port) and plays the trusted proxy in front of it: the test connects from 127.0.0.1 and
appends the "real" client address to an X-Forwarded-For whose first entries the client forged.
Logins (django-axes), terminal sessions and denials must all see the real address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import yaml
from asgiref.sync import sync_to_async
from axes.models import AccessAttempt

from terminals.models import DeniedAttempt, Session
from tests.fixtures.daphne import Daphne, daphne_environment, run_daphne
from tests.fixtures.terminal_client import TerminalClient
from tests.fixtures.users import make_user, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "kubernetes.yaml"
LOGIN = "/accounts/login/"
WEB = "/ws/terminals/kubesim/default/web/"
REAL = "203.0.113.7"  # what the trusted proxy appends: the client it saw


def forged(i: int = 66) -> str:
    """A first X-Forwarded-For entry the client made up."""
    return f"198.51.100.{i}"


def deployed_command() -> list[str]:
    """Daphne's command line from the manifest, listening on a free loopback port instead."""
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}
    container = documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    line = " ".join(container["command"])
    assert " -b 0.0.0.0 -p 8000 " in line, line
    argv = line.replace("-b 0.0.0.0 -p 8000", "-b 127.0.0.1 -p 0").split()
    if argv[0] == "daphne":
        return [sys.executable, "-m", "daphne", *argv[1:]]
    assert argv[:3] == ["python", "-m", "terminals.serve"], line  # Daphne with a request deadline
    return [sys.executable, *argv[1:]]


@contextlib.contextmanager
def deployed_daphne(kubesim: Any, trusted: int | list[str]) -> Iterator[Daphne]:
    """Daphne as deployed, trusting ``trusted`` proxies (TERMINALS_TRUSTED_PROXIES)."""
    env = {
        **daphne_environment(kubesim),
        "WEBSHELL_TEST_TRUSTED_PROXIES": json.dumps(trusted),
    }
    with run_daphne(env, command=deployed_command()) as server:
        yield server


def log_in(
    server: Daphne, password: str, forwarded: str | None, username: str = "ann"
) -> requests.Response:
    """The login form, fetched and posted with ``forwarded`` as X-Forwarded-For."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    with requests.Session() as http:
        page = http.get(server.url + LOGIN, headers=headers, timeout=20)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, page.text
        return http.post(
            server.url + LOGIN,
            data={"username": username, "password": password, "csrfmiddlewaretoken": token[1]},
            headers=headers,
            allow_redirects=False,
            timeout=20,
        )


def attempt_addresses() -> set[str]:
    return set(AccessAttempt.objects.values_list("ip_address", flat=True))


async def connect(server: Daphne, path: str, cookie: str | None, forwarded: str) -> TerminalClient:
    """A browser-protocol client whose handshake carries ``forwarded`` as X-Forwarded-For."""
    headers = {"Origin": server.origin, "X-Forwarded-For": forwarded}
    if cookie:
        headers["Cookie"] = f"sessionid={cookie}"
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(server.ws_url + path, headers=headers, max_msg_size=0)
    client = TerminalClient(ws=ws, http=http)
    await client.resize(80, 24)
    return client


async def session_address(server: Daphne, cookie: str, forwarded: str) -> str | None:
    """Open a terminal, exit it, and return its record's client address once it has ended."""
    client = await connect(server, WEB, cookie, forwarded)
    try:
        ready = await client.until_message("ready")
        await client.type("exit\r")
        assert await client.until_closed() == 1000
    finally:
        await client.close()
    deadline = time.monotonic() + 20
    while (record := await Session.objects.aget(pk=ready["session"])).ended_at is None:
        assert time.monotonic() < deadline, "the session's record did not end"
        await asyncio.sleep(0.05)  # the Daphne process writes it: nothing to await but the store
    return record.client_address


async def denial_address(server: Daphne, path: str, forwarded: str, code: int) -> str | None:
    """Connect anonymously to ``path``, expect ``code``, return the denial's client address."""
    client = await connect(server, path, None, forwarded)
    try:
        assert await client.until_closed() == code
    finally:
        await client.close()
    denial = await DeniedAttempt.objects.order_by("-at").afirst()
    assert denial is not None
    return denial.client_address


def staff_cookie() -> str:
    """A user whom an access rule lets open every pod's shells."""
    return session_cookie(make_user("sam", everywhere=True))


# Logins.


def test_forged_first_entries_behind_one_proxy_are_locked_out(kubesim):
    make_user("ann")
    with deployed_daphne(kubesim, 1) as server:
        codes = [log_in(server, "wrong", f"{forged(i)}, {REAL}").status_code for i in range(12)]
        right = log_in(server, "pw-for-tests", f"{forged(99)}, {REAL}")
    assert codes == [200] * 4 + [429] * 8
    assert right.status_code == 429
    assert "Too many failed logins" in right.text
    assert attempt_addresses() == {REAL}


def test_a_username_tried_from_many_real_addresses_is_locked(kubesim):
    make_user("ann")
    make_user("bob")
    with deployed_daphne(kubesim, 1) as server:
        codes = [
            log_in(server, "wrong", f"{forged()}, 203.0.113.{i}").status_code for i in range(1, 21)
        ]
        right = log_in(server, "pw-for-tests", f"{forged()}, 192.0.2.50")
        other = log_in(server, "pw-for-tests", f"{forged()}, 203.0.113.1", username="bob")
    # No address reached 5 failures; the username reached 20 (WEBSHELL_LOGIN_USERNAME_…).
    assert codes == [200] * 19 + [429]
    assert right.status_code == 429
    assert "Too many failed logins" in right.text
    assert other.status_code == 302 and other.headers["Location"] == "/"


def test_with_no_trusted_proxy_the_header_is_ignored(kubesim):
    make_user("ann")
    with deployed_daphne(kubesim, 0) as server:
        codes = [log_in(server, "wrong", f"{forged(i)}, {REAL}").status_code for i in range(6)]
    assert codes == [200] * 4 + [429] * 2
    assert attempt_addresses() == {"127.0.0.1"}  # the socket peer


def test_a_list_of_trusted_proxies_gives_the_address_left_of_them(kubesim):
    make_user("ann")
    with deployed_daphne(kubesim, ["127.0.0.0/8", "10.0.0.0/8"]) as server:
        response = log_in(server, "wrong", f"{forged()}, {REAL}, 10.1.2.3")
    assert response.status_code == 200
    assert attempt_addresses() == {REAL}


# Terminals: the session records and the denials.


async def test_sessions_and_denials_record_the_client_behind_one_proxy(kubesim):
    cookie = await sync_to_async(staff_cookie)()
    with deployed_daphne(kubesim, 1) as server:
        assert await session_address(server, cookie, f"{forged()}, {REAL}") == REAL
        assert await denial_address(server, WEB, f"{forged()}, 203.0.113.8", 4401) == (
            "203.0.113.8"
        )
        malformed = "/ws/terminals/whatever"
        assert await denial_address(server, malformed, f"{forged()}, 203.0.113.9", 4400) == (
            "203.0.113.9"
        )


async def test_with_no_trusted_proxy_terminals_record_the_socket_peer(kubesim):
    cookie = await sync_to_async(staff_cookie)()
    with deployed_daphne(kubesim, 0) as server:
        assert await session_address(server, cookie, f"{forged()}, {REAL}") == "127.0.0.1"
        assert await denial_address(server, WEB, f"{forged()}, {REAL}", 4401) == "127.0.0.1"


async def test_a_list_of_trusted_proxies_applies_to_terminals_too(kubesim):
    cookie = await sync_to_async(staff_cookie)()
    with deployed_daphne(kubesim, ["127.0.0.0/8"]) as server:
        assert await session_address(server, cookie, f"{forged()}, {REAL}") == REAL
        assert await denial_address(server, WEB, f"{forged()}, {REAL}", 4401) == REAL
