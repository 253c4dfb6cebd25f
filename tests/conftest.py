"""Fixtures shared by the suite: kubesim (tests/fixtures/kubesim.py), Daphne, logged-in users."""

import pytest

pytest_plugins = [
    "tests.fixtures.kubesim",
    "tests.fixtures.daphne",
    "tests.fixtures.browser",
    "tests.fixtures.redis_server",
    "tests.fixtures.oidc_provider",
]


@pytest.fixture(scope="session", autouse=True)
def _close_worker_thread_connections(django_db_setup):
    """Async tests reach the database through asgiref's shared worker thread, whose connection
    would otherwise stay open and keep the test database from being dropped."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result()


@pytest.fixture(autouse=True)
def _close_audit_loop_connections():
    """On PostgreSQL a group writer keeps connections of its own for commits on its event
    loop, which would keep the test database open past the run once the loop has closed."""
    yield
    from terminals.audit import loopwrites

    loopwrites.close_all()


@pytest.fixture(autouse=True)
def _default_language():
    """Every test starts in the default language: a test client's request leaves the language
    LocaleMiddleware chose active in this thread, and the socket's messages (translated where
    they are made) would follow it into the next test."""
    from django.utils import translation

    translation.deactivate()
    yield
    translation.deactivate()
