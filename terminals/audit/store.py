"""Synchronous ORM work of the audit trail: the writers' connections, a session's totals,
verifying, exporting, pruning. The group commit itself is ``writes.py``.

The group writer's threads (``writer.py``) each keep their own connection, named
``terminals-audit`` in ``pg_stat_activity`` and, on PostgreSQL, with ``statement_timeout`` set
to ``AUDIT_COMMIT_TIMEOUT`` once per new connection (:func:`configuration`, which the event
loop's connections of ``loopwrites.py`` take too): the writer gives up on a commit after that
long, and the server then cancels the statement, so a lock held elsewhere cannot park the thread
(and every commit queued behind it) for longer. On SQLite the ``timeout`` option of
``DATABASES`` bounds lock waits instead.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models import Count, Sum
from django.db.models.functions import Length

from ..conf import get_config
from ..models import AuditPrune, Command, Frame, Session
from . import cast, seal
from .chain import ChainFrame, Kind, Verdict, verify
from .commands import CommandLine
from .keyring import current_key, known_keys

logger = logging.getLogger(__name__)

#: ``application_name`` of the audit's connections (the writer's threads' and the event loop's),
#: for operators (and tests).
APPLICATION_NAME = "terminals-audit"

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
try:
    import psycopg

    # Django wraps driver errors, but one raised outside its wrappers must count too.
    _CONNECTION_ERRORS += (psycopg.OperationalError, psycopg.InterfaceError)
except ImportError:  # pragma: no cover - SQLite-only installations
    pass

# SQLSTATEs of a lost connection: class 08 (connection exception) and a server shutting down
# or terminating the backend (failover, restart, pg_terminate_backend). Other operational
# errors with a SQLSTATE (a statement timeout, a lock timeout, a deadlock) are not retried.
_CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03")


@dataclass(frozen=True)
class PendingFrame:
    seq: int
    offset_us: int
    direction: str
    data: bytes
    digest: str


def is_connection_error(exc: BaseException) -> bool:
    """True if ``exc`` means the connection was lost, so a new one may well succeed.

    An error without a SQLSTATE (psycopg's "server closed the connection unexpectedly",
    SQLite's operational errors) counts; integrity errors and bugs never do.
    """
    if not isinstance(exc, _CONNECTION_ERRORS):
        return False
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc.__cause__, "sqlstate", None)
    return sqlstate is None or str(sqlstate).startswith(_CONNECTION_SQLSTATES)


# The writer's threads live long and are no request cycle: their connections are checked
# (closed if broken or past CONN_MAX_AGE) at most every CONNECTION_CHECK seconds and after an
# error, not before every commit, where a health check would cost a round trip per keystroke.
CONNECTION_CHECK = 30.0
_thread = threading.local()


def prepare_connection(*, fresh: bool = False) -> None:
    """Connect this recorder thread (anew with ``fresh``) and configure a new connection."""
    now = time.monotonic()
    if fresh:
        # The thread that retries may hold a connection as dead as the one that failed
        # (a restart kills them all); a retry costs a connect, which only retries pay.
        close_connection()
        _thread.checked_at = now
    elif now - getattr(_thread, "checked_at", 0.0) > CONNECTION_CHECK:
        close_old_connections()
        _thread.checked_at = now
    if connection.vendor != "postgresql":
        return
    timeout_ms = commit_timeout_ms()
    connection.ensure_connection()
    raw: Any = connection.connection
    if getattr(_thread, "raw", None) is not raw or _thread.timeout_ms != timeout_ms:
        with connection.cursor() as cursor:
            cursor.execute(*configuration(timeout_ms))
        _thread.raw, _thread.timeout_ms = raw, timeout_ms


def commit_timeout_ms() -> int:
    """``AUDIT_COMMIT_TIMEOUT`` in milliseconds: the audit connections' ``statement_timeout``."""
    return int(float(get_config()["AUDIT_COMMIT_TIMEOUT"]) * 1000)


def configuration(timeout_ms: int) -> tuple[str, list[str]]:
    """PostgreSQL: the statement (and its parameters) that names a new audit connection and
    bounds its statements. ``set_config()``, not ``SET``: ``SET`` takes no parameters with
    server-side binding."""
    return (
        "SELECT set_config('statement_timeout', %s, false),"
        " set_config('application_name', %s, false)",
        [str(timeout_ms), APPLICATION_NAME],
    )


def after_error(exc: BaseException) -> None:
    """A write failed: check the connection before the next one, and drop it now if lost."""
    _thread.checked_at = 0.0
    if is_connection_error(exc):
        # An idle connection killed by the server has not flagged an error, and
        # close_old_connections() would keep it.
        close_connection()


def close_connection() -> None:
    try:
        connection.close()
    except DatabaseError as exc:  # closing a broken connection may complain; it is gone anyway
        logger.debug("Closing a broken audit connection: %r", exc)


def landed(
    session_id: uuid.UUID, frames: Sequence[PendingFrame], commands: Sequence[CommandLine]
) -> bool:
    """Whether a batch whose commit seemed to fail was committed after all.

    A batch is one transaction, so its first row tells. Frames have the unique (session, seq)
    and a digest; should the retry's check and a still-running first attempt race, the
    constraint still refuses the second copy. Commands-only batches have no unique key: they
    count as committed if a command with the first one's offset and line is stored (offsets
    are microseconds of a monotonic clock, so two distinct commands do not share them).
    Commands are an index outside the chain, so the worst case is a duplicate search hit.
    """
    if frames:
        first = frames[0]
        digest = (
            Frame.objects.filter(session_id=session_id, seq=first.seq)
            .values_list("digest", flat=True)
            .first()
        )
        if digest is not None and digest != first.digest:
            raise RuntimeError(f"Frame {first.seq} of session {session_id} is not this batch's.")
        return digest is not None
    if commands:
        first_command = commands[0]
        return Command.objects.filter(
            session_id=session_id, offset_us=first_command.offset_us, line=first_command.line
        ).exists()
    return True


def totals(session_id: uuid.UUID) -> dict[str, Any]:
    """A session's counters and head, from its stored frames: exact, whatever was committed.

    Input and output count rows (consecutive output is merged into one row) and their bytes;
    the head is the last frame's digest ("" without frames).
    """
    counts = dict.fromkeys(("frames_in", "bytes_in", "frames_out", "bytes_out"), 0)
    rows = (
        Frame.objects.filter(session_id=session_id, direction__in=["i", "o"])
        .values("direction")
        .annotate(frames=Count("pk"), bytes=Sum(Length("data")))
    )
    for row in rows:
        name = "in" if row["direction"] == "i" else "out"
        counts[f"frames_{name}"], counts[f"bytes_{name}"] = row["frames"], row["bytes"] or 0
    head = (
        Frame.objects.filter(session_id=session_id)
        .order_by("-seq")
        .values_list("digest", flat=True)
        .first()
    )
    return {**counts, "head_digest": head or ""}


def chain_frames(session_id: uuid.UUID) -> Iterator[ChainFrame]:
    """The stored frames of a session in seq order, streamed."""
    rows = (
        Frame.objects.filter(session_id=session_id)
        .order_by("seq")
        .values_list("seq", "offset_us", "direction", "data", "digest")
    )
    for seq, offset_us, direction, data, digest in rows.iterator(chunk_size=500):
        yield ChainFrame(seq, offset_us, direction, bytes(data), digest)


def verify_session(session: Session) -> Verdict:
    """Check a session's frames against its keyed chain and head digest.

    Only the frames: ``ledger.check_session`` checks its seal and its place in the ledger too.
    """
    key = known_keys().get(session.key_id)
    if key is None:
        return Verdict(
            False,
            0,
            problem=f"its frames were keyed with key {session.key_id}, which is neither "
            "AUDIT_KEY nor one of AUDIT_OLD_KEYS",
            kind=Kind.WRONG_KEY,
        )
    return verify(session.pk, chain_frames(session.pk), session.head_digest, key)


def initial_size(session: Session) -> tuple[int, int]:
    """The terminal's size at the start: its first resize, else asciicast's 80x24."""
    first_resize = (
        Frame.objects.filter(session=session, direction=Frame.Direction.RESIZE)
        .order_by("seq")
        .values_list("data", flat=True)
        .first()
    )
    return (cast.parse_size(bytes(first_resize)) if first_resize else None) or cast.DEFAULT_SIZE


def export_cast(
    session: Session, idle_time_limit: float | None = None, markers: bool = False
) -> Iterator[str]:
    """The session as asciicast v2, line by line (each ending in a newline).

    With ``markers``, each command line is also an ``m`` event, for the replay page to jump to.
    """
    size = initial_size(session)
    frames: Iterator[cast.CastFrame] = (
        cast.CastFrame(f.offset_us, f.direction, f.data) for f in chain_frames(session.pk)
    )
    if markers:
        labels = [
            cast.CastFrame(offset, "m", text[:80].encode())
            for offset, text in session.commands.order_by("offset_us").values_list(
                "offset_us", "text"
            )
        ]
        frames = heapq.merge(frames, labels, key=lambda frame: frame.offset_us)
    duration = None
    if session.ended_at:
        duration = (session.ended_at - session.started_at).total_seconds()
    target = f"{session.cluster}/{session.namespace}/{session.pod}"
    if session.container:
        target += f" [{session.container}]"
    title = f"{session.username} on {target}"
    if session.exit_code is not None:
        title += f", exit {session.exit_code}"
    command = " ".join(session.command)
    yield (
        json.dumps(
            cast.header(
                size,
                int(session.started_at.timestamp()),
                title,
                command,
                duration,
                idle_time_limit,
            )
        )
        + "\n"
    )
    for line in cast.events(frames):
        yield line + "\n"


def prune(before: dt.datetime) -> AuditPrune:
    """Delete the sessions that ended before ``before``, and write down what went.

    The record is sealed: verification accepts the gaps of exactly the sessions it lists.
    Their ledger entries stay.
    """
    key = current_key()
    with transaction.atomic():
        sessions = Session.objects.filter(ended_at__lt=before)
        ids = [str(pk) for pk in sessions.values_list("pk", flat=True)]
        frames = Frame.objects.filter(session__in=sessions).count()
        sessions.delete()
        record = AuditPrune.objects.create(
            before=before, sessions=len(ids), frames=frames, session_ids=ids
        )
        # As stored, for the moments: what verification reads back.
        stored = AuditPrune.objects.filter(pk=record.pk).values(*seal.PRUNE_FIELDS).get()
        record.seal = seal.prune_seal(key, stored)
        record.save(update_fields=["seal"])
        return record
