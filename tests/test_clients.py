"""terminals.clients: the client's address behind trusted proxies, for requests and scopes.

The client chooses every X-Forwarded-For entry left of those its proxies wrote, so only the
right-most untrusted one is its address. Each case below is one such header; the end-to-end
cases (a real Daphne, logins, terminals) are in test_proxies.py.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import re
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest
from django.test import RequestFactory

from terminals.clients import client_address, parse_trusted, resolve_client_address
from terminals.conf import get_config
from terminals.consumers import MalformedPathConsumer
from terminals.models import DeniedAttempt, Session
from terminals.session.admission import Admission
from terminals.session.ending import EndSession
from tests.fixtures.users import make_user

PROXY = "10.0.0.1"  # the socket peer: the proxy next to the server
CLIENT = "203.0.113.7"  # what that proxy appended: the client it saw
FORGED = "198.51.100.66"  # what the client sent itself


def networks(*texts: str) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(text) for text in texts)


# resolve_client_address: one function, every shape of header.


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        (f"{FORGED}, {CLIENT}", CLIENT),
        (f"{FORGED}, 192.0.2.1, {FORGED}, {CLIENT}", CLIENT),  # any number of forged entries
        (CLIENT, CLIENT),
        ("", PROXY),  # not through the proxy (a health check): the peer is all there is
        (f"not-an-address, {CLIENT}", CLIENT),  # the client's garbage is never looked at
        (f"{FORGED},{CLIENT}", CLIENT),
        (f" {FORGED} ,, {CLIENT} ", CLIENT),
    ],
)
def test_one_trusted_proxy_gives_the_entry_it_appended(forwarded, expected):
    assert resolve_client_address(PROXY, forwarded, 1) == expected


def test_two_trusted_proxies_give_the_entry_the_farther_one_appended():
    forwarded = f"{FORGED}, {CLIENT}, 10.9.9.9"  # the CDN appended CLIENT, the LB the CDN
    assert resolve_client_address(PROXY, forwarded, 2) == CLIENT
    # A request that came through the nearer proxy only: the farthest entry there is.
    assert resolve_client_address(PROXY, CLIENT, 2) == CLIENT


def test_with_no_trusted_proxy_the_header_is_ignored_entirely():
    assert resolve_client_address(CLIENT, f"{FORGED}, 192.0.2.1", 0) == CLIENT
    assert resolve_client_address(CLIENT, f"{FORGED}, 192.0.2.1", ()) == CLIENT


def test_a_list_of_proxies_walks_left_from_the_peer_to_the_first_untrusted_address():
    trusted = networks("10.0.0.0/8", "fd00::/8")
    assert resolve_client_address(PROXY, f"{FORGED}, {CLIENT}, 10.2.3.4", trusted) == CLIENT
    assert resolve_client_address("fd00::5", f"{FORGED}, {CLIENT}", trusted) == CLIENT
    # A peer that is not a trusted proxy is the client, whatever it sent.
    assert resolve_client_address(CLIENT, f"{FORGED}, 10.2.3.4", trusted) == CLIENT
    # Only proxies all the way: the left-most is the one that started it (a proxy's own check).
    assert resolve_client_address(PROXY, "10.3.3.3, 10.2.2.2", trusted) == "10.3.3.3"
    # A UNIX socket has no peer address: only a local process, the proxy, can connect to it.
    assert resolve_client_address(None, f"{FORGED}, {CLIENT}", trusted) == CLIENT


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("203.0.113.7:51234", "203.0.113.7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("2001:DB8:0::7", "2001:db8::7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("fe80::7%eth0", "fe80::7"),
    ],
)
def test_addresses_are_read_as_proxies_write_them_and_stored_in_one_form(written, expected):
    assert resolve_client_address(PROXY, f"{FORGED}, {written}", 1) == expected
    assert resolve_client_address(written, "", 0) == expected


def test_an_entry_a_trusted_proxy_wrote_that_is_no_address_is_unknown_and_logged(caplog):
    caplog.set_level(logging.WARNING, logger="terminals.clients")
    assert resolve_client_address(PROXY, f"{FORGED}, unknown", 1) is None
    trusted = networks("10.0.0.0/8")
    assert resolve_client_address(PROXY, f"{CLIENT}, _hidden", trusted) is None
    assert [r.getMessage() for r in caplog.records] == [
        "The X-Forwarded-For entry taken as the client address is not an IP address: "
        f"{name!r}. Check TERMINALS_TRUSTED_PROXIES and what the proxies send."
        for name in ("unknown", "_hidden")
    ]


# The setting.


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (2, 2), (["10.0.0.0/8", " fd00::/8"], networks("10.0.0.0/8", "fd00::/8"))],
)
def test_the_setting_is_a_count_or_a_list_of_networks(value, expected):
    assert parse_trusted(value) == expected
    assert parse_trusted(["10.0.0.5/8"]) == networks("10.0.0.0/8")  # host bits are forgiven


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "TERMINALS_TRUSTED_PROXIES must be a number of proxies (0 or more) or a list"),
        (True, "TERMINALS_TRUSTED_PROXIES must be a number of proxies (0 or more) or a list"),
        ("10.0.0.0/8", "TERMINALS_TRUSTED_PROXIES must be a number of proxies (0 or more)"),
        (["10.0.0.0/33"], "TERMINALS_TRUSTED_PROXIES: '10.0.0.0/33' is not an IP address or"),
        (["proxy.example"], "TERMINALS_TRUSTED_PROXIES: 'proxy.example' is not an IP address"),
    ],
)
def test_a_bad_setting_says_what_it_must_be(value, message):
    with pytest.raises(ImproperlyConfigured, match="^" + re.escape(message)):
        parse_trusted(value)


def test_a_changed_setting_is_read_again(settings):
    request = RequestFactory().get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=CLIENT)
    settings.TERMINALS_TRUSTED_PROXIES = 0
    assert client_address(request) == PROXY
    settings.TERMINALS_TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(request) == CLIENT


# Requests and scopes: the same answer over HTTP and WebSocket.


def test_a_request_reads_the_peer_and_the_header_from_meta(settings):
    settings.TERMINALS_TRUSTED_PROXIES = 1
    request = RequestFactory().post(
        "/accounts/login/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"{FORGED}, {CLIENT}"
    )
    assert client_address(request) == CLIENT


def test_a_scope_joins_repeated_headers_in_order_as_django_does(settings):
    settings.TERMINALS_TRUSTED_PROXIES = 1
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "client": (PROXY, 40000),
        # The client's own header first; a proxy that adds a header line instead of appending.
        "headers": [(b"x-forwarded-for", FORGED.encode()), (b"x-forwarded-for", b"203.0.113.7")],
    }
    assert client_address(scope) == CLIENT
    assert client_address(ASGIRequest(scope, io.BytesIO())) == CLIENT
    assert client_address({**scope, "client": None, "headers": []}) is None


# Who uses it: session records and denials.


def terminal_scope(user: Any, forwarded: str, pod: str = "web-0") -> dict[str, Any]:
    return {
        "url_route": {"kwargs": {"cluster": "kubesim", "namespace": "default", "pod": pod}},
        "query_string": b"",
        "user": user,
        "client": (PROXY, 5555),
        "headers": [(b"user-agent", b"UA"), (b"x-forwarded-for", forwarded.encode())],
    }


@pytest.mark.django_db(transaction=True)
async def test_a_denial_records_the_client_not_the_forged_entry(settings):
    settings.TERMINALS_TRUSTED_PROXIES = 1
    admission = Admission(terminal_scope(AnonymousUser(), f"{FORGED}, {CLIENT}"), get_config())
    with pytest.raises(EndSession):
        await admission.admit()
    denial = await DeniedAttempt.objects.aget()
    assert (denial.code, denial.client_address) == ("not_authenticated", CLIENT)


@pytest.mark.django_db(transaction=True)
async def test_a_session_records_the_client_not_the_forged_entry(settings):
    settings.TERMINALS_TRUSTED_PROXIES = 1
    user = await database_sync_to_async(make_user)("root", is_superuser=True)
    admitted = await Admission(terminal_scope(user, f"{FORGED}, {CLIENT}"), get_config()).admit()
    record = await Session.objects.aget(pk=admitted.record.pk)
    assert record.client_address == CLIENT


@pytest.mark.django_db(transaction=True)
async def test_a_malformed_terminal_address_records_the_client(settings):
    settings.TERMINALS_TRUSTED_PROXIES = 1
    consumer = MalformedPathConsumer.as_asgi()

    async def from_the_proxy(scope: Any, receive: Any, send: Any) -> Any:
        return await consumer({**scope, "client": (PROXY, 5555)}, receive, send)

    communicator = WebsocketCommunicator(
        from_the_proxy,
        "/ws/terminals/whatever",
        headers=[(b"x-forwarded-for", f"{FORGED}, {CLIENT}".encode())],
    )
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from())["code"] == "bad_request"
    assert (await communicator.receive_output())["code"] == 4400
    denial = await DeniedAttempt.objects.aget()
    assert (denial.code, denial.client_address) == ("bad_request", CLIENT)
