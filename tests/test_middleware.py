"""The auth stack of the terminal WebSockets: a database outage marks the scope, not a 500."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.backends import ModelBackend
from django.db import connections

from terminals.middleware import STORE_UNAVAILABLE, TerminalsAuthMiddlewareStack
from tests.fixtures.users import make_user, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.asynccontextmanager
async def database_down() -> AsyncIterator[None]:
    """The database refuses connections; the worker thread's open one is dropped first."""

    def refuse(self: Any, conn_params: Any) -> Any:
        raise self.Database.OperationalError("connection refused")

    # Channels' database_sync_to_async runs in asgiref's worker thread: its connection goes.
    await sync_to_async(connections.close_all)()
    with mock.patch.object(type(connections["default"]), "get_new_connection", refuse):
        yield


class Inner:
    """A stand-in for the URL router: keeps the scope it was called with."""

    scope: dict[str, Any]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope


async def connect(cookie: str | None) -> dict[str, Any]:
    """The scope the app behind the stack sees for a WebSocket with this session cookie."""
    headers = [(b"cookie", f"sessionid={cookie}".encode())] if cookie else []
    inner = Inner()
    scope = {"type": "websocket", "path": "/ws/terminals/c/n/p/", "headers": headers}
    await TerminalsAuthMiddlewareStack(inner)(scope, None, None)
    return inner.scope


@pytest.fixture
async def cookie() -> str:
    return await sync_to_async(lambda: session_cookie(make_user("ann")))()


async def test_a_logged_in_user_is_resolved(cookie):
    scope = await connect(cookie)
    assert scope["user"].username == "ann"
    assert STORE_UNAVAILABLE not in scope


async def test_without_a_cookie_the_user_is_anonymous_and_the_store_not_needed():
    async with database_down():
        scope = await connect(None)
    assert not scope["user"].is_authenticated
    assert STORE_UNAVAILABLE not in scope


async def test_a_database_refusing_connections_marks_the_scope(cookie, caplog):
    async with database_down():
        with caplog.at_level(logging.ERROR, logger="terminals.middleware"):
            scope = await connect(cookie)
    assert scope[STORE_UNAVAILABLE] is True
    assert not scope["user"].is_authenticated
    assert "connection refused" in caplog.text
    assert cookie not in caplog.text  # a session key is a credential


async def test_a_failing_user_lookup_marks_the_scope(cookie):
    from django.db import OperationalError

    with mock.patch.object(ModelBackend, "get_user", side_effect=OperationalError("gone")):
        scope = await connect(cookie)
    assert scope[STORE_UNAVAILABLE] is True
    assert not scope["user"].is_authenticated


async def test_other_errors_are_not_taken_for_an_outage(cookie):
    with (
        mock.patch.object(ModelBackend, "get_user", side_effect=ValueError("a bug")),
        pytest.raises(ValueError, match="a bug"),
    ):
        await connect(cookie)
