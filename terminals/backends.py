"""The authentication backend that answers ``terminals.exec_pod`` from access rules."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils import timezone

from .conf import get_config
from .models import AccessRule
from .permissions import EXEC_PERMISSION, ExecTarget


class TerminalsBackend:
    """Grants ``terminals.exec_pod`` on an :class:`ExecTarget` when an access rule does.

    It authenticates nobody. Rules only grant, and nothing is granted by default; active
    superusers pass before any backend is asked (``User.has_perm``), so other backends
    (django-guardian, LDAP or OIDC groups) compose the usual Django way.
    """

    def authenticate(self, request: Any, **credentials: Any) -> None:
        return None

    def get_user(self, user_id: Any) -> None:
        return None

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        if perm != EXEC_PERMISSION or not isinstance(obj, ExecTarget):
            return False
        if not user_obj.is_active or user_obj.is_anonymous:
            return False
        shells = get_config()["SHELLS"]
        return any(rule.allows(obj, shells) for rule in self._rules(user_obj))

    def _rules(self, user: Any) -> list[AccessRule]:
        # Cached on the user object, as ModelBackend caches permissions: one query per request
        # (the portal asks once per container).
        cached: list[AccessRule] | None = getattr(user, "_terminals_rules", None)
        if cached is None:
            current = Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
            subject = Q(users=user) | Q(groups__in=user.groups.all())
            cached = list(AccessRule.objects.filter(current & subject).distinct())
            user._terminals_rules = cached
        return cached
