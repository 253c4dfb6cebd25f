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
