"""Replay, export, watch and end pages: who may use them and what they serve."""

import json

import pytest
from django.contrib.auth.models import Permission

from tests.fixtures.users import make_user
from tests.test_admin import recorded_session  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db


def login(client, *codenames):
    user = make_user("audrey")
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="terminals", codename__in=codenames)
    )
    client.force_login(user)
    return user


def test_the_cast_is_asciicast_v2(client, recorded_session):  # noqa: F811
    login(client, "view_session")
    response = client.get(f"/terminals/sessions/{recorded_session.pk}.cast")
    assert response["Content-Type"] == "application/x-asciicast"
    lines = b"".join(response.streaming_content).decode().splitlines()
    header = json.loads(lines[0])
    assert (header["version"], header["width"], header["height"]) == (2, 80, 24)
    assert [json.loads(line) for line in lines[1:]] == [
        [0.0, "r", "80x24"], [0.001, "i", "ls\r"], [0.002, "o", "a b\r\n"],
    ]  # fmt: skip
    with_markers = client.get(f"/terminals/sessions/{recorded_session.pk}.cast?markers=1")
    events = [
        json.loads(line) for line in b"".join(with_markers.streaming_content).splitlines()[1:]
    ]
    assert [0.001, "m", "ls"] in events and [0.002, "m", "uptime"] in events


def test_the_replay_page_lists_commands_to_jump_to(client, recorded_session):  # noqa: F811
    login(client, "view_session")
    page = client.get(f"/terminals/sessions/{recorded_session.pk}/replay/").content.decode()
    assert "asciinema-player.min.js" in page
    assert f"/terminals/sessions/{recorded_session.pk}.cast?markers=1" in page
    assert 'data-marker="1"' in page and "<code>uptime</code>" in page
    assert 'data-cols="80" data-rows="24"' in page


@pytest.mark.parametrize(
    ("url", "method"),
    [("{}.cast", "get"), ("{}/replay/", "get"), ("{}/watch/", "get"), ("{}/end/", "post")],
)
def test_review_pages_need_their_permission(client, recorded_session, url, method):  # noqa: F811
    make_user("sam", everywhere=True)
    client.force_login(make_user("nosy"))
    response = getattr(client, method)("/terminals/sessions/" + url.format(recorded_session.pk))
    assert response.status_code == 403


def test_ending_a_session_that_has_ended_says_so(client, recorded_session):  # noqa: F811
    login(client, "watch_session", "end_session")
    response = client.post(f"/terminals/sessions/{recorded_session.pk}/end/", follow=True)
    assert "That session had already ended." in response.content.decode()


def test_an_unknown_session_is_404(client):
    login(client, "view_session")
    assert (
        client.get("/terminals/sessions/00000000-0000-0000-0000-000000000000.cast").status_code
        == 404
    )
