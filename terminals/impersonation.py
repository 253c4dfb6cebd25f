"""Kubernetes impersonation headers for a Django user (``TERMINALS["IMPERSONATE"]``).

With impersonation the API server applies its own RBAC to the person, not only to the web
shell's identity, and its audit log names the person.
"""

from __future__ import annotations

from typing import Any

from .conf import get_config


def impersonation_headers(user: Any) -> list[tuple[str, str]]:
    """``Impersonate-User`` and one ``Impersonate-Group`` per Django group, or nothing."""
    config = get_config()
    if not config["IMPERSONATE"] or user is None or not user.is_authenticated:
        return []
    headers = [("Impersonate-User", user.get_username())]
    prefix = config["IMPERSONATE_GROUP_PREFIX"]
    for name in sorted(user.groups.values_list("name", flat=True)):
        headers.append(("Impersonate-Group", f"{prefix}{name}"))
    return headers
