"""The authentication backend that answers ``terminals.exec_pod`` object permissions."""

from __future__ import annotations

from typing import Any

from .conf import get_config
from .permissions import EXEC_PERMISSION, ExecTarget


class TerminalsBackend:
    """Grants ``terminals.exec_pod`` on an :class:`ExecTarget`; authenticates nobody.

    Until access rules exist, active staff may open the configured shells anywhere.
    Superusers pass before any backend is asked (``User.has_perm``).
    """

    def authenticate(self, request: Any, **credentials: Any) -> None:
        return None

    def get_user(self, user_id: Any) -> None:
        return None

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        if perm != EXEC_PERMISSION or not isinstance(obj, ExecTarget):
            return False
        if not (user_obj.is_active and user_obj.is_staff):
            return False
        return allowed_command(obj.command)


def allowed_command(command: str) -> bool:
    """The default command (a configured shell) or one of the shells, by path or name."""
    if not command:
        return True
    shells = get_config()["SHELLS"]
    return command in shells or command in {shell.rsplit("/", 1)[-1] for shell in shells}
