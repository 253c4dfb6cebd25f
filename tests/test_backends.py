"""TerminalsBackend: access rules answer user.has_perm("terminals.exec_pod", ExecTarget)."""

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.utils import timezone

from terminals.permissions import EXEC_PERMISSION, ExecTarget
from tests.fixtures.users import grant, make_user

pytestmark = pytest.mark.django_db

WEB = ExecTarget("prod", "shop", "web-1", "app")


def may(user, target=WEB):
    # A fresh instance each time: the backend caches rules on the user object.
    if user.pk:
        user = get_user_model().objects.get(pk=user.pk)
    return user.has_perm(EXEC_PERMISSION, target)


def test_nothing_is_granted_by_default():
    assert not may(make_user("ann"))


def test_active_superusers_pass_and_inactive_ones_do_not():
    root = get_user_model().objects.create_superuser("root", password="pw")
    assert may(root)
    root.is_active = False
    root.save()
    assert not may(root)


def test_anonymous_users_never_pass():
    assert not AnonymousUser().has_perm(EXEC_PERMISSION, WEB)


def test_a_rule_grants_its_users_what_its_patterns_match():
    ann = make_user("ann")
    grant(ann, clusters="prod", namespaces="shop, staging", pods="web-*", containers="app")
    assert may(ann)
    assert may(ann, ExecTarget("prod", "staging", "web-9", "app"))
    assert not may(ann, ExecTarget("dev", "shop", "web-1", "app"))
    assert not may(ann, ExecTarget("prod", "other", "web-1", "app"))
    assert not may(ann, ExecTarget("prod", "shop", "api-1", "app"))
    assert not may(ann, ExecTarget("prod", "shop", "web-1", "sidecar"))


def test_the_default_container_needs_a_rule_for_every_container():
    ann = make_user("ann")
    grant(ann, containers="app")
    assert not may(ann, ExecTarget("prod", "shop", "web-1", ""))
    bob = make_user("bob")
    grant(bob, containers="*")
    assert may(bob, ExecTarget("prod", "shop", "web-1", ""))


def test_groups_grant_to_their_members():
    ops = Group.objects.create(name="ops")
    ann, bob = make_user("ann"), make_user("bob")
    ann.groups.add(ops)
    grant(ops, namespaces="shop")
    assert may(ann)
    assert not may(bob)


def test_rules_expire():
    ann = make_user("ann")
    rule = grant(ann, expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert not may(ann)
    rule.expires_at = timezone.now() + dt.timedelta(hours=1)
    rule.save()
    assert may(ann)


def test_inactive_users_are_refused_even_with_a_rule():
    ann = make_user("ann", is_active=False)
    grant(ann)
    assert not may(ann)


def test_commands_other_than_the_shells_need_the_rule_to_name_them():
    ann = make_user("ann")
    grant(ann, commands="/usr/bin/psql\n/usr/bin/redis-cli")
    target = lambda command: ExecTarget("prod", "shop", "web-1", "app", command)  # noqa: E731
    assert may(ann, target(""))
    assert may(ann, target("/bin/sh"))
    assert may(ann, target("bash"))
    assert may(ann, target("/usr/bin/psql"))
    assert may(ann, target("psql"))
    assert not may(ann, target("/usr/bin/vi"))


def test_rules_are_read_once_per_user_object(django_assert_num_queries):
    ann = make_user("ann")
    grant(ann, pods="web-*")
    ann = get_user_model().objects.get(pk=ann.pk)
    with django_assert_num_queries(1):
        for pod in ("web-1", "web-2", "api-1", "web-3"):
            ann.has_perm(EXEC_PERMISSION, ExecTarget("prod", "shop", pod, "app"))


def test_other_permissions_and_objects_are_not_answered():
    ann = make_user("ann")
    grant(ann)
    ann = get_user_model().objects.get(pk=ann.pk)
    assert not ann.has_perm(EXEC_PERMISSION)
    assert not ann.has_perm("terminals.watch_session", WEB)
