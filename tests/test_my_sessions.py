"""My sessions: each user's own sessions, replaying them, and ending their live ones."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import Permission
from django.test import override_settings
from django.utils import timezone

from terminals import live
from terminals.checks import check_settings
from terminals.models import Server, Session
from tests.fixtures.users import make_user

pytestmark = pytest.mark.django_db

MINE = "/terminals/sessions/mine/"


def terminals(**changes: Any) -> override_settings:
    """The test settings' TERMINALS with ``changes``."""
    return override_settings(TERMINALS={**settings.TERMINALS, **changes})


def make_session(user: Any, *, minutes_ago: float = 0, **fields: Any) -> Session:
    """A session of ``user`` that started ``minutes_ago``; ``fields`` as on the model."""
    session = Session.objects.create(
        user=user, username=user.get_username(), cluster="kubesim", namespace="default",
        pod=fields.pop("pod", "web"), container="main", **fields,
    )  # fmt: skip
    started = timezone.now() - dt.timedelta(minutes=minutes_ago)
    Session.objects.filter(pk=session.pk).update(started_at=started)
    session.refresh_from_db()
    return session


def ended(
    user: Any, minutes_ago: float, seconds: float, pod: str = "web", **fields: Any
) -> Session:
    """A session that lasted ``seconds`` and ended with exit code 0 unless told otherwise."""
    session = make_session(user, minutes_ago=minutes_ago, pod=pod)
    fields = {"end_reason": "exit", "exit_code": 0} | fields
    Session.objects.filter(pk=session.pk).update(
        ended_at=session.started_at + dt.timedelta(seconds=seconds), **fields
    )
    session.refresh_from_db()
    return session


def lost_server() -> Server:
    """A server that stopped heartbeating an hour ago."""
    return Server.objects.create(
        hostname="gone", pid=1, heartbeat_at=timezone.now() - dt.timedelta(hours=1)
    )


def rows(html: str) -> list[str]:
    """The session ids of the table's rows, in order."""
    return re.findall(r'<tr class="session" data-session="([0-9a-f-]+)"', html)


def row(html: str, session: Session) -> str:
    """The HTML of one session's row."""
    match = re.search(rf'<tr class="session" data-session="{session.pk}".*?</tr>', html, re.S)
    assert match, f"no row for {session.pk}"
    return match.group(0)


def test_a_user_sees_only_their_own_sessions_newest_first_with_their_state(client):
    sam, ada = make_user("sam"), make_user("ada")
    old = ended(sam, minutes_ago=90, seconds=3723, exit_code=7, pod="api")
    by_auditor = ended(
        sam, minutes_ago=60, seconds=5, end_reason="ended_by_auditor", exit_code=None,
        ended_by_username="audrey",
    )  # fmt: skip
    detached = make_session(sam, minutes_ago=30, detached_at=timezone.now())
    lost = make_session(sam, minutes_ago=20, server=lost_server())
    live_now = make_session(sam, minutes_ago=1)
    theirs = make_session(ada)
    client.force_login(sam)

    page = client.get(MINE).content.decode()

    assert rows(page) == [str(s.pk) for s in (live_now, lost, detached, by_auditor, old)]
    assert str(theirs.pk) not in page
    # State, and which count against the limit: live and detached, not a lost server's.
    assert 'data-state="live"' in row(page, live_now)
    assert 'data-state="detached"' in row(page, detached)
    assert 'data-state="lost"' in row(page, lost) and "server lost" in row(page, lost)
    assert 'data-state="ended"' in row(page, old)
    for session in (live_now, detached):
        assert "counts toward your limit" in row(page, session)
        assert "/end/" in row(page, session)
    for session in (lost, old, by_auditor):
        assert "counts toward your limit" not in row(page, session)
        assert "/end/" not in row(page, session)
    assert "<strong>2 of 5</strong> live sessions used" in page
    # Times to the second, the duration, how it ended, the exit code.
    assert old.started_at.strftime("%Y-%m-%d %H:%M:%S") in row(page, old)
    assert old.ended_at.strftime("%Y-%m-%d %H:%M:%S") in row(page, old)
    assert '<td class="number duration">1:02:03</td>' in row(page, old)
    assert "process exited" in row(page, old) and '<td class="number exit-code">7</td>' in row(
        page, old
    )
    assert "kubesim/default/api [main]" in row(page, old)
    assert "ended by an auditor (audrey)" in row(page, by_auditor)
    assert "not yet" in row(page, live_now)
    # Replays of their own, by default.
    assert f"/terminals/sessions/{old.pk}/replay/" in row(page, old)


@terminals(MAX_SESSIONS_PER_USER=0)
def test_without_a_limit_the_page_says_so(client):
    sam = make_user("sam")
    make_session(sam)
    client.force_login(sam)
    assert "<strong>1</strong> live session (no limit)" in client.get(MINE).content.decode()


def test_the_list_comes_a_page_at_a_time(client):
    sam = make_user("sam")
    sessions = [ended(sam, minutes_ago=100 - n, seconds=1) for n in range(30)]
    client.force_login(sam)
    first = client.get(MINE).content.decode()
    second = client.get(MINE + "?page=2").content.decode()
    assert rows(first) == [str(s.pk) for s in reversed(sessions[5:])]
    assert rows(second) == [str(s.pk) for s in reversed(sessions[:5])]
    assert "Page 1 of 2" in first and 'href="?page=2"' in first


def test_a_user_with_no_sessions_is_told_so(client):
    client.force_login(make_user("sam"))
    page = client.get(MINE).content.decode()
    assert "You have not opened a terminal yet." in page
    assert "<strong>0 of 5</strong> live sessions used" in page


def test_the_page_needs_a_login(client):
    response = client.get(MINE)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_site_header_links_to_it(client):
    client.force_login(make_user("sam"))
    header = client.get(MINE).content.decode().split("</header>")[0]
    assert f'<a href="{MINE}">My sessions</a>' in header


# Replaying one's own sessions.


@pytest.mark.parametrize("url", ["{}.cast", "{}/replay/"])
def test_a_user_replays_and_downloads_their_own_session(client, url):
    sam = make_user("sam")
    session = ended(sam, minutes_ago=5, seconds=2)
    client.force_login(sam)
    response = client.get("/terminals/sessions/" + url.format(session.pk))
    assert response.status_code == 200


@pytest.mark.parametrize("url", ["{}.cast", "{}/replay/"])
def test_another_users_session_is_refused_with_a_page_that_says_why(client, url):
    session = ended(make_user("ada"), minutes_ago=5, seconds=2)
    client.force_login(make_user("sam"))
    response = client.get("/terminals/sessions/" + url.format(session.pk))
    assert response.status_code == 403
    page = response.content.decode()
    assert "You may replay only your own sessions." in page
    assert "<h1>Not allowed</h1>" in page  # the site's styled page


def test_an_unknown_session_is_refused_as_anothers_would_be(client):
    """A user who is not an auditor learns nothing of which session ids exist."""
    client.force_login(make_user("sam"))
    response = client.get("/terminals/sessions/00000000-0000-0000-0000-000000000000/replay/")
    assert response.status_code == 403


@terminals(REPLAY_OWN_SESSIONS=False)
@pytest.mark.parametrize("url", ["{}.cast", "{}/replay/"])
def test_with_the_setting_off_only_auditors_replay(client, url):
    sam = make_user("sam")
    session = ended(sam, minutes_ago=5, seconds=2)
    client.force_login(sam)
    response = client.get("/terminals/sessions/" + url.format(session.pk))
    assert response.status_code == 403
    assert "permission to view terminal sessions" in response.content.decode()
    assert "/replay/" not in client.get(MINE).content.decode()  # and none offered

    auditor = make_user("audrey")
    auditor.user_permissions.add(
        Permission.objects.get(content_type__app_label="terminals", codename="view_session")
    )
    client.force_login(auditor)
    assert client.get("/terminals/sessions/" + url.format(session.pk)).status_code == 200


def test_the_replay_of_ones_own_session_links_back_to_my_sessions(client):
    sam = make_user("sam")
    session = ended(sam, minutes_ago=5, seconds=2)
    client.force_login(sam)
    page = client.get(f"/terminals/sessions/{session.pk}/replay/").content.decode()
    assert f'· <a href="{MINE}">My sessions</a>' in page


def test_the_setting_is_checked():
    with terminals(REPLAY_OWN_SESSIONS=False):
        assert check_settings() == []
    with terminals(REPLAY_OWN_SESSIONS="yes"):
        assert [message.id for message in check_settings()] == ["terminals.E015"]


# Ending one's own live session.


class Listener:
    """A channel in a session's terminal group: what a live terminal would receive."""

    def __init__(self, session: Session) -> None:
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(live.terminal_group(session.pk), self.channel)

    def receive(self) -> dict[str, Any]:
        return async_to_sync(self.layer.receive)(self.channel)

    def received_nothing(self) -> bool:
        """True if nothing arrives within a moment (the view sends before it answers, so a
        message sent would already be waiting)."""

        async def attempt() -> bool:
            try:
                async with asyncio.timeout(0.2):
                    await self.layer.receive(self.channel)
            except TimeoutError:
                return True
            return False

        return async_to_sync(attempt)()


def test_a_user_ends_their_own_live_session(client):
    sam = make_user("sam")
    session = make_session(sam)
    terminal = Listener(session)
    client.force_login(sam)

    response = client.post(f"{MINE}{session.pk}/end/", follow=True)

    assert response.redirect_chain == [(MINE, 302)]
    assert "Asked your session on web to end." in response.content.decode()
    message = terminal.receive()
    assert message["type"] == live.TERMINATE
    assert (message["user_id"], message["username"]) == (sam.pk, "sam")


def test_a_detached_session_can_be_ended_too(client):
    sam = make_user("sam")
    session = make_session(sam, detached_at=timezone.now())
    terminal = Listener(session)
    client.force_login(sam)
    client.post(f"{MINE}{session.pk}/end/")
    assert terminal.receive()["type"] == live.TERMINATE


def test_another_users_session_cannot_be_ended(client):
    session = make_session(make_user("ada"))
    terminal = Listener(session)
    client.force_login(make_user("sam"))
    response = client.post(f"{MINE}{session.pk}/end/")
    assert response.status_code == 403
    assert "You may end only your own sessions." in response.content.decode()
    assert terminal.received_nothing()


def test_even_an_auditor_ends_others_sessions_only_from_the_watch_page(client):
    session = make_session(make_user("ada"))
    terminal = Listener(session)
    auditor = make_user("audrey")
    auditor.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="terminals", codename__in=["view_session", "end_session"]
        )
    )
    client.force_login(auditor)
    assert client.post(f"{MINE}{session.pk}/end/").status_code == 403
    assert terminal.received_nothing()


@pytest.mark.parametrize("state", ["ended", "lost"])
def test_a_session_that_is_not_live_is_not_asked_to_end(client, state):
    sam = make_user("sam")
    if state == "ended":
        session = ended(sam, minutes_ago=5, seconds=2)
        said = "That session had already ended."
    else:
        session = make_session(sam, server=lost_server())
        said = "That session&#x27;s server was lost; the reaper records its end."
    terminal = Listener(session)
    client.force_login(sam)
    response = client.post(f"{MINE}{session.pk}/end/", follow=True)
    assert said in response.content.decode()
    assert terminal.received_nothing()


def test_ending_needs_a_post_and_the_csrf_token(client):
    from django.test import Client

    sam = make_user("sam")
    session = make_session(sam)
    client.force_login(sam)
    assert client.get(f"{MINE}{session.pk}/end/").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(sam)
    assert strict.post(f"{MINE}{session.pk}/end/").status_code == 403
