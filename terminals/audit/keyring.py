"""The audit key: the secret, kept outside the database, that the audit trail is keyed with.

Frame digests, the ledger's links and the seals are HMAC-SHA256 under ``TERMINALS["AUDIT_KEY"]``.
Someone who can write the database but does not hold the key can change, remove or add rows,
but cannot make new digests that verify. Each key has a public id (the first 16 hex digits of
an HMAC of a fixed text), stored beside what it keyed, so that a record made under another key
is reported as such rather than as tampered. ``TERMINALS["AUDIT_OLD_KEYS"]`` lists keys that
are no longer used to record but still verify what they keyed (after a rotation).

With ``DEBUG`` on and no key, a development key derived from ``SECRET_KEY`` is used, with a
warning; with ``DEBUG`` off the system check ``terminals.E012`` refuses a missing or weak key,
and recording refuses to start without one.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ..conf import get_config

logger = logging.getLogger(__name__)

#: The least a key may have: characters of a text key, bytes of a binary one.
MIN_KEY_LENGTH = 32
#: ... and as many different characters, so that "ab" * 16 is not a key either.
MIN_DISTINCT = 8

_ID_TEXT = b"webshell-audit-key-id"
_DEVELOPMENT_TEXT = b"webshell-audit-development-key"


class Hasher(Protocol):
    """hashlib's and hmac's common interface."""

    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class AuditKey:
    """One audit key; :data:`UNKEYED` stands for the plain SHA-256 chains of old records."""

    __slots__ = ("_base", "id")

    def __init__(self, secret: bytes | None) -> None:
        if secret is None:
            self._base: Any = None
            #: Stored with what the key made; "" for records from before audit keys.
            self.id = ""
        else:
            # hmac objects are copied per digest: the key's pads are computed once.
            self._base = hmac.new(secret, digestmod=hashlib.sha256)
            self.id = hmac.new(secret, _ID_TEXT, hashlib.sha256).hexdigest()[:16]

    @property
    def keyed(self) -> bool:
        """False for :data:`UNKEYED`."""
        return self._base is not None

    def hasher(self) -> Hasher:
        """A fresh HMAC-SHA256 under this key (plain SHA-256 for :data:`UNKEYED`)."""
        if self._base is None:
            return hashlib.sha256()
        hasher: Hasher = self._base.copy()
        return hasher

    def mac(self, *parts: bytes) -> bytes:
        """The digest of ``parts``, concatenated."""
        hasher = self.hasher()
        for part in parts:
            hasher.update(part)
        return hasher.digest()

    def __repr__(self) -> str:
        return f"<AuditKey {self.id or 'unkeyed'}>"


#: The "key" of chains recorded before audit keys existed: plain SHA-256, verifiable by anyone,
#: so forgeable by anyone who can write the database.
UNKEYED = AuditKey(None)


def secret_bytes(value: str | bytes) -> bytes:
    """A configured key as bytes (text keys are UTF-8)."""
    return value.encode() if isinstance(value, str) else bytes(value)


def weakness(value: Any) -> str | None:
    """Why ``value`` is no good as an audit key, or None."""
    if not isinstance(value, (str, bytes)):
        return f"must be a string (or bytes), not {type(value).__name__}"
    if len(value) < MIN_KEY_LENGTH:
        return f"is {len(value)} characters long; it needs at least {MIN_KEY_LENGTH}"
    if len(set(value)) < MIN_DISTINCT:
        return f"has fewer than {MIN_DISTINCT} different characters"
    return None


@functools.lru_cache(maxsize=16)
def _key(secret: bytes) -> AuditKey:
    return AuditKey(secret)


_warned = False


def current_key() -> AuditKey:
    """The key that records are made with now.

    Raises ImproperlyConfigured without ``AUDIT_KEY`` unless ``DEBUG`` is on, when a
    development key derived from ``SECRET_KEY`` is used (and a warning logged once).
    """
    global _warned
    configured = get_config()["AUDIT_KEY"]
    if configured:
        return _key(secret_bytes(configured))
    if not settings.DEBUG:
        raise ImproperlyConfigured(
            "TERMINALS['AUDIT_KEY'] is not set: nothing can be recorded without an audit key."
        )
    if not _warned:
        _warned = True
        logger.warning(
            "TERMINALS['AUDIT_KEY'] is not set: the audit trail is keyed with a DEVELOPMENT key "
            "derived from SECRET_KEY. Anyone with SECRET_KEY can forge it. Set AUDIT_KEY "
            "(webshell: WEBSHELL_AUDIT_KEY or WEBSHELL_AUDIT_KEY_FILE) before recording "
            "anything you mean to keep."
        )
    secret = hmac.new(secret_bytes(settings.SECRET_KEY), _DEVELOPMENT_TEXT, hashlib.sha256)
    return _key(secret.digest())


def current_key_id() -> str:
    """The id of :func:`current_key` (a new session's ``key_id``)."""
    return current_key().id


def known_keys() -> dict[str, AuditKey]:
    """Every key that verifies, by id: the current one, the old ones and :data:`UNKEYED`."""
    keys = {UNKEYED.id: UNKEYED}
    for old in get_config()["AUDIT_OLD_KEYS"] or ():
        if isinstance(old, (str, bytes)) and old:
            key = _key(secret_bytes(old))
            keys[key.id] = key
    try:
        current = current_key()
    except ImproperlyConfigured:
        return keys  # verification still runs; what the current key made is "another key"
    keys[current.id] = current
    return keys
