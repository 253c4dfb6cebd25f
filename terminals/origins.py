"""The WebSocket origin check: a terminal socket opens only from the site's own pages.

The session cookie goes with every WebSocket a browser opens to this host, whatever page opens
it, and cookies are per host, not per port or scheme. So a page served on another port of the
same host (a dev server, Jupyter, another demo) or over the other scheme could open terminals
with the user's cookie if only the host were compared, as Channels' ``AllowedHostsOriginValidator``
does. :class:`TerminalsOriginValidator` compares the whole origin (scheme, host, port), as
Django's ``CsrfViewMiddleware`` does for forms:

- the site's own origin is ``https`` if the request is secure, else ``http``, then ``://`` and
  the ``Host`` header (Django's ``get_host()``: ``USE_X_FORWARDED_HOST``, and without a ``Host``
  the server's address). The request is secure when ``SECURE_PROXY_SSL_HEADER`` says so, else
  when the socket is ``wss``. Daphne puts no scheme in a WebSocket scope (ASGI's default is
  ``ws``), so behind a TLS proxy, or with Daphne serving TLS itself, set
  ``SECURE_PROXY_SSL_HEADER`` or list the ``https://`` origin in ``CSRF_TRUSTED_ORIGINS``: the
  same settings Django's CSRF check needs for the login form;
- an origin in ``CSRF_TRUSTED_ORIGINS`` is also accepted, exactly or through a wildcard
  subdomain (``https://*.example.com``), as Django has it;
- a default port (80 for http, 443 for https) equals no port; host names compare
  case-insensitively and without a trailing dot (Django's ``split_domain_port()``).

A ``Host`` that ``ALLOWED_HOSTS`` does not allow is refused whatever the origin (Django answers
such an HTTP request with 400): with it, a DNS-rebinding page would be its own origin.

A missing ``Origin`` is refused, as Channels does. Browsers always send one on a WebSocket
(RFC 6455, section 4.1), and a header stripped on the way must not switch the only cross-site
check of a cookie-authenticated socket off; a client that is not a browser sends
``Origin: <the site's URL>``, as the tests' client and the benchmark do. ``null`` (sandboxed
frames, ``file:`` and ``data:`` pages) and anything that is not a serialized ``http(s)`` origin
are refused too.

A refused handshake is closed before it is accepted, which Daphne answers with HTTP 403; the
reason goes to this module's log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_PORTS = {"http": 80, "https": 443}
# The page scheme that goes with a socket scheme; a scope may also carry http(s).
PAGE_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
# Django's own localhost variants when DEBUG is on and ALLOWED_HOSTS empty (HttpRequest.get_host).
DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]
SERIALIZED_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://(.*)", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Origin:
    """A web origin: scheme, lower-case host (IPv6 in brackets), port (the default if none)."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        """The serialized origin, without a default port."""
        port = "" if self.port == DEFAULT_PORTS[self.scheme] else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"


def origin_of(scheme: str, host: str) -> Origin | None:
    """The origin of ``host`` (``name[:port]``, as a Host header) under ``scheme``, or None."""
    scheme = scheme.lower()
    domain, port = split_domain_port(host)
    if scheme not in DEFAULT_PORTS or not domain:
        return None
    number = int(port) if port else DEFAULT_PORTS[scheme]
    return Origin(scheme, domain, number) if 0 < number < 65536 else None


def parse_origin(value: str) -> Origin | None:
    """An ``Origin`` header's origin, or None for ``null`` or anything else a page never sends.

    A serialized origin has no path, query, fragment or user info: each of those fails here.
    """
    match = SERIALIZED_ORIGIN.fullmatch(value)
    return origin_of(match[1], match[2]) if match else None


def is_trusted(origin: Origin, trusted_origins: Iterable[str]) -> bool:
    """Whether ``origin`` is one of ``CSRF_TRUSTED_ORIGINS`` (with Django's ``*.`` wildcard)."""
    for entry in trusted_origins:
        match = SERIALIZED_ORIGIN.fullmatch(entry)
        if match is None:
            continue  # Django's check 4_0.E001 reports entries without a scheme
        scheme, netloc = match[1].lower(), match[2]
        if "*" not in netloc:
            if parse_origin(entry) == origin:
                return True
            continue
        # As Django: "https://*.example.com" stands for ".example.com", the domain and its
        # subdomains ("https://*example.com" only for "example.com").
        netloc = netloc.lstrip("*")
        dot = "." if netloc.startswith(".") else ""
        pattern = origin_of(scheme, netloc.lstrip("."))
        if (
            pattern is not None
            and (pattern.scheme, pattern.port) == (origin.scheme, origin.port)
            and is_same_domain(origin.host, dot + pattern.host)
        ):
            return True
    return False


def request_meta(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The scope's headers under Django's ``META`` names (``HTTP_HOST``…), as ``ASGIRequest``:
    repeated headers are joined with commas."""
    meta: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = "HTTP_" + raw_name.decode("latin1").upper().replace("-", "_")
        value = raw_value.decode("latin1")
        meta[name] = f"{meta[name]},{value}" if name in meta else value
    return meta


def is_secure(
    meta: Mapping[str, str], scope_scheme: str, proxy_ssl_header: tuple[str, str] | None
) -> bool:
    """Django's ``HttpRequest.is_secure()``: the proxy's header if set and sent, else the scope."""
    if proxy_ssl_header:
        try:
            header, secure_value = proxy_ssl_header
        except ValueError:
            raise ImproperlyConfigured(
                "The SECURE_PROXY_SSL_HEADER setting must be a tuple containing two values."
            ) from None
        value = meta.get(header)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return PAGE_SCHEMES.get(scope_scheme, "http") == "https"


def raw_host(
    meta: Mapping[str, str],
    server: tuple[str, int] | list[Any] | None,
    secure: bool,
    *,
    use_x_forwarded_host: bool = False,
    use_x_forwarded_port: bool = False,
) -> str:
    """Django's ``HttpRequest._get_raw_host()``: the host the request names, not yet validated."""
    if use_x_forwarded_host and "HTTP_X_FORWARDED_HOST" in meta:
        return meta["HTTP_X_FORWARDED_HOST"]
    if "HTTP_HOST" in meta:
        return meta["HTTP_HOST"]
    # No Host header (a browser always sends one): the server's address, as PEP 333 has it.
    name, port = (str(server[0]), str(server[1])) if server else ("unknown", "0")
    if use_x_forwarded_port and "HTTP_X_FORWARDED_PORT" in meta:
        port = meta["HTTP_X_FORWARDED_PORT"]
    return name if port == ("443" if secure else "80") else f"{name}:{port}"


def host_allowed(host: str, allowed_hosts: list[str], debug: bool) -> bool:
    """Django's host validation (``get_host()``) of ``host`` against ``ALLOWED_HOSTS``."""
    if debug and not allowed_hosts:
        allowed_hosts = DEBUG_HOSTS
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed_hosts)


def refusal(scope: Scope) -> str | None:
    """Why the WebSocket of ``scope`` must be refused, or None if its origin is the site's own
    or trusted. Reads the settings on every call, so ``override_settings`` applies."""
    meta = request_meta(scope.get("headers", []))
    secure = is_secure(meta, scope.get("scheme") or "ws", settings.SECURE_PROXY_SSL_HEADER)
    host = raw_host(
        meta,
        scope.get("server"),
        secure,
        use_x_forwarded_host=settings.USE_X_FORWARDED_HOST,
        use_x_forwarded_port=settings.USE_X_FORWARDED_PORT,
    )
    if not host_allowed(host, settings.ALLOWED_HOSTS, settings.DEBUG):
        return f"the host {host!r} is not in ALLOWED_HOSTS"
    header = meta.get("HTTP_ORIGIN")
    if header is None:
        return "the handshake has no Origin header"
    origin = parse_origin(header)
    if origin is None:
        return f"the Origin {header!r} is not an http(s) origin"
    site = origin_of("https" if secure else "http", host)
    if origin == site or is_trusted(origin, settings.CSRF_TRUSTED_ORIGINS):
        return None
    return f"the Origin {header!r} is neither the site's own ({site}) nor in CSRF_TRUSTED_ORIGINS"


class TerminalsOriginValidator:
    """ASGI middleware for WebSockets: passes a handshake on to ``application`` only if its
    ``Origin`` is the site's own (scheme, host, port) or trusted; refuses it (HTTP 403) else."""

    def __init__(self, application: ASGIApp) -> None:
        self.application = application

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the origin, then run the application or refuse the handshake."""
        if scope["type"] != "websocket":
            raise ValueError("TerminalsOriginValidator only handles WebSocket connections.")
        reason = refusal(scope)
        if reason is None:
            await self.application(scope, receive, send)
            return
        logger.warning("WebSocket %s refused: %s.", scope.get("path", ""), reason)
        await deny(receive, send)


async def deny(receive: Receive, send: Send) -> None:
    """Refuse a WebSocket handshake: a close before the accept, which servers answer with 403.

    Then wait for the disconnect, as Channels' ``WebsocketDenier`` does, so the server sees the
    application end after the connection, as with every other consumer.
    """
    while (message := await receive())["type"] != "websocket.disconnect":
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close"})
