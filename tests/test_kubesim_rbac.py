"""Bearer-token authentication, impersonation and RBAC decisions."""

from __future__ import annotations

import pytest

from kubesim.config import parse_config
from kubesim.rbac import (
    AccessError,
    Attributes,
    Authenticator,
    Authorizer,
    Forbidden,
    Identity,
    Unauthorized,
)

CONFIG = parse_config(
    {
        "users": [
            {"name": "admin", "token": "admin-token", "groups": ["system:masters"]},
            {"name": "webshell", "token": "webshell-token"},
            {"name": "alice", "token": "alice-token", "groups": ["developers"]},
            {"name": "bob", "token": "bob-token"},
            {"name": "helper", "token": "helper-token"},
        ],
        "rbac": [
            {
                "subjects": [{"kind": "Group", "name": "system:masters"}],
                "verbs": ["*"],
                "resources": ["*"],
                "namespaces": ["*"],
            },
            {
                "subjects": [{"kind": "User", "name": "webshell"}],
                "verbs": ["get", "list", "create", "impersonate"],
                "resources": ["namespaces", "pods", "pods/exec", "users", "groups"],
                "namespaces": ["*"],
            },
            {
                "subjects": [{"kind": "User", "name": "alice"}],
                "verbs": ["get", "list", "create"],
                "resources": ["pods", "pods/exec"],
                "namespaces": ["dev"],
            },
            {
                "subjects": [{"kind": "Group", "name": "developers"}],
                "verbs": ["list"],
                "resources": ["pods"],
                "namespaces": ["staging"],
            },
            {
                "subjects": [{"kind": "User", "name": "helper"}],
                "verbs": ["impersonate"],
                "resources": ["users"],
                "namespaces": ["*"],
                "resourceNames": ["alice"],
            },
        ],
        "namespaces": [{"name": "default"}],
    }
)

authn = Authenticator.from_config(CONFIG)
authz = Authorizer(CONFIG.rules)
EXEC_WEB = Attributes("create", "pods", "default", "web", "exec")


def who(name: str) -> Identity:
    """The identity a user's token authenticates as."""
    return authn.authenticate(f"Bearer {name}-token")


def test_bearer_token_identifies_the_user_and_groups() -> None:
    assert who("alice") == Identity("alice", ("developers", "system:authenticated"))
    assert authn.authenticate("bearer   bob-token ").user == "bob"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer nope", "Basic YWxpY2U6eA=="])
def test_missing_or_unknown_credentials_are_unauthorized(header: str | None) -> None:
    with pytest.raises(Unauthorized) as info:
        authn.authenticate(header)
    assert (info.value.code, info.value.reason, info.value.message) == (
        401,
        "Unauthorized",
        "Unauthorized",
    )


def test_masters_may_do_anything_anywhere() -> None:
    admin = who("admin")
    assert authz.allows(admin, EXEC_WEB)
    assert authz.allows(admin, Attributes("list", "pods"))  # cluster scope
    assert authz.allows(admin, Attributes("impersonate", "users", name="bob"))


def test_namespaced_rules_do_not_reach_other_namespaces_or_the_cluster_scope() -> None:
    alice = who("alice")
    assert authz.allows(alice, Attributes("create", "pods", "dev", "api", "exec"))
    assert not authz.allows(alice, EXEC_WEB)
    assert not authz.allows(alice, Attributes("list", "pods"))
    assert authz.allows(alice, Attributes("list", "pods", "staging"))  # through her group


def test_subresources_need_their_own_grant() -> None:
    viewer_rules = Authorizer(
        parse_config(
            {
                "users": [{"name": "v", "token": "v"}],
                "rbac": [
                    {
                        "subjects": [{"kind": "User", "name": "v"}],
                        "verbs": ["*"],
                        "resources": ["pods"],
                        "namespaces": ["*"],
                    }
                ],
                "namespaces": [],
            }
        ).rules
    )
    viewer = Identity("v", ("system:authenticated",))
    assert viewer_rules.allows(viewer, Attributes("get", "pods", "default", "web"))
    assert not viewer_rules.allows(viewer, EXEC_WEB)


def test_denials_use_the_api_servers_words() -> None:
    with pytest.raises(Forbidden) as info:
        authz.check(who("alice"), EXEC_WEB)
    assert info.value.message == (
        'pods "web" is forbidden: User "alice" cannot create resource "pods/exec" in API group '
        '"" in the namespace "default"'
    )
    assert info.value.details == {"name": "web", "kind": "pods"}
    with pytest.raises(Forbidden) as info:
        authz.check(who("bob"), Attributes("list", "pods"))
    assert info.value.message == (
        'pods is forbidden: User "bob" cannot list resource "pods" in API group "" at the '
        "cluster scope"
    )
    assert info.value.details == {"kind": "pods"}


def test_impersonation_replaces_the_identity() -> None:
    identity = authz.impersonate(who("webshell"), "alice", [])
    assert identity == Identity("alice", ("system:authenticated",), impersonated_by="webshell")
    assert authz.allows(identity, Attributes("create", "pods", "dev", "api", "exec"))
    assert not authz.allows(identity, Attributes("create", "pods", "prod", "db", "exec"))


def test_impersonated_groups_count_for_rbac() -> None:
    identity = authz.impersonate(who("webshell"), "carol", ["developers"])
    assert identity.groups == ("developers", "system:authenticated")
    assert authz.allows(identity, Attributes("list", "pods", "staging"))


def test_impersonation_needs_the_impersonate_verb() -> None:
    with pytest.raises(Forbidden) as info:
        authz.impersonate(who("bob"), "alice", [])
    assert info.value.message == (
        'users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API '
        'group "" at the cluster scope'
    )


def test_impersonating_groups_is_checked_per_group() -> None:
    assert authz.impersonate(who("helper"), "alice", []).user == "alice"
    with pytest.raises(Forbidden, match='users "bob" is forbidden'):
        authz.impersonate(who("helper"), "bob", [])  # resourceNames limits whom
    with pytest.raises(Forbidden) as info:
        authz.impersonate(who("helper"), "alice", ["system:masters"])
    assert info.value.message.startswith(
        'groups "system:masters" is forbidden: User "helper" cannot impersonate resource "groups"'
    )


def test_groups_without_a_user_cannot_be_impersonated() -> None:
    with pytest.raises(AccessError) as info:
        authz.impersonate(who("webshell"), None, ["developers"])
    assert info.value.code == 500
    assert "without impersonating a user" in info.value.message


def test_no_impersonation_headers_keep_the_identity() -> None:
    assert authz.impersonate(who("bob"), None, []) == who("bob")
