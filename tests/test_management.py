"""Management commands of the terminals app."""

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

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


def test_close_stale_ends_sessions_older_than_the_maximum_duration(capsys, settings):
    import datetime as dt

    from django.utils import timezone

    from terminals.models import Session

    settings.TERMINALS = {**settings.TERMINALS, "MAX_DURATION": 3600}
    old = Session.objects.create(username="a", cluster="c", namespace="n", pod="p")
    Session.objects.filter(pk=old.pk).update(started_at=timezone.now() - dt.timedelta(hours=2))
    fresh = Session.objects.create(username="b", cluster="c", namespace="n", pod="p")
    call_command("audit", "close-stale")
    assert "Marked 1 stale session(s) as ended." in capsys.readouterr().out
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert old.end_reason == Session.EndReason.SERVER_ERROR and old.ended_at is not None
    assert fresh.is_live
