"""The keyed seals over records: ledger links, session seals, prune seals. Pure functions.

Each is an HMAC-SHA256 under an audit key (``keyring.py``) over a canonical JSON text of the
record's fields, prefixed by what it seals, so that a seal of one kind never verifies as
another. Moments are UTC ISO 8601 with microseconds, as both databases store them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .keyring import AuditKey

#: The session fields a seal covers, as stored. Not covered: the user and ended_by foreign
#: keys and the server (set to NULL when those rows are deleted, as they may be; the user's
#: and the auditor's names are copies that are covered) and the seal itself.
SESSION_FIELDS = (
    "username",
    "cluster",
    "namespace",
    "pod",
    "container",
    "command",
    "client_address",
    "user_agent",
    "started_at",
    "ended_at",
    "exit_code",
    "end_reason",
    "end_message",
    "ended_by_username",
    "bytes_in",
    "bytes_out",
    "frames_in",
    "frames_out",
    "head_digest",
    "key_id",
    "ledger_seq",
    "sealed_frames",
    "commands_digest",
)

#: The command fields the commands digest covers, in this order.
COMMAND_FIELDS = ("offset_us", "line", "text", "typed", "kind", "echoed", "mismatch")

#: The prune record fields its seal covers.
PRUNE_FIELDS = ("id", "at", "before", "sessions", "frames", "session_ids")


def moment(value: dt.datetime | None) -> str | None:
    """A stored moment as sealed: UTC, microseconds."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return moment(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} cannot be sealed")


def canonical(kind: str, fields: Mapping[str, Any]) -> bytes:
    """The text a seal of ``kind`` is computed over."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=_plain)
    return f"webshell-{kind}:".encode() + text.encode()


def ledger_link(
    key: AuditKey,
    seq: int,
    previous: str,
    session_id: uuid.UUID | str,
    started_at: dt.datetime | None,
    username: str,
    target: str,
) -> str:
    """The link of ledger entry ``seq``: the session it numbers, keyed to the link before."""
    fields = {
        "seq": seq,
        "previous": previous,
        "session": str(session_id),
        "key": key.id,
        "started": moment(started_at),
        "user": username,
        "target": target,
    }
    return key.mac(canonical("ledger", fields)).hex()


def target_of(cluster: str, namespace: str, pod: str) -> str:
    """Where a session ran, as the ledger names it (none of the parts contains a slash)."""
    return f"{cluster}/{namespace}/{pod}"


def seal_text(key: AuditKey, kind: str, fields: Mapping[str, Any]) -> str:
    """A seal as stored: the key's id, a colon, the HMAC."""
    return f"{key.id}:{key.mac(canonical(kind, fields)).hex()}"


def session_seal(key: AuditKey, session_id: uuid.UUID | str, fields: Mapping[str, Any]) -> str:
    """The seal of a session whose stored fields are ``fields`` (at least SESSION_FIELDS)."""
    sealed = {name: fields[name] for name in SESSION_FIELDS}
    sealed["id"] = str(session_id)
    return seal_text(key, "session", sealed)


def prune_seal(key: AuditKey, fields: Mapping[str, Any]) -> str:
    """The seal of an ``AuditPrune`` record whose stored fields are ``fields``."""
    sealed = {name: fields[name] for name in PRUNE_FIELDS}
    sealed["session_ids"] = sorted(str(value) for value in sealed["session_ids"])
    return seal_text(key, "prune", sealed)


def key_id_of(seal: str) -> str:
    """The id of the key a stored seal was made with."""
    return seal.partition(":")[0]


def commands_digest(rows: Iterable[Sequence[Any]]) -> str:
    """SHA-256 over a session's command rows (COMMAND_FIELDS, in order); inside the seal."""
    digest = hashlib.sha256(b"webshell-commands:")
    for row in rows:
        digest.update(json.dumps(list(row), separators=(",", ":")).encode() + b"\n")
    return digest.hexdigest()
