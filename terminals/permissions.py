"""What a terminal opens, as the object of Django's ``terminals.exec_pod`` permission."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .impersonation import may_be_impersonated

#: Ask ``user.has_perm(EXEC_PERMISSION, ExecTarget(...))``; any auth backend may answer.
EXEC_PERMISSION = "terminals.exec_pod"

# Kubernetes names: namespaces and containers are DNS-1123 labels, pods DNS-1123 subdomains.
# Always used with fullmatch(): with match() and "$", a trailing newline ("main\n") passes.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# A command is one argv[0]: a path or a name, no spaces or shell syntax.
_COMMAND = re.compile(r"[A-Za-z0-9_./+-]{1,255}")


@dataclass(frozen=True)
class ExecTarget:
    """Where a terminal runs. ``container`` is "" when the pod's default container is meant."""

    cluster: str
    namespace: str
    pod: str
    container: str = ""
    command: str = ""

    def __str__(self) -> str:
        where = f"{self.cluster}/{self.namespace}/{self.pod}"
        return f"{where}/{self.container}" if self.container else where

    def invalid_reason(self) -> str | None:
        """Why the names cannot be Kubernetes names, or None if they can."""
        if not is_label(self.namespace):
            return f"{self.namespace!r} is not a valid namespace name."
        if not is_subdomain(self.pod):
            return f"{self.pod!r} is not a valid pod name."
        if self.container and not is_label(self.container):
            return f"{self.container!r} is not a valid container name."
        if self.command and not _COMMAND.fullmatch(self.command):
            return f"{self.command!r} is not a valid command."
        return None


def may_exec(user: Any, target: ExecTarget) -> bool:
    """Ask every auth backend whether ``user`` may open a terminal on ``target``.

    Never, with ``IMPERSONATE`` on, for a user whose name Kubernetes reserves (``system:…``):
    that name cannot be impersonated, and the web shell's own identity is not the person's.
    """
    if not may_be_impersonated(user):
        return False
    # django-stubs types the object as a Model; Django itself accepts any object.
    return bool(user.has_perm(EXEC_PERMISSION, target))


def is_label(name: str) -> bool:
    """True for a DNS-1123 label (namespaces, containers)."""
    return bool(_LABEL.fullmatch(name))


def is_subdomain(name: str) -> bool:
    """True for a DNS-1123 subdomain (pods)."""
    return len(name) <= 253 and bool(_SUBDOMAIN.fullmatch(name))
