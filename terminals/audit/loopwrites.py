"""PostgreSQL's group commit on the event loop: ``writes.py``'s one statement through psycopg's
asynchronous connection, with no hop to a thread and back.

The hop cost each commit (two per keystroke) the wake-up of a thread, the handing over of
Python's lock, and a wake-up of the loop with the result; under load the loop's thread holds the
lock and the writer's thread waits for it. On the bench's machine (2026-12-07, late) a one-row
``INSERT`` into a temporary table took 0.61 ms (p50) and 1.72 ms (p99) through a thread and 0.32
/ 0.97 ms on the loop, with an idle loop; the README's Performance section has the end-to-end
figures.

Each group writer (one per event loop) has one :class:`LoopWrites`, which keeps the connections
its commits in flight use. They are made as Django makes the default database's (its
``DATABASES`` settings, ``assume_role`` included) and configured as the writer's threads'
(``store.configuration``: the application name, ``statement_timeout`` at
``AUDIT_COMMIT_TIMEOUT``). A connection whose commit failed or was cancelled (the writer gave
up on it, or the loop is closing) is never used again: the next commit connects anew. A commit
cancelled mid-statement is cancelled on the server too (psycopg sends the cancel request and
waits for the answer; the writer has failed the group's sessions already, and does not wait).

Only the first attempt runs here. The writer retries a group lost with its connection on a
thread (``writes.write_group(retry=True)``), which first looks for the batches that landed.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Sequence
from typing import Any

from django.db import connection

from .store import commit_timeout_ms, configuration
from .writes import REFUSED, SessionBatch, postgresql_write

# Django's own arguments to psycopg.connect that are not the database's: its cursor class and
# type adapters (the audit statement binds uuids, integers, text, bytes and booleans itself).
_DJANGO_ONLY = ("context", "cursor_factory")


class LoopWrites:
    """The PostgreSQL audit connections of one event loop, and the group write through them."""

    def __init__(self) -> None:
        self._idle: list[Any] = []  # psycopg.AsyncConnection, ready for the next commit
        _every.add(self)

    async def write(self, batches: Sequence[SessionBatch]) -> dict[uuid.UUID, str]:
        """Commit the batches (at most one per session) at once; return the sessions whose
        batch was refused (ended or gone), with why. Raises the driver's errors."""
        statement, parameters = postgresql_write([b.session_id for b in batches], batches)
        conn = self._idle.pop() if self._idle else await connect()
        live = await _execute(conn, statement, parameters)
        self._idle.append(conn)
        return {b.session_id: REFUSED for b in batches if b.session_id not in live}

    def close(self) -> None:
        """Close the idle connections (a commit still running keeps its own until it ends).
        Synchronous, so it serves a loop that has already closed, as a test's has."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.pgconn.finish()  # what AsyncConnection.close() does, without a loop


_every: weakref.WeakSet[LoopWrites] = weakref.WeakSet()


def close_all() -> None:
    """Close the idle connections of every :class:`LoopWrites` of the process: for tests, whose
    loops close while the database stays (a server keeps its writer for as long as it lives)."""
    for loop_writes in list(_every):
        loop_writes.close()


async def _execute(conn: Any, statement: str, parameters: list[Any]) -> set[uuid.UUID]:
    """The statement on ``conn``; the sessions it found live. ``conn`` is closed if it fails
    or is cancelled."""
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement, parameters, binary=True)
            return {row[0] for row in await cursor.fetchall()}
    except BaseException:
        await conn.close()
        raise


async def connect() -> Any:
    """A new audit connection to the default database, in autocommit (the statement is atomic
    on its own), configured as ``store.prepare_connection`` configures the threads'."""
    import psycopg

    params = {
        key: value
        for key, value in connection.get_connection_params().items()
        if key not in _DJANGO_ONLY
    }
    conn = await psycopg.AsyncConnection.connect(**params, autocommit=True)
    try:
        await conn.execute(*configuration(commit_timeout_ms()))
        role = connection.settings_dict["OPTIONS"].get("assume_role")
        if role:  # as Django's connections do (SET ROLE)
            await conn.execute("SELECT set_config('role', %s, false)", [role])
    except BaseException:
        await conn.close()
        raise
    return conn
