"""Channels' auth stack, made to survive a database outage.

Channels' ``AuthMiddlewareStack`` resolves the user before the consumer runs: ``get_user`` loads
the Django session (lazily: the first ``session[...]`` reads the session table) and the user
row. With the database down that raises, and the handshake ends in an HTTP 500 that the page
cannot explain. :func:`TerminalsAuthMiddlewareStack` catches the ``DatabaseError`` there, lets
the connection through as anonymous and marks the scope with :data:`STORE_UNAVAILABLE`, so the
consumer can refuse with the documented ``audit_unavailable`` error and close code 4503.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.auth import AuthMiddleware, get_user
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.db import DatabaseError

logger = logging.getLogger(__name__)

#: Scope key set to True when the user could not be looked up because the database failed.
STORE_UNAVAILABLE = "terminals.store_unavailable"


# channels ships no types, so its AuthMiddleware is Any to mypy.
class StoreAwareAuthMiddleware(AuthMiddleware):  # type: ignore[misc]
    """Channels' ``AuthMiddleware``; a database failure yields an anonymous, marked scope."""

    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        """Resolve ``scope["user"]``; on a database error, anonymous and ``STORE_UNAVAILABLE``."""
        try:
            user = await get_user(scope)
        except DatabaseError as exc:
            logger.error("Cannot look up the user of a WebSocket, the database failed: %r", exc)
            # Imported here: models may not be imported before Django is set up.
            from django.contrib.auth.models import AnonymousUser

            user = AnonymousUser()
            scope[STORE_UNAVAILABLE] = True
        scope["user"]._wrapped = user


# CamelCase, as Channels' AuthMiddlewareStack that it replaces.
def TerminalsAuthMiddlewareStack(inner: Any) -> Any:
    """Cookies, session and user for ``inner``, as ``AuthMiddlewareStack``, outage-proof."""
    return CookieMiddleware(SessionMiddleware(StoreAwareAuthMiddleware(inner)))
