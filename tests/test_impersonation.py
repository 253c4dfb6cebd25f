"""TERMINALS["IMPERSONATE"]: the exec and the pod listing act as the Django user in the cluster."""

from __future__ import annotations

import contextlib
import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group

from terminals.impersonation import impersonation_headers
from terminals.models import DeniedAttempt
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
def impersonating_daphne(kubesim):
    env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps(IMPERSONATING)
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
