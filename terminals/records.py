"""Session and DeniedAttempt records (synchronous ORM code; consumers call it in a thread)."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from .models import DeniedAttempt, Server, Session
from .permissions import ExecTarget


def open_session(
    user: Any,
    target: ExecTarget,
    client_address: str | None,
    user_agent: str,
    max_sessions: int,
    max_duration: int | None = None,
    *,
    server_id: uuid.UUID | None = None,
) -> Session | None:
    """Create the Session row on ``server_id``, or None if the user has ``max_sessions`` live.

    Live means ``Session.objects.live()``: a session of a lost server does not count, even
    before the reaper ends it. ``max_duration`` is no longer used (``live()`` reads it for
    records without a server); it stays so that older callers keep working.
    """
    with transaction.atomic():
        # Serialises concurrent connects of one user, so the limit holds under a race.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        if max_sessions and Session.objects.live().filter(user=user).count() >= max_sessions:
            return None
        if server_id is not None and not Server.objects.filter(pk=server_id).exists():
            # The row is gone (deleted by hand, or a test's flush): the next heartbeat
            # registers again and adopts this session.
            server_id = None
        return Session.objects.create(
            user=user,
            username=user.get_username(),
            cluster=target.cluster,
            namespace=target.namespace,
            pod=target.pod,
            container=target.container,
            command=[target.command] if target.command else [],
            client_address=client_address,
            user_agent=user_agent[:512],
            server_id=server_id,
        )


def mark_running(session_id: Any, container: str, command: list[str]) -> None:
    """Record the container and the argv that really run, after shell fallback."""
    Session.objects.filter(pk=session_id).update(container=container, command=command)


def close_session(
    session_id: Any,
    reason: str,
    exit_code: int | None = None,
    message: str = "",
    ended_by: tuple[int | None, str] | None = None,
) -> None:
    """Record the end of a session once; later calls change nothing."""
    by_id, by_name = ended_by or (None, "")
    Session.objects.filter(pk=session_id, ended_at__isnull=True).update(
        ended_at=timezone.now(),
        end_reason=reason,
        exit_code=exit_code,
        end_message=message[:2000],
        ended_by_id=by_id,
        ended_by_username=by_name,
    )


def record_denial(
    user: Any,
    target: ExecTarget,
    code: str,
    reason: str,
    client_address: str | None = None,
    user_agent: str = "",
) -> None:
    """Write down a refused attempt; names are cut to fit, since they may be an attacker's."""
    authenticated = user is not None and user.is_authenticated
    DeniedAttempt.objects.create(
        user=user if authenticated else None,
        username=user.get_username() if authenticated else "",
        cluster=target.cluster[:253],
        namespace=target.namespace[:253],
        pod=target.pod[:253],
        container=target.container[:253],
        command=target.command[:255],
        client_address=client_address,
        user_agent=user_agent[:512],
        code=code,
        reason=reason[:2000],
    )
