"""Kubernetes impersonation headers for a Django user (``TERMINALS["IMPERSONATE"]``).

With impersonation the API server applies its own RBAC to the person, not only to the web
shell's identity, and its audit log names the person.

Kubernetes reserves the ``system:`` prefix for its own users and groups (``system:masters`` is
bound to cluster-admin), and whoever may edit Django groups is not meant to hand those out. So
a group is sent as ``IMPERSONATE_GROUP_PREFIX`` + its Django name (the system checks require a
prefix, ``terminals.E013``), a sent group name that still starts with ``system:`` is left out,
and a user whose own name starts with ``system:`` is not impersonated at all: such a user may
not open terminals (:func:`may_be_impersonated`, asked by ``terminals.permissions.may_exec``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied

from .conf import get_config

logger = logging.getLogger(__name__)

#: Kubernetes' prefix for the users and groups of its own components and superusers.
RESERVED_PREFIX = "system:"


class ReservedName(PermissionDenied):
    """The user's name is one that Kubernetes reserves, so it is never impersonated."""


def is_reserved(name: str) -> bool:
    """True for a user or group name that Kubernetes reserves for itself."""
    return name.startswith(RESERVED_PREFIX)


def may_be_impersonated(user: Any) -> bool:
    """False when impersonation is on and the user's name is reserved by Kubernetes."""
    if not get_config()["IMPERSONATE"] or user is None or not user.is_authenticated:
        return True
    return not is_reserved(user.get_username())


def impersonation_headers(user: Any) -> list[tuple[str, str]]:
    """``Impersonate-User`` and one ``Impersonate-Group`` per Django group, or nothing.

    Raises :class:`ReservedName` for a user named ``system:…``: sending no headers would act
    as the web shell's own identity instead, which is more than the person may do.
    """
    config = get_config()
    if not config["IMPERSONATE"] or user is None or not user.is_authenticated:
        return []
    username = user.get_username()
    if is_reserved(username):
        raise ReservedName(f"The user name {username!r} is reserved by Kubernetes.")
    headers = [("Impersonate-User", username)]
    prefix = config["IMPERSONATE_GROUP_PREFIX"]
    for name in sorted(user.groups.values_list("name", flat=True)):
        group = f"{prefix}{name}"
        if is_reserved(group):
            # Not secret, and an administrator should hear of it: a group that would make
            # its members cluster components or superusers in the cluster.
            logger.warning("Not impersonating the reserved group %r for %s", group, username)
            continue
        headers.append(("Impersonate-Group", group))
    return headers
