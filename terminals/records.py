"""Opening and closing Session records (synchronous ORM code, called through a thread)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from .models import Session
from .permissions import ExecTarget


def open_session(
    user: Any,
    target: ExecTarget,
    client_address: str | None,
    user_agent: str,
    max_sessions: int,
    max_duration: int,
) -> Session | None:
    """Create the Session row, or return None if the user has ``max_sessions`` live ones."""
    with transaction.atomic():
        # Serialises concurrent connects of one user, so the limit holds under a race.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        if max_sessions:
            # A session older than the maximum duration cannot be live (its process died).
            since = timezone.now() - dt.timedelta(seconds=max_duration)
            live = Session.objects.filter(user=user, ended_at__isnull=True, started_at__gte=since)
            if live.count() >= max_sessions:
                return None
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
        )


def mark_running(session_id: Any, container: str, command: list[str]) -> None:
    """Record the container and the argv that really run, after shell fallback."""
    Session.objects.filter(pk=session_id).update(container=container, command=command)


def close_session(
    session_id: Any, reason: str, exit_code: int | None = None, message: str = ""
) -> None:
    """Record the end of a session once; later calls change nothing."""
    Session.objects.filter(pk=session_id, ended_at__isnull=True).update(
        ended_at=timezone.now(), end_reason=reason, exit_code=exit_code, end_message=message[:2000]
    )
