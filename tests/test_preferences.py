"""Terminal settings kept per user: the JSON endpoint and what the terminal page renders."""

from __future__ import annotations

import json

import pytest
from django.db import IntegrityError
from django.test import Client

from terminals.models import TerminalPreference
from tests.fixtures.users import make_user

pytestmark = pytest.mark.django_db

URL = "/terminals/preferences/"


def post(client: Client, body: object, **extra: str):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(URL, data, content_type="application/json", **extra)


@pytest.fixture
def sam(client):
    user = make_user("sam", everywhere=True)
    client.force_login(user)
    return user


def test_anonymous_users_may_neither_read_nor_save(client):
    for response in (client.get(URL), post(client, {"theme": "light"})):
        assert response.status_code == 403
        assert response.json() == {"error": "Log in to read or save terminal settings."}
    assert not TerminalPreference.objects.exists()


def test_a_user_without_saved_settings_gets_the_defaults(client, sam):
    response = client.get(URL)
    assert response.status_code == 200
    assert response.json() == {"font_size": 14, "theme": "dark"}
    assert "no-cache" in response["Cache-Control"]


def test_settings_are_saved_per_user(client, sam):
    response = post(client, {"font_size": 18, "theme": "light"})
    assert response.status_code == 200
    assert response.json() == {"font_size": 18, "theme": "light"}
    # One key at a time keeps the other.
    assert post(client, {"font_size": 11}).json() == {"font_size": 11, "theme": "light"}
    assert client.get(URL).json() == {"font_size": 11, "theme": "light"}

    other = Client()
    other.force_login(make_user("pat"))
    assert other.get(URL).json() == {"font_size": 14, "theme": "dark"}
    assert post(other, {"theme": "light"}).json() == {"font_size": 14, "theme": "light"}
    assert client.get(URL).json() == {"font_size": 11, "theme": "light"}
    assert TerminalPreference.objects.count() == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"font_size": 9}, "font_size must be between 10 and 24, not 9."),
        ({"font_size": 25}, "font_size must be between 10 and 24, not 25."),
        ({"font_size": 14.5}, "font_size must be a whole number of pixels."),
        ({"font_size": "14"}, "font_size must be a whole number of pixels."),
        ({"font_size": True}, "font_size must be a whole number of pixels."),
        ({"theme": "solarized"}, "theme must be one of dark, light."),
        ({"theme": None}, "theme must be one of dark, light."),
        ({"colour": "red"}, "Unknown setting(s): colour. Known: font_size, theme."),
        ({}, "Nothing to save: send font_size, theme or both."),
        ([14, "dark"], "The body must be a JSON object."),
        ("{not json", "The body must be a JSON object."),
    ],
)
def test_bad_values_get_a_400_that_says_why_and_save_nothing(client, sam, body, message):
    response = post(client, body)
    assert response.status_code == 400
    assert response.json() == {"error": message}
    assert not TerminalPreference.objects.exists()


def test_a_valid_value_beside_a_bad_one_is_not_saved_either(client, sam):
    response = post(client, {"font_size": 16, "theme": "neon"})
    assert response.status_code == 400
    assert client.get(URL).json() == {"font_size": 14, "theme": "dark"}


def test_saving_needs_the_csrf_token():
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("sam"))
    page = client.get("/accounts/password_change/")  # any page of the site sets the token
    token = client.cookies["csrftoken"].value
    assert page.status_code in (200, 302)

    assert post(client, {"theme": "light"}).status_code == 403
    assert not TerminalPreference.objects.exists()
    response = post(client, {"theme": "light"}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200, response.content
    assert response.json()["theme"] == "light"


def test_other_methods_are_refused(client, sam):
    assert client.put(URL, "{}", content_type="application/json").status_code == 405
    assert client.delete(URL).status_code == 405


def test_the_database_keeps_the_bounds_too(sam):
    with pytest.raises(IntegrityError):
        TerminalPreference.objects.create(user=sam, font_size=40)


def test_the_terminal_page_starts_with_the_users_settings(client, sam, kubesim_settings):
    post(client, {"font_size": 20, "theme": "light"})
    page = client.get("/terminals/kubesim/default/web/?container=main")
    assert page.status_code == 200
    html = page.content.decode()
    assert (
        '<script id="terminal-preferences" type="application/json">'
        '{"font_size": 20, "theme": "light", "url": "/terminals/preferences/"}</script>'
    ) in html
    # The settings panel posts with the CSRF token that its form carries.
    assert 'id="terminal-settings"' in html and "csrfmiddlewaretoken" in html
    assert 'id="terminal-search-count"' in html
