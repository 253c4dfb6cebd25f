"""Session and DeniedAttempt records (synchronous ORM code; consumers call it in a thread).

A session is numbered in the audit ledger in the transaction that creates it, and sealed in
the transaction that ends it (``terminals.audit.ledger``): every end goes through
:func:`close_session`, the reaper's included.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from .audit import ledger, store
from .conf import get_config
from .denials import DenialThrottle, Tally
from .models import DeniedAttempt, Server, Session
from .permissions import ExecTarget

logger = logging.getLogger(__name__)


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
        session = Session.objects.create(
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
        ledger.enroll(session)
        return session


def mark_running(
    session_id: Any, container: str, command: list[str], resume_digest: str = ""
) -> None:
    """Record the container and the argv that really run, after shell fallback, and the
    digest of the first resume token."""
    # Never after the end: the seal covers them.
    Session.objects.filter(pk=session_id, ended_at__isnull=True).update(
        container=container, command=command, resume_digest=resume_digest
    )


def mark_detached(session_id: Any, detached: bool) -> None:
    """Record that the session has no browser (since now), or has one again."""
    Session.objects.filter(pk=session_id, ended_at__isnull=True).update(
        detached_at=timezone.now() if detached else None
    )


def close_session(
    session_id: Any,
    reason: str,
    exit_code: int | None = None,
    message: str = "",
    ended_by: tuple[int | None, str] | None = None,
    *,
    at: dt.datetime | None = None,
    only: Q | None = None,
) -> bool:
    """Record the end of a session once, and seal it; later calls change nothing.

    ``at`` is the moment of the end (now by default); with ``only``, the session is ended only
    if it still matches (the reaper checks that its server is still lost). Returns whether this
    call ended it.
    """
    by_id, by_name = ended_by or (None, "")
    with transaction.atomic():
        # The row is held until the seal is written: a late commit of the recorder (which
        # refuses an ended session) or a second end waits for it.
        rows = Session.objects.select_for_update(of=("self",)).filter(
            pk=session_id, ended_at__isnull=True
        )
        if only is not None:
            rows = rows.filter(only)
        if not list(rows.values_list("pk", flat=True)):
            return False
        Session.objects.filter(pk=session_id).update(
            ended_at=at or timezone.now(),
            end_reason=reason,
            exit_code=exit_code,
            end_message=message[:2000],
            ended_by_id=by_id,
            ended_by_username=by_name,
        )
        try:
            with transaction.atomic():
                # Counted from the frames, once: the writer keeps no counters per commit.
                Session.objects.filter(pk=session_id).update(**store.totals(session_id))
                ledger.seal_session(session_id)
        except DatabaseError as exc:
            # The end is recorded all the same (the store is failing, which may be why the
            # session ends); verification will report the seal missing.
            logger.error(
                "Session %s ended, but it could not be counted and sealed: %r", session_id, exc
            )
    return True


def record_denial(
    user: Any,
    target: ExecTarget,
    code: str,
    reason: str,
    client_address: str | None = None,
    user_agent: str = "",
) -> None:
    """Write down a refused attempt, or count it when its client floods (``terminals.denials``).

    Names are cut to fit, since they may be an attacker's. A row also carries the refusals of
    its client and kind counted since the last one, and any counts now due are written too.
    """
    authenticated = user is not None and user.is_authenticated
    fields = {
        "user_id": user.pk if authenticated else None,
        "username": user.get_username() if authenticated else "",
        "cluster": target.cluster[:253],
        "namespace": target.namespace[:253],
        "pod": target.pod[:253],
        "container": target.container[:253],
        "command": target.command[:255],
        "client_address": client_address,
        "user_agent": user_agent[:512],
        "code": code,
        "reason": reason,
    }
    config = get_config()
    burst, interval = config["DENIAL_BURST"], config["DENIAL_INTERVAL"]
    key = _denial_key(fields)
    now = timezone.now()
    tally = _denials.admit(key, burst, interval, now, fields)
    if tally is not None:
        try:
            _write_denial(fields, tally.note())
        except BaseException:
            tally.count_one(now, fields)  # this refusal too: counted, if not written
            _denials.give_back(key, tally)
            raise
    _write_tallies(_denials.due(burst, interval))


def flush_denials() -> None:
    """Write every count of refusals not yet written (at a heartbeat, before exiting)."""
    config = get_config()
    _write_tallies(_denials.due(config["DENIAL_BURST"], config["DENIAL_INTERVAL"], True))


_denials = DenialThrottle()


def _write_tallies(tallies: list[Tally]) -> None:
    for index, tally in enumerate(tallies):
        try:
            _write_denial(tally.fields, tally.note(late=True))
        except BaseException:
            for unwritten in tallies[index:]:
                _denials.give_back(_denial_key(unwritten.fields), unwritten)
            raise


def _denial_key(fields: dict[str, Any]) -> tuple[str, str]:
    """Anonymous refusals are their client address's; a user's are theirs from any address."""
    return (fields["username"] or fields["client_address"] or "", fields["code"])


def _write_denial(fields: dict[str, Any], note: str) -> None:
    # The note is kept whole: the reason is cut to make room for it.
    reason = fields["reason"][: 2000 - len(note)] + note
    DeniedAttempt.objects.create(**{**fields, "reason": reason})
