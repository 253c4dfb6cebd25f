"""One group commit, synchronously: the frames and commands of several sessions at once.

Called on the group writer's threads (``writer.py``), each with its own connection, prepared
by ``store.prepare_connection`` (statement timeout, application name, periodic health check).

This is the hot path (two commits per keystroke), so it goes through the driver, not the ORM.

- **PostgreSQL: one statement** (:func:`_postgresql_statement`), in autocommit, so atomic on its
  own: it finds the sessions that have not ended and locks them, inserts the frames and commands
  of those sessions only (parameters are arrays, sent as binary, spread by ``unnest``), and
  returns the sessions it found. One round trip instead of the five a transaction took (begin,
  check, ``COPY``'s two, commit): on the bench's machine (2026-12-07) a one-frame commit costs
  the writer's thread 0.14-0.27 ms of CPU and 0.65-0.9 ms of wall time instead of 0.44 and 1.0,
  a commit of 50 sessions' keystrokes 0.39 ms of CPU instead of 0.80, and 512 KiB of output
  0.55 instead of 0.70 (``COPY``).
- **SQLite: one transaction** (``IMMEDIATE``, as the project opens them): the check, one
  multi-row ``INSERT`` of the frames, the commands through the ORM.

A session that has ended (its seal covers its frames) or is gone gets nothing written: its batch
is refused and the other sessions' batches are written. On PostgreSQL the check takes a ``FOR KEY
SHARE`` lock on the live sessions' rows, the lock the frames' foreign key takes anyway, before any
row goes in, so the check and the inserts are one step for ``records.close_session``, which holds
the row ``FOR UPDATE``: either this commit lands before the end, and the end counts and seals its
frames, or the end lands first and this commit refuses the session. On SQLite writers are
serialised (in WAL mode a stale read also fails the write).

The session's counters and head are not updated per commit: the end computes them from the
stored frames, exactly (``store.totals``), once.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Model

from ..models import Command, Frame, Session
from .commands import CommandLine
from .store import PendingFrame, after_error, landed, prepare_connection

logger = logging.getLogger(__name__)

REFUSED = "the session has ended, or is gone from the audit store"

# Parameters of one SQLite statement at most (SQLite's own default before 3.32).
SQLITE_PARAMETERS = 999
# The columns written, each with its PostgreSQL array element type.
FRAME_COLUMNS = (
    ("session", "uuid"),
    ("seq", "int8"),
    ("offset_us", "int8"),
    ("direction", "text"),
    ("data", "bytea"),
    ("digest", "text"),
)
COMMAND_COLUMNS = (
    ("session", "uuid"),
    ("offset_us", "int8"),
    ("line", "text"),
    ("text", "text"),
    ("typed", "text"),
    ("echoed", "bool"),
    ("mismatch", "bool"),
    ("kind", "text"),
)


@dataclass(frozen=True)
class SessionBatch:
    """What one session commits at once: chained frames (in seq order) and command lines."""

    session_id: uuid.UUID
    frames: Sequence[PendingFrame]
    commands: Sequence[CommandLine] = ()

    @property
    def size(self) -> int:
        return sum(len(frame.data) for frame in self.frames)


def write_group(batches: Sequence[SessionBatch], *, retry: bool = False) -> dict[uuid.UUID, str]:
    """Commit the batches (at most one per session) at once.

    Returns the sessions whose batch was refused, with why. With ``retry`` (after a lost
    connection) the group is written on a new connection, leaving out each batch the failed
    attempt landed after all (``store.landed``).
    """
    try:
        prepare_connection(fresh=retry)
        # The driver is called directly below: its errors become Django's, as the ORM's do,
        # so that a lost connection is told from other errors (store.is_connection_error).
        with connection.wrap_database_errors:
            return _write_group(batches, retry)
    except Exception as exc:
        after_error(exc)
        raise


def _write_group(batches: Sequence[SessionBatch], retry: bool) -> dict[uuid.UUID, str]:
    if connection.vendor == "postgresql":
        todo = _not_landed(batches) if retry else batches
        live = _write_postgresql([batch.session_id for batch in batches], todo)
    else:
        with transaction.atomic():
            live = _live_sessions([batch.session_id for batch in batches])
            todo = [batch for batch in batches if batch.session_id in live]
            if retry:
                todo = _not_landed(todo)
            _insert_frames(todo)
            _insert_commands(todo)
    return {batch.session_id: REFUSED for batch in batches if batch.session_id not in live}


def _not_landed(batches: Sequence[SessionBatch]) -> list[SessionBatch]:
    return [b for b in batches if not landed(b.session_id, b.frames, b.commands)]


def _write_postgresql(
    session_ids: list[uuid.UUID], batches: Sequence[SessionBatch]
) -> set[uuid.UUID]:
    """Write the batches' rows of the sessions among ``session_ids`` that have not ended, in
    one statement; return those sessions."""
    import psycopg

    statement, parameters = postgresql_write(session_ids, batches)
    connection.ensure_connection()
    # A cursor of the driver's own, binding on the server whatever the site's settings (Django
    # binds on the client by default, which cannot send binary parameters): arrays sent as
    # text, bytes hex-encoded, cost the writer's thread ten times their size in CPU.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(statement, parameters, binary=True)
        return {row[0] for row in cursor.fetchall()}


def postgresql_write(
    session_ids: list[uuid.UUID], batches: Sequence[SessionBatch]
) -> tuple[str, list[Any]]:
    """PostgreSQL: the one statement that writes ``batches`` for the sessions among
    ``session_ids`` not ended, and returns those (:func:`_postgresql_statement`), with its
    parameters, to be sent as binary. For the writer's threads and for ``loopwrites``."""
    frames = _transposed(
        len(FRAME_COLUMNS),
        (
            (batch.session_id, f.seq, f.offset_us, f.direction, f.data, f.digest)
            for batch in batches
            for f in batch.frames
        ),
    )
    commands = _transposed(
        len(COMMAND_COLUMNS),
        (
            (batch.session_id, c.offset_us, c.line, c.text, c.typed, c.echoed, c.mismatch, c.kind)
            for batch in batches
            for c in batch.commands
        ),
    )
    with_commands = bool(commands[0])
    return (
        _postgresql_statement(with_commands),
        [session_ids, *frames, *(commands if with_commands else [])],
    )


def _transposed(count: int, rows: Any) -> list[list[Any]]:
    """``count`` lists, one per column of ``rows``."""
    columns: list[list[Any]] = [[] for _ in range(count)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


@functools.cache
def _postgresql_statement(with_commands: bool) -> str:
    """The sessions not ended, locked as ``close_session``'s lock waits for (``MATERIALIZED``:
    found and locked once, before a row goes in); the frames (and commands) of those sessions;
    the sessions found. Parameters: the session ids, then one array per column (``%b``: binary).
    Most commits carry no command (one comes with an Enter), and an empty insert of commands
    would cost each a third more."""
    quote = connection.ops.quote_name
    pk = quote(_column(Session, "id"))
    commands = f", commands AS ({_insert_from_arrays(Command, COMMAND_COLUMNS, pk)})"
    return (
        f"WITH live AS MATERIALIZED (SELECT {pk} FROM {quote(Session._meta.db_table)}"
        f" WHERE {pk} = ANY(%b::uuid[]) AND ended_at IS NULL FOR KEY SHARE),"
        f" frames AS ({_insert_from_arrays(Frame, FRAME_COLUMNS, pk)})"
        f"{commands if with_commands else ''}"
        f" SELECT {pk} FROM live"
    )


def _insert_from_arrays(model: type[Model], columns: Sequence[tuple[str, str]], pk: str) -> str:
    """INSERT the rows of one array per column (the first the session's) of live sessions."""
    quote = connection.ops.quote_name
    names = ", ".join(quote(_column(model, name)) for name, _ in columns)
    arrays = ", ".join(f"%b::{kind}[]" for _, kind in columns)
    aliases = ", ".join(f"c{number}" for number in range(len(columns)))
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({names})"
        f" SELECT * FROM unnest({arrays}) AS row({aliases}) WHERE c0 IN (SELECT {pk} FROM live)"
    )


@functools.cache
def _column(model: type[Model], field: str) -> str:
    found: Any = model._meta.get_field(field)  # a concrete field: it has a column
    return str(found.column)


def _live_sessions(session_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """SQLite: the sessions among ``session_ids`` that have not ended.

    Counted first, one row: every row a query returns is a step of SQLite's, and each step
    hands Python's lock over, which the event loop's thread may then keep for up to the switch
    interval (5 ms). The ids are listed only when some session is not live."""
    if not session_ids:
        return set()
    values = {session.hex: session for session in session_ids}  # how SQLite stores a UUID
    pk = _column(Session, "id")
    where = (
        f" FROM {Session._meta.db_table} WHERE {pk}"
        f" IN ({', '.join('?' * len(values))}) AND ended_at IS NULL"
    )
    driver = _sqlite()
    (count,) = driver.execute(f"SELECT count(*){where}", list(values)).fetchone()
    if count == len(values):
        return set(session_ids)
    return {values[row[0]] for row in driver.execute(f"SELECT {pk}{where}", list(values))}


def _insert_frames(batches: Sequence[SessionBatch]) -> None:
    """SQLite: the frames in one multi-row ``INSERT`` (or a few, within SQLite's limit of
    parameters), one step each: ``executemany`` took one per row (see ``_live_sessions``)."""
    params: list[Any] = []
    for batch in batches:
        session = batch.session_id.hex
        for f in batch.frames:
            params += (session, f.seq, f.offset_us, f.direction, f.data, f.digest)
    width = len(FRAME_COLUMNS)
    insert, row = _sqlite_frame_insert()
    most = SQLITE_PARAMETERS // width * width
    driver = _sqlite()
    for start in range(0, len(params), most):
        chunk = params[start : start + most]
        driver.execute(insert + ", ".join([row] * (len(chunk) // width)), chunk)


@functools.cache
def _sqlite_frame_insert() -> tuple[str, str]:
    """SQLite: the frames' ``INSERT … VALUES `` and the placeholders of one row."""
    columns = ", ".join(_column(Frame, name) for name, _ in FRAME_COLUMNS)
    return (
        f"INSERT INTO {Frame._meta.db_table} ({columns}) VALUES ",
        f"({', '.join('?' * len(FRAME_COLUMNS))})",
    )


def _sqlite() -> Any:
    """The driver's connection (``sqlite3.Connection``), in the transaction Django opened: the
    statements are built here with the driver's placeholders, and Django's wrapper would
    rewrite each one's with a regular expression."""
    connection.ensure_connection()
    return connection.connection


def _insert_commands(batches: Sequence[SessionBatch]) -> None:
    commands = [
        Command(
            session_id=batch.session_id,
            offset_us=c.offset_us,
            line=c.line,
            text=c.text,
            typed=c.typed,
            echoed=c.echoed,
            mismatch=c.mismatch,
            kind=c.kind,
        )
        for batch in batches
        for c in batch.commands
    ]
    if commands:
        Command.objects.bulk_create(commands)
