"""The admin: access rules are managed there; audit records are read-only for everyone."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from terminals.audit.chain import frame_digest, genesis
from terminals.models import AccessRule, Command, DeniedAttempt, Frame, Session

pytestmark = pytest.mark.django_db


@pytest.fixture
def recorded_session():
    """A short, correctly chained session, as the recorder writes them."""
    session = Session.objects.create(
        username="sam", cluster="kubesim", namespace="default", pod="web", container="main",
        command=["/bin/bash"], ended_at=timezone.now(), end_reason="exit", exit_code=0,
    )  # fmt: skip
    head = genesis(session.pk)
    for seq, (direction, data) in enumerate([("r", b"80x24"), ("i", b"ls\r"), ("o", b"a b\r\n")]):
        head = frame_digest(head, seq, seq * 1000, direction, data)
        Frame.objects.create(
            session=session, seq=seq, offset_us=seq * 1000, direction=direction, data=data,
            digest=head.hex(),
        )  # fmt: skip
    session.head_digest = head.hex()
    session.save()
    Command.objects.create(session=session, offset_us=1000, line="$ ls", text="ls")
    Command.objects.create(session=session, offset_us=2000, line="$ uptime", text="uptime")
    return session


@pytest.fixture
def superuser_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    return client


def test_the_session_list_shows_state_and_searches_commands(superuser_client, recorded_session):
    page = superuser_client.get("/admin/terminals/session/").content.decode()
    assert "kubesim/default/web [main]" in page and "process exited" in page
    found = superuser_client.get("/admin/terminals/session/?q=uptime").content.decode()
    assert "1 terminal session" in found
    missing = superuser_client.get("/admin/terminals/session/?q=shutdown").content.decode()
    assert "0 terminal sessions" in missing
    live = superuser_client.get("/admin/terminals/session/?outcome=live").content.decode()
    assert "0 terminal sessions" in live
    ended = superuser_client.get("/admin/terminals/session/?outcome=exit").content.decode()
    assert "1 terminal session" in ended


def test_a_session_page_checks_the_chain_and_links_to_the_replay(
    superuser_client, recorded_session
):
    url = f"/admin/terminals/session/{recorded_session.pk}/change/"
    page = superuser_client.get(url).content.decode()
    assert "intact (3 frames)" in page
    assert f"/terminals/sessions/{recorded_session.pk}/replay/?command=1" in page  # "uptime"
    assert f"/terminals/sessions/{recorded_session.pk}.cast" in page
    assert 'name="_save"' not in page  # read-only, even for a superuser
    Frame.objects.filter(session=recorded_session, seq=1).update(data=b"rm -rf /\r")
    page = superuser_client.get(url).content.decode()
    assert "frame 1 does not match its digest" in page


@pytest.mark.parametrize("model", ["session", "deniedattempt", "auditprune"])
def test_audit_records_cannot_be_added_changed_or_deleted(
    superuser_client, recorded_session, model
):
    assert superuser_client.get(f"/admin/terminals/{model}/add/").status_code == 403
    if model == "session":
        pk = recorded_session.pk
        delete = superuser_client.post(f"/admin/terminals/session/{pk}/delete/", {"post": "yes"})
        assert delete.status_code == 403
        assert Session.objects.filter(pk=pk).exists()


def test_auditors_with_view_permission_can_review(client, recorded_session):
    auditor = get_user_model().objects.create_user("audrey", password="pw", is_staff=True)
    auditor.user_permissions.add(
        Permission.objects.get(content_type__app_label="terminals", codename="view_session")
    )
    client.force_login(auditor)
    assert client.get("/admin/terminals/session/").status_code == 200
    assert client.get(f"/admin/terminals/session/{recorded_session.pk}/change/").status_code == 200
    assert client.get("/admin/terminals/accessrule/").status_code == 403


def test_access_rules_are_managed_in_the_admin(superuser_client):
    response = superuser_client.post(
        "/admin/terminals/accessrule/add/",
        {
            "name": "on-call in prod", "reason": "OPS-1234", "clusters": "prod",
            "namespaces": "shop", "pods": "web-*", "containers": "*", "commands": "",
        },
    )  # fmt: skip
    assert response.status_code == 302
    rule = AccessRule.objects.get()
    assert (rule.pods, rule.reason) == ("web-*", "OPS-1234")


def test_denials_are_listed(superuser_client):
    DeniedAttempt.objects.create(
        username="eve", cluster="kubesim", namespace="prod", pod="db", code="forbidden",
        reason="You may not open a terminal on kubesim/prod/db.",
    )  # fmt: skip
    page = superuser_client.get("/admin/terminals/deniedattempt/").content.decode()
    assert "eve" in page and "You may not open a terminal on kubesim/prod/db." in page


def test_only_sessions_of_live_servers_are_listed_as_live(superuser_client):
    from tests.test_servers import make_server, make_session

    running = make_session(make_server("web-1", 11))
    unreaped = make_session(make_server("web-2", 22, age=61))
    page = superuser_client.get("/admin/terminals/session/?outcome=live").content.decode()
    assert "1 terminal session" in page and f"{running.pk}" in page
    page = superuser_client.get("/admin/terminals/session/?outcome=unreaped").content.decode()
    assert "1 terminal session" in page and f"{unreaped.pk}" in page
    assert "server lost (not yet reaped)" in page
    page = superuser_client.get(f"/admin/terminals/session/{unreaped.pk}/change/").content.decode()
    assert "web-2 pid 22" in page and "server lost (not yet reaped)" in page
    page = superuser_client.get("/admin/terminals/server/").content.decode()
    assert "web-1 pid 11" in page and "alive" in page and "lost" in page
