"""Authentication (bearer tokens), impersonation and RBAC decisions, in Kubernetes' words."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

from .config import ClusterConfig, Rule

AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class Identity:
    """Who a request acts as, after impersonation."""

    user: str
    groups: tuple[str, ...] = ()
    impersonated_by: str | None = None


@dataclass(frozen=True)
class Attributes:
    """What a request wants to do (an ``authorizer.Attributes`` subset)."""

    verb: str
    resource: str
    namespace: str | None = None  # None: cluster scope
    name: str | None = None
    subresource: str | None = None

    @property
    def full_resource(self) -> str:
        """``pods/exec`` for a subresource, else the resource."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


class AccessError(Exception):
    """A refused request; carries what the Status body needs."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, details: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Unauthorized(AccessError):
    """Missing or unknown credentials (401)."""

    code = 401
    reason = "Unauthorized"

    def __init__(self) -> None:
        super().__init__("Unauthorized")


class Forbidden(AccessError):
    """RBAC refused the request (403)."""

    code = 403
    reason = "Forbidden"


@dataclass
class Authenticator:
    """Maps bearer tokens to configured users."""

    tokens: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: ClusterConfig) -> Authenticator:
        """Build from the configured users."""
        return cls({u.token: (u.name, u.groups) for u in config.users})

    def authenticate(self, authorization: str | None) -> Identity:
        """Identify the caller from an ``Authorization`` header, or raise Unauthorized."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized()
        for known, (name, groups) in self.tokens.items():
            # Constant-time comparison: tokens are secrets even in a sandbox.
            if hmac.compare_digest(known.encode(), token.encode()):
                return Identity(name, _with_authenticated(groups))
        raise Unauthorized()


@dataclass
class Authorizer:
    """Evaluates the grant-only rules of the configuration."""

    rules: Sequence[Rule]

    def allows(self, identity: Identity, attrs: Attributes) -> bool:
        """Whether any rule grants ``attrs`` to the identity."""
        return any(_rule_matches(rule, identity, attrs) for rule in self.rules)

    def check(self, identity: Identity, attrs: Attributes) -> None:
        """Raise Forbidden, with the API server's message, unless allowed."""
        if not self.allows(identity, attrs):
            raise forbidden(identity, attrs)

    def impersonate(self, identity: Identity, user: str | None, groups: Sequence[str]) -> Identity:
        """Apply ``Impersonate-User``/``Impersonate-Group``; each needs verb ``impersonate``."""
        if user is None and not groups:
            return identity
        if user is None:
            # The API server refuses group impersonation without a user, as an internal error.
            raise AccessError(
                "Internal error occurred: requested group impersonation "
                f"({', '.join(groups)}) without impersonating a user"
            )
        self.check(identity, Attributes("impersonate", "users", name=user))
        for group in groups:
            self.check(identity, Attributes("impersonate", "groups", name=group))
        return Identity(user, _with_authenticated(tuple(groups)), impersonated_by=identity.user)


def forbidden(identity: Identity, attrs: Attributes) -> Forbidden:
    """The standard RBAC denial (``forbiddenMessage`` + ``NewForbidden``)."""
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    reason = (
        f'User "{identity.user}" cannot {attrs.verb} resource "{attrs.full_resource}" '
        f'in API group "" {where}'
    )
    if attrs.name:
        return Forbidden(
            f'{attrs.resource} "{attrs.name}" is forbidden: {reason}',
            {"name": attrs.name, "kind": attrs.resource},
        )
    return Forbidden(f"{attrs.resource} is forbidden: {reason}", {"kind": attrs.resource})


def _with_authenticated(groups: tuple[str, ...]) -> tuple[str, ...]:
    return groups if AUTHENTICATED in groups else (*groups, AUTHENTICATED)


def _rule_matches(rule: Rule, identity: Identity, attrs: Attributes) -> bool:
    return (
        any(
            (s.kind == "User" and s.name == identity.user)
            or (s.kind == "Group" and s.name in identity.groups)
            for s in rule.subjects
        )
        and _matches(rule.verbs, attrs.verb)
        and _matches(rule.resources, attrs.full_resource)
        # "*" covers every namespace and the cluster scope; a list only those namespaces.
        and ("*" in rule.namespaces or attrs.namespace in rule.namespaces)
        and (not rule.resource_names or attrs.name in rule.resource_names)
    )


def _matches(allowed: Sequence[str], value: str) -> bool:
    return "*" in allowed or value in allowed
