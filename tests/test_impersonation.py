"""TERMINALS["IMPERSONATE"]: the exec and the pod listing act as the Django user in the cluster."""

from __future__ import annotations

import contextlib
import json
import logging

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group

from terminals.conf import get_config
from terminals.impersonation import ReservedName, impersonation_headers
from terminals.models import DeniedAttempt
from terminals.permissions import ExecTarget, may_exec
from terminals.protocol import CloseCode
from terminals.session.admission import Admission
from terminals.session.ending import EndSession
from tests.fixtures.daphne import daphne_environment, run_daphne
from tests.fixtures.terminal_client import TerminalClient
from tests.fixtures.users import make_user, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

IMPERSONATING = {"IMPERSONATE": True, "IMPERSONATE_GROUP_PREFIX": "django:"}


def alice() -> str:
    """Django's alice: allowed everywhere by Django, in two groups."""
    user = make_user("alice", everywhere=True)
    user.groups.add(Group.objects.create(name="developers"), Group.objects.create(name="oncall"))
    return session_cookie(user)


@contextlib.contextmanager
def impersonating_daphne(kubesim, terminals=IMPERSONATING):
    env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps(terminals)
    with run_daphne(env) as server:
        yield server


def test_headers_name_the_user_and_each_group_with_the_prefix(settings):
    settings.TERMINALS = {**settings.TERMINALS, **IMPERSONATING}
    user = make_user("alice")
    user.groups.add(Group.objects.create(name="oncall"), Group.objects.create(name="developers"))
    assert impersonation_headers(user) == [
        ("Impersonate-User", "alice"),
        ("Impersonate-Group", "django:developers"),
        ("Impersonate-Group", "django:oncall"),
    ]
    settings.TERMINALS = {**settings.TERMINALS, "IMPERSONATE": False}
    assert impersonation_headers(user) == []


async def test_the_cluster_sees_the_person_and_applies_its_own_rbac(kubesim):
    cookie = await sync_to_async(alice)()
    with impersonating_daphne(kubesim) as server:
        client = await TerminalClient.connect(
            server.ws_url, "/ws/terminals/kubesim/dev/api/?container=main", cookie
        )
        await client.until_message("ready")
        await client.close()
        start = await kubesim.event(
            lambda e: e["event"] == "start" and e["namespace"] == "dev" and e["user"] == "alice"
        )
        assert start["impersonated_by"] == "webshell"
        assert {"django:developers", "django:oncall"} <= set(start["groups"])

        # Django allows prod, kubesim's RBAC gives alice only dev: 4502 with the cluster's words.
        client = await TerminalClient.connect(
            server.ws_url, "/ws/terminals/kubesim/prod/db/?container=main", cookie
        )
        assert await client.until_closed() == 4502
        message = client.messages[-1]["message"]
        assert message.startswith("The cluster refused: ")
        assert 'User "alice" cannot create resource "pods/exec"' in message
        assert 'in the namespace "prod"' in message
        await client.close()
    denial = await DeniedAttempt.objects.aget(username="alice", namespace="prod")
    assert denial.code == "upstream"
    assert "cannot create resource" in denial.reason


def test_the_portal_lists_what_the_cluster_lets_the_person_see(client, kubesim_settings):
    kubesim_settings.TERMINALS = {**kubesim_settings.TERMINALS, **IMPERSONATING}
    client.cookies["sessionid"] = alice()
    page = client.get("/").content.decode()
    assert "/terminals/kubesim/dev/api/?container=main" in page
    assert "/terminals/kubesim/default/web/" not in page
    assert "/terminals/kubesim/prod/db/" not in page


def test_without_impersonation_the_portal_lists_every_pod_django_allows(client, kubesim_settings):
    client.cookies["sessionid"] = alice()
    page = client.get("/").content.decode()
    assert "/terminals/kubesim/prod/db/?container=main" in page


# Kubernetes reserves "system:" names: system:masters is bound to cluster-admin.


def in_masters(username: str = "mallory"):
    """A user whom Django lets in everywhere, in a Django group named "system:masters"."""
    user = make_user(username, everywhere=True)
    user.groups.add(Group.objects.create(name="system:masters"), Group.objects.create(name="ops"))
    return user


@pytest.mark.parametrize(
    ("prefix", "sent"),
    [
        # The system check (terminals.E013) refuses this configuration; the headers hold anyway.
        ("", ["ops"]),
        # The prefix and a name ("tem:masters") together spell a reserved name.
        ("sys", ["sysops", "syssystem:masters"]),
        # With a prefix of one's own, the group is a harmless "django:system:masters".
        ("django:", ["django:ops", "django:system:masters"]),
    ],
)
def test_a_group_sent_as_a_reserved_name_is_left_out(settings, caplog, prefix, sent):
    settings.TERMINALS = {**settings.TERMINALS, "IMPERSONATE": True}
    settings.TERMINALS["IMPERSONATE_GROUP_PREFIX"] = prefix
    user = in_masters()
    if prefix == "sys":
        user.groups.add(Group.objects.create(name="tem:masters"))
    with caplog.at_level(logging.WARNING, logger="terminals.impersonation"):
        headers = impersonation_headers(user)
    assert headers == [("Impersonate-User", "mallory")] + [
        ("Impersonate-Group", group) for group in sent
    ]
    if prefix != "django:":
        assert "Not impersonating the reserved group 'system:masters' for mallory" in caplog.text


def test_a_user_with_a_reserved_name_is_never_impersonated(settings):
    settings.TERMINALS = {**settings.TERMINALS, **IMPERSONATING}
    user = make_user("system:kube-controller-manager", everywhere=True)
    with pytest.raises(ReservedName, match="reserved by Kubernetes"):
        impersonation_headers(user)
    # No headers would mean the web shell's own identity: the user may open nothing instead.
    assert not may_exec(user, ExecTarget("kubesim", "dev", "api"))
    settings.TERMINALS = {**settings.TERMINALS, "IMPERSONATE": False}
    assert may_exec(user, ExecTarget("kubesim", "dev", "api"))


async def test_a_user_with_a_reserved_name_is_refused_and_the_refusal_recorded(settings):
    settings.TERMINALS = {**settings.TERMINALS, **IMPERSONATING}
    user = await sync_to_async(make_user)("system:admin", everywhere=True)
    scope = {
        "url_route": {"kwargs": {"cluster": "kubesim", "namespace": "dev", "pod": "api"}},
        "query_string": b"",
        "user": user,
        "client": ("10.0.0.7", 5555),
        "headers": [],
    }
    with pytest.raises(EndSession) as refused:
        await Admission(scope, get_config()).admit()
    assert refused.value.ending.code == CloseCode.FORBIDDEN
    denial = await DeniedAttempt.objects.aget(username="system:admin")
    assert (denial.code, denial.pod) == ("forbidden", "api")


async def test_the_cluster_never_sees_a_reserved_group(kubesim):
    """Even with the check ignored (no prefix), a Django "system:masters" group stays Django's."""
    cookie = await sync_to_async(lambda: session_cookie(in_masters()))()
    unprefixed = {"IMPERSONATE": True, "IMPERSONATE_GROUP_PREFIX": ""}
    with impersonating_daphne(kubesim, unprefixed) as server:
        # kubesim's RBAC lets system:masters do anything and mallory nothing in prod.
        client = await TerminalClient.connect(
            server.ws_url, "/ws/terminals/kubesim/prod/db/?container=main", cookie
        )
        assert await client.until_closed() == 4502
        assert 'User "mallory" cannot create resource "pods/exec"' in client.messages[-1]["message"]
        await client.close()
