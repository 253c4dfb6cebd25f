"""One group commit, synchronously: the frames and commands of several sessions in one transaction.

Called on the group writer's threads (``writer.py``), each with its own connection, prepared
by ``store.prepare_connection`` (statement timeout, application name, periodic health check).

Frames go through the driver, not the ORM, because this is the hot path (two commits per
keystroke): on PostgreSQL one ``COPY … FROM STDIN (FORMAT BINARY)`` for the whole group (psycopg
sends the rows as binary, no SQL text is built per row); elsewhere one ``executemany``. Commands
(one per Enter) use the ORM.

A session that has ended (its seal covers its frames) or is gone gets nothing written: its batch
is refused and the other sessions' batches are written. On PostgreSQL the check takes a ``FOR KEY
SHARE`` lock on the live sessions' rows, the lock the frames' foreign key takes anyway, so the
check and the inserts are one step for ``records.close_session``, which holds the row ``FOR
UPDATE``: either this commit lands before the end, and the end counts and seals its frames, or
the end lands first and this commit refuses the session. On SQLite writers are serialised (the
project opens transactions ``IMMEDIATE``; in WAL mode a stale read also fails the write).

The session's counters and head are no longer updated per commit: the end computes them from the
stored frames, exactly (``store.totals``), once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from ..models import Command, Frame, Session
from .commands import CommandLine
from .store import PendingFrame, after_error, landed, prepare_connection

logger = logging.getLogger(__name__)

FRAME_COLUMNS = ("session", "seq", "offset_us", "direction", "data", "digest")
# The binary COPY format of each column, in FRAME_COLUMNS order.
COPY_TYPES = ("uuid", "int8", "int8", "text", "bytea", "text")
REFUSED = "the session has ended, or is gone from the audit store"


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
    """Commit the batches (at most one per session) in one transaction.

    Returns the sessions whose batch was refused, with why. With ``retry`` (after a lost
    connection) the group is written on a new connection, leaving out each batch the failed
    attempt landed after all (``store.landed``).
    """
    try:
        prepare_connection(fresh=retry)
        with transaction.atomic():
            live = _lock_live_sessions([batch.session_id for batch in batches])
            refused = {b.session_id: REFUSED for b in batches if b.session_id not in live}
            todo = [batch for batch in batches if batch.session_id in live]
            if retry:
                todo = [b for b in todo if not landed(b.session_id, b.frames, b.commands)]
            _insert_frames(todo)
            _insert_commands(todo)
        return refused
    except Exception as exc:
        after_error(exc)
        raise


def _lock_live_sessions(session_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """The sessions among ``session_ids`` that have not ended, locked against an end."""
    if not session_ids:
        return set()
    pk: Any = Session._meta.pk
    column = connection.ops.quote_name(pk.column)
    sql = (
        f"SELECT {column} FROM {connection.ops.quote_name(Session._meta.db_table)}"
        f" WHERE {column} IN ({', '.join(['%s'] * len(session_ids))}) AND ended_at IS NULL"
    )
    if connection.vendor == "postgresql":
        sql += " FOR KEY SHARE"
    with connection.cursor() as cursor:
        cursor.execute(sql, [pk.get_db_prep_value(s, connection) for s in session_ids])
        return {pk.to_python(row[0]) for row in cursor.fetchall()}


def _insert_frames(batches: Sequence[SessionBatch]) -> None:
    fields: list[Any] = [Frame._meta.get_field(name) for name in FRAME_COLUMNS]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    table = connection.ops.quote_name(Frame._meta.db_table)
    session_field = fields[0]
    rows = [
        (
            session_field.get_db_prep_value(batch.session_id, connection),
            frame.seq,
            frame.offset_us,
            frame.direction,
            frame.data,
            frame.digest,
        )
        for batch in batches
        for frame in batch.frames
    ]
    if not rows:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(list(COPY_TYPES))
                for row in rows:
                    copy.write_row(row)
        else:
            values = ", ".join(["%s"] * len(fields))
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({values})", rows)


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
