"""Login lockout: django-axes' database handler with a second limit, per username.

axes counts failures per (username, client address) and locks that pair out at
``AXES_FAILURE_LIMIT``. An attacker with many addresses (a botnet, or a forged header before
``terminals.clients`` resolved addresses) never reaches it for any one pair, so failures for
a username are also counted over every address, and at ``WEBSHELL_LOGIN_USERNAME_FAILURE_LIMIT``
the username is locked for everyone until the cool-off ends (or ``manage.py axes_reset_username``).

axes' own ``AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "username"]`` would compare
both counts with the one ``AXES_FAILURE_LIMIT``, so five failures anywhere would lock a user
out: anyone could lock anyone out with five guesses. Hence a second, higher limit here.
"""

from __future__ import annotations

from typing import Any

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest


def username_failure_limit() -> int:
    """Failures for one username, from any address, that lock it; 0 turns the limit off."""
    return int(getattr(settings, "WEBSHELL_LOGIN_USERNAME_FAILURE_LIMIT", 0))


class LoginLockout(AxesDatabaseHandler):
    """axes' database handler, locking a username out past its own limit as well."""

    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        """The pair's failures, or axes' limit once the username has reached its own."""
        failures: int = super().get_failures(request, credentials)
        limit = username_failure_limit()
        username = get_client_username(request, credentials)
        if limit and username is not None and self.username_failures(request, username) >= limit:
            # axes compares one count with one limit, both for locking a failed request out and
            # for refusing the next attempt: report the username's lock as the pair limit.
            return max(failures, int(get_failure_limit(request, credentials)))
        return failures

    def username_failures(self, request: HttpRequest, username: str) -> int:
        """Failures for ``username`` from every address within the cool-off."""
        attempts = AccessAttempt.objects.filter(username=username)
        if settings.AXES_COOLOFF_TIME is not None:
            attempts = attempts.filter(attempt_time__gte=get_cool_off_threshold(request))
        total = attempts.aggregate(total=Sum("failures_since_start"))["total"]
        return int(total or 0)
