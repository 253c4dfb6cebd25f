"""The WebSocket origin check: the pure comparison in-process, then every variant through Daphne."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import aiohttp
import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured

from terminals.models import DeniedAttempt, Session
from terminals.origins import (
    Origin,
    TerminalsOriginValidator,
    is_trusted,
    parse_origin,
    refusal,
)
from tests.fixtures.terminal_client import terminal
from tests.fixtures.users import make_user, session_cookie

# The comparison.


@pytest.mark.parametrize(
    ("header", "origin"),
    [
        ("http://127.0.0.1:8000", Origin("http", "127.0.0.1", 8000)),
        ("http://localhost", Origin("http", "localhost", 80)),
        ("http://localhost:80", Origin("http", "localhost", 80)),
        ("https://Shell.Example.com", Origin("https", "shell.example.com", 443)),
        ("HTTPS://shell.example.com:443", Origin("https", "shell.example.com", 443)),
        ("http://[::1]:8000", Origin("http", "[::1]", 8000)),
        ("https://[::1]", Origin("https", "[::1]", 443)),
    ],
)
def test_an_origin_is_parsed_with_its_default_port(header, origin):
    assert parse_origin(header) == origin


@pytest.mark.parametrize(
    "header",
    [
        "null",  # sandboxed frames, file: and data: pages
        "",
        "127.0.0.1:8000",
        "ws://127.0.0.1:8000",
        "file:///etc/passwd",
        "http://127.0.0.1:8000/terminals/",
        "http://127.0.0.1:8000?x=1",
        "http://user@127.0.0.1:8000",
        "http://127.0.0.1:",
        "http://127.0.0.1:70000",
        "http://127.0.0.1:8000, http://evil.example",  # two Origin headers, joined
        "http://shell example.com",
        "http://bücher.example",  # browsers send the punycode form
    ],
)
def test_what_is_not_a_serialized_http_origin_is_not_an_origin(header):
    assert parse_origin(header) is None


def test_an_origin_reads_as_the_browser_sends_it():
    assert str(Origin("http", "localhost", 80)) == "http://localhost"
    assert str(Origin("https", "[::1]", 8443)) == "https://[::1]:8443"


@pytest.mark.parametrize(
    ("header", "trusted", "expected"),
    [
        ("https://shell.example.com", ["https://shell.example.com"], True),
        ("https://shell.example.com", ["https://shell.example.com:443"], True),
        ("https://shell.example.com:8443", ["https://shell.example.com"], False),
        ("http://shell.example.com", ["https://shell.example.com"], False),
        ("https://other.example.com", ["https://shell.example.com"], False),
        ("https://a.example.com", ["https://*.example.com"], True),
        ("https://a.b.example.com", ["https://*.example.com"], True),
        ("https://example.com", ["https://*.example.com"], True),
        ("https://a.example.com:8443", ["https://*.example.com"], False),
        ("https://a.example.com:8443", ["https://*.example.com:8443"], True),
        ("http://a.example.com", ["https://*.example.com"], False),
        ("https://badexample.com", ["https://*.example.com"], False),
        ("https://a.example.com", ["https://*example.com"], False),  # Django: no dot, no subdomains
        ("https://a.example.com", ["a.example.com", "https://", "*"], False),  # not origins
    ],
)
def test_trusted_origins_match_as_django_csrf_does_with_default_ports(header, trusted, expected):
    origin = parse_origin(header)
    assert origin is not None
    assert is_trusted(origin, trusted) is expected


def scope(
    origin: str | None = "http://127.0.0.1:8000",
    host: str | None = "127.0.0.1:8000",
    scheme: str | None = None,
    **headers: str,
) -> dict[str, Any]:
    """A WebSocket scope as Daphne makes it (no scheme unless given), with these headers."""
    raw = [(b"host", host.encode())] if host is not None else []
    if origin is not None:
        raw.append((b"origin", origin.encode()))
    raw += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    result: dict[str, Any] = {"type": "websocket", "path": "/ws/terminals/kubesim/default/web/"}
    result.update(headers=raw, server=["127.0.0.1", 8000], client=["127.0.0.1", 50000])
    if scheme:
        result["scheme"] = scheme
    return result


@pytest.fixture
def site(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "shell.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = []
    settings.SECURE_PROXY_SSL_HEADER = None
    settings.DEBUG = False
    return settings


@pytest.mark.parametrize(
    ("request_scope", "accepted"),
    [
        pytest.param(scope(), True, id="same origin"),
        pytest.param(scope("http://127.0.0.1:9999"), False, id="other port"),
        pytest.param(scope("http://127.0.0.1"), False, id="no port is port 80"),
        pytest.param(scope("https://127.0.0.1:8000"), False, id="other scheme"),
        pytest.param(scope("http://localhost:8000"), False, id="other host of the machine"),
        pytest.param(scope("http://localhost:1234", "localhost:8000"), False, id="localhost port"),
        pytest.param(scope("https://evil.example"), False, id="another site"),
        pytest.param(scope("http://localhost", "localhost"), True, id="default port, none"),
        pytest.param(scope("http://localhost:80", "localhost"), True, id="default port given"),
        pytest.param(scope("http://localhost", "localhost:80"), True, id="default port in host"),
        pytest.param(scope("http://localhost:8000", "LocalHost:8000"), True, id="host case"),
        pytest.param(scope("https://localhost", "localhost", "wss"), True, id="wss: https"),
        pytest.param(scope("https://localhost", "localhost:443", "wss"), True, id="wss: 443"),
        pytest.param(scope("http://localhost", "localhost", "wss"), False, id="wss: not http"),
        pytest.param(scope("https://localhost", "localhost", "ws"), False, id="ws: not https"),
        pytest.param(scope("http://[::1]:8000", "[::1]:8000"), True, id="ipv6"),
        pytest.param(scope("http://[::1]:9999", "[::1]:8000"), False, id="ipv6 other port"),
        pytest.param(scope("http://127.0.0.1:8000", "[::1]:8000"), False, id="ipv6 other host"),
        pytest.param(scope("http://127.0.0.1:8000", None), True, id="no host: server address"),
        pytest.param(scope("http://127.0.0.1", None), False, id="no host: server port"),
    ],
)
def test_only_the_sites_own_origin_is_accepted(site, request_scope, accepted):
    assert (refusal(request_scope) is None) is accepted


@pytest.mark.parametrize(
    ("request_scope", "reason"),
    [
        (scope(None), "the handshake has no Origin header"),
        (scope("null"), "the Origin 'null' is not an http(s) origin"),
        (
            scope("http://127.0.0.1:9999"),
            "the Origin 'http://127.0.0.1:9999' is neither the site's own "
            "(http://127.0.0.1:8000) nor in CSRF_TRUSTED_ORIGINS",
        ),
        (
            scope("http://evil.example:8000", "evil.example:8000"),
            "the host 'evil.example:8000' is not in ALLOWED_HOSTS",
        ),
        (scope(host=None) | {"server": None}, "the host 'unknown:0' is not in ALLOWED_HOSTS"),
    ],
)
def test_a_refusal_says_why(site, request_scope, reason):
    assert refusal(request_scope) == reason


def test_a_trusted_origin_is_accepted_whatever_the_host_names(site):
    site.CSRF_TRUSTED_ORIGINS = ["https://shell.example.com", "https://*.tools.example.com"]
    assert refusal(scope("https://shell.example.com")) is None
    assert refusal(scope("https://ops.tools.example.com")) is None
    assert refusal(scope("http://shell.example.com")) is not None
    assert refusal(scope("https://shell.example.com:8443")) is not None


def test_a_host_not_in_allowed_hosts_is_refused_even_from_a_trusted_origin(site):
    """As Django answers 400 to such a request: a DNS-rebinding page is its own origin."""
    site.CSRF_TRUSTED_ORIGINS = ["http://rebound.example:8000"]
    assert refusal(scope("http://rebound.example:8000", "rebound.example:8000")) == (
        "the host 'rebound.example:8000' is not in ALLOWED_HOSTS"
    )


def test_allowed_hosts_star_still_refuses_another_sites_origin(site):
    """With "*" any Host passes, but the Origin must still be the one the browser connected to."""
    site.ALLOWED_HOSTS = ["*"]
    assert refusal(scope("https://evil.example", "shell.example.com")) is not None
    assert refusal(scope("http://shell.example.com:9999", "shell.example.com")) is not None
    assert refusal(scope("http://rebound.example", "rebound.example")) is None


def test_debug_with_no_allowed_hosts_allows_localhost_as_django_does(site):
    site.DEBUG, site.ALLOWED_HOSTS = True, []
    assert refusal(scope("http://localhost:8000", "localhost:8000")) is None
    assert refusal(scope("http://app.localhost:8000", "app.localhost:8000")) is None
    assert refusal(scope("http://shell.example.com", "shell.example.com")) is not None


def test_behind_a_tls_proxy_the_proxy_header_makes_the_site_https(site):
    site.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = {"host": "shell.example.com", "x_forwarded_proto": "https"}
    assert refusal(scope("https://shell.example.com", **proxied)) is None
    assert refusal(scope("http://shell.example.com", **proxied)) is not None
    # The first of the values a chain of proxies appended.
    chained = proxied | {"x_forwarded_proto": "https, http"}
    assert refusal(scope("https://shell.example.com", **chained)) is None
    # The proxy says http: an https page is another origin even on a wss socket.
    plain = proxied | {"x_forwarded_proto": "http"}
    assert refusal(scope("https://shell.example.com", scheme="wss", **plain)) is not None
    assert refusal(scope("http://shell.example.com", scheme="wss", **plain)) is None


def test_without_the_proxy_header_setting_a_forwarded_proto_is_ignored(site):
    proxied = {"host": "shell.example.com", "x_forwarded_proto": "https"}
    assert refusal(scope("https://shell.example.com", **proxied)) is not None
    assert refusal(scope("http://shell.example.com", **proxied)) is None


def test_a_malformed_proxy_header_setting_is_reported_as_django_does(site):
    site.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO",)
    with pytest.raises(ImproperlyConfigured, match="SECURE_PROXY_SSL_HEADER"):
        refusal(scope(x_forwarded_proto="https"))


def test_x_forwarded_host_counts_only_with_use_x_forwarded_host(site):
    forwarded = {"host": "127.0.0.1:8000", "x_forwarded_host": "shell.example.com"}
    assert refusal(scope("http://shell.example.com", **forwarded)) is not None
    site.USE_X_FORWARDED_HOST = True
    assert refusal(scope("http://shell.example.com", **forwarded)) is None
    assert refusal(scope("http://127.0.0.1:8000", **forwarded)) is not None


# The ASGI middleware.


class Inner:
    """An application that records that it ran."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope, receive, send) -> None:
        self.scopes.append(scope)


class Handshake:
    """The server side of a handshake: a connect, then the disconnect after the answer."""

    def __init__(self) -> None:
        self.incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect"}]
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return self.incoming.pop(0)

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def test_the_validator_passes_the_sites_own_origin_on(site):
    inner, handshake = Inner(), Handshake()
    await TerminalsOriginValidator(inner)(scope(), handshake.receive, handshake.send)
    assert len(inner.scopes) == 1
    assert handshake.sent == []


async def test_the_validator_closes_before_accepting_and_logs_why(site, caplog):
    inner, handshake = Inner(), Handshake()
    with caplog.at_level(logging.WARNING, logger="terminals.origins"):
        await TerminalsOriginValidator(inner)(
            scope("http://127.0.0.1:9999"), handshake.receive, handshake.send
        )
    assert inner.scopes == []
    assert handshake.sent == [{"type": "websocket.close"}]  # before any accept: HTTP 403
    assert handshake.incoming == []  # it waited for the disconnect
    assert caplog.messages == [
        "WebSocket /ws/terminals/kubesim/default/web/ refused: the Origin "
        "'http://127.0.0.1:9999' is neither the site's own (http://127.0.0.1:8000) nor in "
        "CSRF_TRUSTED_ORIGINS."
    ]


async def test_the_validator_is_for_websockets_only(site):
    with pytest.raises(ValueError, match="only handles WebSocket"):
        await TerminalsOriginValidator(Inner())({"type": "http"}, Handshake().receive, None)


# End to end: a real Daphne, the victim's valid cookie, both sockets.

WEB = "/ws/terminals/kubesim/default/web/"
WATCH = f"/ws/terminals/watch/{uuid.uuid4()}/"

VARIANTS = {
    "other port": lambda port: {"Origin": f"http://127.0.0.1:{port + 1}"},
    "no port, so 80": lambda port: {"Origin": "http://127.0.0.1"},
    "other scheme": lambda port: {"Origin": f"https://127.0.0.1:{port}"},
    "localhost, same port": lambda port: {"Origin": f"http://localhost:{port}"},
    "localhost, other port": lambda port: {"Origin": "http://localhost:1234"},
    "another site": lambda port: {"Origin": "https://evil.example"},
    "null": lambda port: {"Origin": "null"},
    "no origin": lambda port: {},
    "a ws origin": lambda port: {"Origin": f"ws://127.0.0.1:{port}"},
    "an origin with a path": lambda port: {"Origin": f"http://127.0.0.1:{port}/terminals/"},
    "host not allowed": lambda port: {
        "Host": f"rebound.example:{port}",
        "Origin": f"http://rebound.example:{port}",
    },
}


@pytest.fixture
def victim(transactional_db) -> str:
    """The session cookie of a user who may open every pod's shells."""
    return session_cookie(make_user("victim", everywhere=True))


@pytest.mark.parametrize("path", [WEB, WATCH], ids=["terminal", "watch"])
@pytest.mark.parametrize("variant", VARIANTS)
async def test_every_other_origin_is_refused_with_403_on_both_sockets(
    daphne, victim, path, variant
):
    headers = {"Cookie": f"sessionid={victim}", **VARIANTS[variant](daphne.port)}
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await http.ws_connect(daphne.ws_url + path, headers=headers)
    assert caught.value.status == 403
    # Refused before the consumer: no session, not even a denial record.
    assert await Session.objects.acount() == 0
    assert await DeniedAttempt.objects.acount() == 0


async def test_the_sites_own_origin_opens_both_sockets(daphne, victim):
    watcher = await sync_to_async(lambda: session_cookie(make_user("auditor", is_superuser=True)))()
    async with terminal(daphne, WEB, victim, origin=daphne.origin) as client:
        ready = await client.until_message("ready")
        watch = f"/ws/terminals/watch/{ready['session']}/"
        async with terminal(daphne, watch, watcher, origin=daphne.origin, size=None) as watching:
            snapshot = await watching.first_message()
            assert snapshot["type"] == "snapshot"
