"""The login: brute-force lockout, CSRF, sessions that expire, and deploy-grade settings."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from terminals.routing import websocket_urlpatterns
from tests.fixtures.users import make_user
from webshell.asgi import application

ROOT = Path(__file__).resolve().parent.parent
LOGIN = "/accounts/login/"


def login(client, password):
    return client.post(LOGIN, {"username": "ann", "password": password})


@pytest.mark.django_db
def test_a_good_password_lands_on_the_portal(client):
    make_user("ann")
    response = login(client, "pw-for-tests")
    assert response.status_code == 302 and response["Location"] == "/"


@pytest.mark.django_db
def test_brute_force_locks_the_account_out_with_a_clear_page(client):
    make_user("ann")
    for _ in range(4):
        response = login(client, "wrong")
        assert response.status_code == 200
        assert "didn't match" in response.content.decode()
    locked = login(client, "wrong")  # the fifth failure
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    # Now even the right password is refused, and the page says why.
    again = login(client, "pw-for-tests")
    assert again.status_code == 429
    assert "locked" in again.content.decode()


@pytest.mark.django_db
def test_the_login_form_needs_its_csrf_token():
    make_user("ann")
    client = Client(enforce_csrf_checks=True)
    assert login(client, "pw-for-tests").status_code == 403
    page = client.get(LOGIN)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
    ok = client.post(
        LOGIN, {"username": "ann", "password": "pw-for-tests", "csrfmiddlewaretoken": token}
    )
    assert ok.status_code == 302


@pytest.mark.django_db
def test_logging_out_takes_a_post_with_a_token(client):
    client.force_login(make_user("ann"))
    assert client.get("/accounts/logout/").status_code == 405
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def project_settings(**env):
    """webshell.settings as production would load them, read in a fresh process."""
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="webshell.settings",
        DJANGO_SECRET_KEY="x" * 20 + "-a-long-random-production-secret-" + "y" * 20,
        DJANGO_ALLOWED_HOSTS="shell.example.com",
        **env,
    )
    return environment


def test_check_deploy_is_clean_for_production_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=project_settings(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_sessions_expire_and_cookies_are_secure():
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.SESSION_COOKIE_AGE, s.SESSION_EXPIRE_AT_BROWSER_CLOSE, "
        "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, "
        "s.SECURE_PROXY_SSL_HEADER, s.ALLOWED_HOSTS]))"
    )
    env = project_settings(DJANGO_SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    age, at_close, secure, csrf_secure, hsts, proxy, hosts = json.loads(result.stdout)
    assert age == 8 * 3600 and at_close
    assert secure and csrf_secure and hsts >= 31536000
    assert proxy == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert hosts == ["shell.example.com"]


def test_no_settings_outside_the_tests_allow_every_host():
    for path in [*ROOT.glob("webshell/**/*.py"), *ROOT.glob("terminals/**/*.py")]:
        text = path.read_text()
        assert not re.search(r"ALLOWED_HOSTS\s*=\s*\[\s*['\"]\*['\"]", text), path


TERMINAL_ROUTE = r"^ws/terminals/(?P<cluster>[^/]+)/(?P<namespace>[^/]+)/(?P<pod>[^/]+)/$"
SAMPLE_PATHS = {
    TERMINAL_ROUTE: "/ws/terminals/kubesim/default/web/",
    r"^ws/terminals/": "/ws/terminals/whatever",
    r"^ws/terminals/watch/(?P<session>[^/]+)/$": "/ws/terminals/watch/0b6e2c1e/",
}


@pytest.mark.django_db
@pytest.mark.parametrize("route", websocket_urlpatterns, ids=lambda r: str(r.pattern))
async def test_every_websocket_route_refuses_a_cross_site_origin(route):
    path = SAMPLE_PATHS[str(route.pattern)]
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"origin", b"https://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()
