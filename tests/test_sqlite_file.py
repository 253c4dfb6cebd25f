"""The project's SQLite database is its owner's only: it holds password hashes and the audit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def manage(database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``manage.py`` with the project's own settings on ``database``, as `make run` does."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webshell.settings",
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{database}",
    }
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def modes(database: Path) -> dict[str, int]:
    """The permission bits of the database and of the files SQLite keeps beside it."""
    return {
        path.name: path.stat().st_mode & 0o777
        for path in database.parent.iterdir()
        if path.name.startswith(database.name)
    }


def test_migrate_creates_the_database_for_its_owner_only(tmp_path):
    database = tmp_path / "db.sqlite3"
    previous = os.umask(0o022)  # the usual umask, which SQLite would follow: 0644
    try:
        manage(database, "migrate", "--no-input")
        manage(database, "demo_admin")
    finally:
        os.umask(previous)
    assert database.stat().st_size > 0
    assert set(modes(database).values()) == {0o600}


def test_a_database_made_before_is_made_private_at_the_next_start(tmp_path):
    database = tmp_path / "db.sqlite3"
    manage(database, "migrate", "--no-input")
    database.chmod(0o644)
    Path(f"{database}-wal").write_bytes(b"")
    Path(f"{database}-wal").chmod(0o644)
    manage(database, "check")
    assert set(modes(database).values()) == {0o600}
