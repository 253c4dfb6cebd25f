"""Management commands of the terminals app."""

import io

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError

from terminals.models import Session
from tests.fixtures.users import make_user

pytestmark = pytest.mark.django_db


def test_the_auditors_group_gets_the_review_permissions(capsys):
    call_command("terminals_auditors")
    assert "Created group 'Auditors'" in capsys.readouterr().out
    auditor = make_user("audrey")
    auditor.groups.add(Group.objects.get(name="Auditors"))
    for permission in ("view_session", "watch_session", "end_session", "view_deniedattempt"):
        assert auditor.has_perm(f"terminals.{permission}")
    assert not auditor.has_perm("terminals.change_accessrule")
    call_command("terminals_auditors")  # running it again changes nothing
    assert "Updated group 'Auditors'" in capsys.readouterr().out


def test_close_stale_ends_the_sessions_of_lost_servers(capsys):
    from tests.test_servers import make_server, make_session

    lost = make_session(make_server(age=61))
    live = make_session(make_server())
    call_command("audit", "close-stale")
    assert "Ended 1 session(s) of lost server processes." in capsys.readouterr().out
    lost.refresh_from_db()
    live.refresh_from_db()
    assert lost.end_reason == Session.EndReason.SERVER_LOST and lost.ended_at is not None
    assert live.is_live


def test_close_stale_seals_the_sessions_it_ends(capsys):
    from terminals import records
    from tests.test_servers import TARGET, make_server

    server = make_server(age=61)
    session = records.open_session(make_user("sam"), TARGET, None, "", 0, server_id=server.pk)
    call_command("audit", "close-stale")
    call_command("audit", "verify", str(session.pk))
    assert f"{session.pk}: intact (0 frames, sealed)" in capsys.readouterr().out


def test_verify_refuses_a_checkpoint_that_is_not_one():
    with pytest.raises(CommandError, match="is not a checkpoint: give NUMBER:LINK as logged"):
        call_command("audit", "verify", "--checkpoint", "57")


def test_the_demo_with_single_sign_on_gets_rules_for_the_providers_groups(monkeypatch):
    from terminals.models import AccessRule
    from terminals.permissions import ExecTarget

    monkeypatch.setenv("WEBSHELL_DEMO_OIDC", "1")
    monkeypatch.setenv("WEBSHELL_ADMIN_PASSWORD", "demo-pw")
    from webshell.management.commands.demo_admin import Command  # the project's, not the app's

    call_command(Command(), stdout=io.StringIO())
    call_command(Command(), stdout=io.StringIO())  # once only
    assert AccessRule.objects.filter(name__startswith="demo: oidc:").count() == 2
    dev = make_user("diego")
    dev.groups.add(Group.objects.get(name="oidc:dev"))
    assert dev.has_perm("terminals.exec_pod", ExecTarget("kubesim", "dev", "api", "main"))
    assert not dev.has_perm("terminals.exec_pod", ExecTarget("kubesim", "prod", "db", "main"))
