"""The login: brute-force lockout, CSRF, sessions that expire, and deploy-grade settings."""

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

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


@pytest.mark.django_db
def test_logging_out_says_so_on_the_login_page(client):
    client.force_login(make_user("ann"))
    page = client.post("/accounts/logout/", follow=True)
    assert page.redirect_chain[-1][0].startswith("/accounts/login/")
    assert "You have logged out." in page.content.decode()
    assert "You have logged out." not in client.get("/accounts/login/").content.decode()


def project_settings(**env):
    """webshell.settings as production would load them, read in a fresh process."""
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="webshell.settings",
        DJANGO_SECRET_KEY="x" * 20 + "-a-long-random-production-secret-" + "y" * 20,
        DJANGO_ALLOWED_HOSTS="shell.example.com",
        WEBSHELL_AUDIT_KEY="k" * 10 + "-an-audit-key-kept-out-of-the-database-" + "z" * 10,
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
        application, path, headers=[(b"host", b"localhost"), (b"origin", b"https://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


# The client address behind proxies, and the limit per username (webshell/lockout.py).

REAL = "203.0.113.7"  # what the trusted proxy appended: the client it saw


def attempt(client, password, address, *, username="ann", forwarded=None):
    """A login from ``address``, or through a proxy at 10.0.0.1 that sent ``forwarded``."""
    meta = {"REMOTE_ADDR": address}
    if forwarded is not None:
        meta = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": forwarded}
    return client.post(LOGIN, {"username": username, "password": password}, **meta)


@pytest.mark.django_db
def test_forged_forwarded_for_entries_do_not_escape_the_lockout(client, settings):
    settings.TERMINALS_TRUSTED_PROXIES = 1
    make_user("ann")
    codes = [
        attempt(client, "wrong", None, forwarded=f"198.51.100.{i}, {REAL}").status_code
        for i in range(12)
    ]
    assert codes == [200] * 4 + [429] * 8
    right = attempt(client, "pw-for-tests", None, forwarded=f"198.51.100.99, {REAL}")
    assert right.status_code == 429 and "locked" in right.content.decode()
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {REAL}


@pytest.mark.django_db
def test_a_username_tried_from_many_addresses_is_locked_for_every_address(client):
    make_user("ann")
    make_user("bob")
    codes = [attempt(client, "wrong", f"198.51.100.{i}").status_code for i in range(1, 21)]
    # No address reached the limit of 5; the username reached its limit of 20.
    assert codes == [200] * 19 + [429]
    right = attempt(client, "pw-for-tests", "192.0.2.50")
    assert right.status_code == 429
    assert "Too many failed logins" in right.content.decode()
    # The lock is the username's: another user from the same addresses logs in.
    assert attempt(client, "pw-for-tests", "198.51.100.1", username="bob").status_code == 302


@pytest.mark.django_db
def test_the_username_limit_counts_only_failures_within_the_cool_off(client, settings):
    settings.AXES_COOLOFF_TIME = 1  # hour
    make_user("ann")
    codes = [attempt(client, "wrong", f"198.51.100.{i}").status_code for i in range(20)]
    assert codes[-1] == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(hours=2))
    assert attempt(client, "pw-for-tests", "192.0.2.50").status_code == 302


@pytest.mark.django_db
def test_a_username_limit_of_zero_leaves_only_the_limit_per_address(client, settings):
    settings.WEBSHELL_LOGIN_USERNAME_FAILURE_LIMIT = 0
    make_user("ann")
    codes = [attempt(client, "wrong", f"198.51.100.{i}").status_code for i in range(25)]
    assert codes == [200] * 25
    assert attempt(client, "pw-for-tests", "192.0.2.50").status_code == 302


def read_project_settings(*names, **env):
    """Settings of webshell.settings in a fresh process with ``env``; (returncode, values|err)."""
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps([getattr(s, name) for name in {list(names)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=project_settings(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode:
        return result.returncode, result.stderr
    return 0, json.loads(result.stdout)


def test_production_takes_the_client_address_from_the_trusted_proxies():
    names = (
        "TERMINALS_TRUSTED_PROXIES",
        "AXES_CLIENT_IP_CALLABLE",
        "AXES_HANDLER",
        "AXES_FAILURE_LIMIT",
        "WEBSHELL_LOGIN_USERNAME_FAILURE_LIMIT",
    )
    assert read_project_settings(*names) == (
        0,
        [0, "terminals.clients.client_address", "webshell.lockout.LoginLockout", 5, 20],
    )
    assert read_project_settings(
        "TERMINALS_TRUSTED_PROXIES",
        "WEBSHELL_LOGIN_USERNAME_FAILURE_LIMIT",
        WEBSHELL_TRUSTED_PROXIES="2",
        WEBSHELL_LOGIN_USERNAME_FAILURE_LIMIT="50",
    ) == (0, [2, 50])
    assert read_project_settings(
        "TERMINALS_TRUSTED_PROXIES", WEBSHELL_TRUSTED_PROXIES="10.0.0.0/8, fd00::/8"
    ) == (0, [["10.0.0.0/8", "fd00::/8"]])


def test_a_trusted_proxy_that_is_no_address_stops_the_project_with_the_reason():
    returncode, error = read_project_settings(
        "TERMINALS_TRUSTED_PROXIES", WEBSHELL_TRUSTED_PROXIES="10.0.0.0/8,ingress"
    )
    assert returncode == 1
    assert (
        "ImproperlyConfigured: WEBSHELL_TRUSTED_PROXIES: 'ingress' is not an IP address or "
        "network. Give the number of proxies in front of Daphne, or their comma-separated "
        "addresses or networks (10.0.0.0/8)."
    ) in error
