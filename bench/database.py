"""The benchmark's own audit database: created fresh, migrated, with one user allowed everywhere.

:func:`prepare_environment` runs before Django is set up (the settings read the environment);
the rest uses the ORM in this process, against the same database the benchmark's Daphne uses.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
PG_NAME = "bench_webshell"
SETTINGS = "bench.settings"
USERNAME = "bench"


def prepare_environment(db: str, workdir: Path) -> dict[str, str]:
    """Create an empty database and point this process's environment at it.

    Returns the variables a Daphne process needs to use the same database.
    """
    env = {"DJANGO_SETTINGS_MODULE": SETTINGS}
    # The in-memory channel layer, as one Daphne without REDIS_URL runs.
    os.environ.pop("REDIS_URL", None)
    if db == "sqlite":
        path = workdir / "bench.sqlite3"
        for leftover in workdir.glob("bench.sqlite3*"):
            leftover.unlink()
        os.environ.pop("DATABASE_URL", None)
        env["WEBSHELL_TEST_DB_NAME"] = str(path)
    elif db == "postgres":
        _recreate_postgres_database()
        env["DATABASE_URL"] = f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_NAME}"
        env["WEBSHELL_TEST_DB_NAME"] = PG_NAME
    else:
        raise ValueError(f"unknown database {db!r}")
    os.environ.update(env)
    return env


def _recreate_postgres_database() -> None:
    import psycopg

    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        # FORCE: a Daphne killed by an earlier run may have left connections behind.
        conn.execute(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_NAME}")


def settle() -> float:
    """Write out what earlier steps left for the database to write later; the seconds it took.

    Called before each latency window, not within it, so that a window measures its own load:
    after a step that streamed hundreds of MiB, PostgreSQL's next checkpoint flushes them to
    disk and, on this kind of machine, held commits (and so keystrokes) for up to a third of a
    second, seconds after that step ended (SQLite: its WAL, checkpointed into the database at
    some later commit). The bench's own connection, not Django's: it may run on any thread.
    """
    started = time.monotonic()
    name = os.environ.get("WEBSHELL_TEST_DB_NAME", "")
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        import psycopg

        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=name, autocommit=True
        ) as conn:
            conn.execute("CHECKPOINT")
    elif name:
        with contextlib.closing(sqlite3.connect(name, timeout=30)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return round(time.monotonic() - started, 3)


def setup_django_and_migrate() -> None:
    """Set Django up on the prepared database and migrate it (quietly)."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


def make_user_cookie() -> str:
    """A user with an access rule to every pod's shells; returns its session cookie value."""
    from tests.fixtures.users import make_user, session_cookie

    return session_cookie(make_user(USERNAME, everywhere=True))


def describe() -> dict[str, Any]:
    """What the database is: vendor, version and the settings that matter for the audit."""
    from django.db import connection

    settings = connection.settings_dict
    info: dict[str, Any] = {
        "vendor": connection.vendor,
        "conn_max_age": settings.get("CONN_MAX_AGE"),
        "options": {k: v for k, v in settings.get("OPTIONS", {}).items() if k != "password"},
    }
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            info["version"] = cursor.fetchone()[0]
            cursor.execute("SHOW synchronous_commit")
            info["synchronous_commit"] = cursor.fetchone()[0]
        else:
            cursor.execute("SELECT sqlite_version()")
            info["version"] = cursor.fetchone()[0]
    return info


@dataclass
class AuditCounts:
    """What the audit store holds for one session."""

    frames: int  # rows in terminals_frame, every direction
    frames_out: int  # output rows
    bytes_out: int  # the bytes they hold
    commits: int | None  # distinct writing transactions (PostgreSQL only)


def audit_counts(session_id: str) -> AuditCounts:
    """Rows and, on PostgreSQL, commits of one session's frames.

    Counted from the frames themselves: the session's counters may be kept up to date only
    when it ends, and every frame is committed before its output is delivered.
    """
    from django.db import connection
    from django.db.models import Count, Sum
    from django.db.models.functions import Length

    from terminals.models import Frame, Session

    session = Session.objects.get(pk=uuid.UUID(session_id))
    frames = Frame.objects.filter(session=session).count()
    output = Frame.objects.filter(session=session, direction=Frame.Direction.STDOUT).aggregate(
        rows=Count("pk"), size=Sum(Length("data"))
    )
    commits = None
    if connection.vendor == "postgresql":
        # Rows inserted by one transaction share its xmin: one group commit, one xmin.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(DISTINCT xmin::text) FROM terminals_frame WHERE session_id = %s",
                [session.pk],
            )
            commits = cursor.fetchone()[0]
    return AuditCounts(frames, output["rows"], output["size"] or 0, commits)


def store_bytes() -> int:
    """Bytes the frames table takes (PostgreSQL: with TOAST and indexes; SQLite: used pages)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_total_relation_size('terminals_frame')")
            return int(cursor.fetchone()[0])
        # SQLite keeps every table in one file: count the pages in use.
        cursor.execute("PRAGMA page_size")
        page_size = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA page_count")
        pages = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA freelist_count")
        free = int(cursor.fetchone()[0])
        return (pages - free) * page_size
