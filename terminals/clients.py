"""The client's address, one answer for every record: sessions, denials and login lockouts.

Behind reverse proxies the socket peer is the nearest proxy. Each proxy appends the address it
received the request from to ``X-Forwarded-For``, so the entries written by trusted proxies are
at the right, and everything to their left is whatever the client chose to send. The client is
therefore the right-most entry that no trusted proxy wrote; never the first entry, which is the
one Daphne's ``--proxy-headers`` takes (run Daphne without it: it also hides the socket peer).

``settings.TERMINALS_TRUSTED_PROXIES`` says which proxies are trusted:

- ``0`` (the default): none. The socket peer is the client; ``X-Forwarded-For`` is ignored.
- ``N``: N proxies in front of the server, each appending to ``X-Forwarded-For``. The client is
  N hops left of the socket peer (the left-most entry when a request came through fewer).
- a list of addresses or networks (``["10.0.0.0/8", "fd00::/8"]``): walking left from the
  socket peer, the first address outside them. A peer on a UNIX socket counts as trusted.

A request with a count or a list is believed only if it cannot reach the server except through
those proxies. A hop a trusted proxy wrote that is not an IP address means a misconfigured
proxy: the address is then unknown (None), and a warning is logged.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, TypeAlias

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest

logger = logging.getLogger(__name__)

SETTING = "TERMINALS_TRUSTED_PROXIES"
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
# A number of proxies, or the networks proxies connect from.
Trusted: TypeAlias = int | tuple[Network, ...]


def client_address(source: HttpRequest | Mapping[str, Any]) -> str | None:
    """The client's address for a Django request or an ASGI (WebSocket or HTTP) scope."""
    if isinstance(source, HttpRequest):
        peer = source.META.get("REMOTE_ADDR") or None
        forwarded = str(source.META.get("HTTP_X_FORWARDED_FOR", ""))
    else:
        client = source.get("client")
        peer = str(client[0]) if client else None
        # Repeated headers count as one, joined in order, as Django joins them into META.
        forwarded = ",".join(
            value.decode("latin-1")
            for name, value in source.get("headers", [])
            if name.lower() == b"x-forwarded-for"
        )
    return resolve_client_address(peer, forwarded, trusted_proxies())


def resolve_client_address(peer: str | None, forwarded_for: str, trusted: Trusted) -> str | None:
    """The right-most address that no trusted proxy wrote; pure, for the callers above."""
    if not trusted:
        return _checked(peer, "socket peer")
    hops: list[str | None] = [e.strip() for e in forwarded_for.split(",") if e.strip()]
    hops.append(peer)
    if isinstance(trusted, int):
        return _checked(hops[max(0, len(hops) - 1 - trusted)], "X-Forwarded-For entry")
    for index in range(len(hops) - 1, -1, -1):
        hop = hops[index]
        if hop is None and index == len(hops) - 1:
            continue  # a UNIX socket: only a local process can be the peer
        address = parse_address(hop)
        if address is None:
            return _checked(hop, "X-Forwarded-For entry")
        if index == 0 or not any(address in network for network in trusted):
            return str(address)
    return None  # unreachable: the loop returns at index 0


def parse_address(text: str | None) -> Address | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``), or None."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(text.partition("%")[0])  # without an IPv6 zone
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # a dual-stack socket's IPv4 peer
    return address


def _checked(hop: str | None, where: str) -> str | None:
    """The chosen hop as a normal address string; None (and a warning) if it is not one."""
    if hop is None:
        return None
    address = parse_address(hop)
    if address is None:
        logger.warning(
            "The %s taken as the client address is not an IP address: %r. Check %s and what "
            "the proxies send.",
            where,
            hop[:100],
            SETTING,
        )
        return None
    return str(address)


def parse_trusted(value: object) -> Trusted:
    """Check and compile a ``TERMINALS_TRUSTED_PROXIES`` value."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        networks = []
        for item in value:
            try:
                networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
            except ValueError:
                raise ImproperlyConfigured(
                    f"{SETTING}: {item!r} is not an IP address or network (CIDR)."
                ) from None
        return tuple(networks)
    raise ImproperlyConfigured(
        f"{SETTING} must be a number of proxies (0 or more) or a list of their addresses or "
        f"networks, not {value!r}."
    )


@cache
def trusted_proxies() -> Trusted:
    """The configured trusted proxies; cached, and cleared when a test changes the setting."""
    return parse_trusted(getattr(settings, SETTING, 0))


def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING:
        trusted_proxies.cache_clear()


setting_changed.connect(_clear_cache, dispatch_uid="terminals.clients.clear_cache")
