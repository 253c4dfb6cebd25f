"""Fixtures shared by the suite: kubesim (tests/fixtures/kubesim.py), Daphne, logged-in users."""

import os

# Playwright's sync API runs an event loop in the test thread; Django's ORM would refuse it.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytest_plugins = [
    "tests.fixtures.kubesim",
    "tests.fixtures.daphne",
    "tests.fixtures.browser",
]
