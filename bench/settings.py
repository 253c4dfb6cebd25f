"""Settings of the benchmark's Daphne: the test settings with production's database options.

``tests.settings`` keeps Django's default ``CONN_MAX_AGE = 0``, so the audit recorder's
threads would open a new database connection for every group commit; ``webshell/settings.py``
keeps connections for 60 s and runs SQLite with ``synchronous=FULL``. The benchmark measures
what production runs, so it takes those options from there.
"""

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

DATABASES["default"]["CONN_MAX_AGE"] = 60
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"]["init_command"] = (
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
    )
