"""The Content-Security-Policy, and the password reset that the project does not offer.

The header is checked in process; then a real Chromium opens every kind of page (login, portal,
terminal, replay, watch, admin) under the policy and must see no violation, with the terminal
working (so xterm.js, asciinema-player and the WebSocket all run under it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import Resolver404, resolve
from playwright.sync_api import expect

from tests.fixtures.daphne import Daphne, daphne_environment, run_daphne
from tests.fixtures.users import make_user
from webshell.middleware import HEADER, build_policy

ROOT = Path(__file__).resolve().parent.parent


def project_csp() -> dict[str, Any]:
    """``SECURE_CSP`` and ``SECURE_CSP_VIEWS`` of webshell/settings.py, read in a process."""
    code = (
        "import json; from webshell import settings; "
        "print(json.dumps([settings.SECURE_CSP, settings.SECURE_CSP_VIEWS]))"
    )
    env = {**os.environ, "DJANGO_DEBUG": "1", "DATABASE_URL": "sqlite:///:memory:"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    policy, views = json.loads(done.stdout)
    return {"policy": policy, "views": views}


def test_the_tests_run_under_the_projects_policy(settings):
    assert project_csp() == {"policy": settings.SECURE_CSP, "views": settings.SECURE_CSP_VIEWS}
    assert "webshell.middleware.ContentSecurityPolicyMiddleware" in settings.MIDDLEWARE


def test_the_policy_is_strict():
    csp = project_csp()
    policy = csp["policy"]
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, no eval
    assert policy["style-src"] == ["'self'"]  # no inline style
    assert policy["connect-src"] == ["'self'"]  # the WebSockets go to the same origin
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == policy["base-uri"] == ["'none'"]
    everything = json.dumps(csp)
    assert "'unsafe-eval'" not in everything and "*" not in everything
    # The exceptions, each on the one or two pages that need it.
    assert csp["views"] == {
        "terminals:terminal": {"style-src-elem": ["'self'", "'unsafe-inline'"]},
        "terminals:session-watch": {"style-src-elem": ["'self'", "'unsafe-inline'"]},
        "terminals:session-replay": {"script-src": ["'self'", "'wasm-unsafe-eval'"]},
    }


def test_build_policy():
    directives = {"default-src": ["'self'"], "img-src": ["'self'", "data:"], "sandbox": True}
    assert build_policy(directives) == "default-src 'self'; img-src 'self' data:; sandbox"
    assert build_policy({}) == ""


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/", "/admin/login/"])
def test_every_page_carries_the_policy(client: Client, settings, path):
    response = client.get(path)
    assert response[HEADER] == build_policy(settings.SECURE_CSP)


@pytest.mark.django_db
def test_only_the_pages_that_need_it_get_an_exception(client: Client, kubesim_settings):
    client.force_login(make_user("pat", everywhere=True))
    portal = client.get("/")[HEADER]
    terminal = client.get("/terminals/kubesim/default/web/")[HEADER]
    assert "unsafe-inline" not in portal and "wasm" not in portal
    assert "style-src-elem 'self' 'unsafe-inline'" in terminal
    assert "script-src 'self';" in terminal


@pytest.mark.django_db
def test_a_view_with_its_own_policy_keeps_it(rf, settings):
    from django.http import HttpResponse

    from webshell.middleware import ContentSecurityPolicyMiddleware

    def view(request):
        response = HttpResponse()
        response[HEADER] = "sandbox"
        return response

    assert ContentSecurityPolicyMiddleware(view)(rf.get("/"))[HEADER] == "sandbox"


# Password reset by e-mail: not offered (webshell/urls.py says why).

RESET_PATHS = [
    "/accounts/password_reset/",
    "/accounts/password_reset/done/",
    "/accounts/reset/MQ/set-password/",
    "/accounts/reset/done/",
]


@pytest.mark.parametrize("path", RESET_PATHS)
def test_the_project_has_no_password_reset(path):
    with pytest.raises(Resolver404):
        resolve(path, urlconf="webshell.urls")


@pytest.mark.django_db
@override_settings(ROOT_URLCONF="webshell.urls")
def test_the_project_keeps_login_logout_and_password_change(client: Client):
    assert client.get("/accounts/login/").status_code == 200
    assert client.get("/accounts/password_reset/").status_code == 404
    client.force_login(make_user("pat"))
    assert client.get("/accounts/password_change/").status_code == 200
    assert client.post("/accounts/logout/").status_code == 302


# In a browser: every kind of page runs under the policy without a violation.

# Installed before any page script: every violation the browser reports, kept on window.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(
    `${event.effectiveDirective} blocked ${event.blockedURI || "inline"} in ${event.sourceFile}`
  );
});
"""


@pytest.fixture
def csp_daphne(kubesim) -> Iterator[Daphne]:
    """A Daphne that serves the policy (the shared one does not: see tests/settings.py)."""
    env = {**daphne_environment(kubesim), "WEBSHELL_TEST_CSP": "1"}
    with run_daphne(env) as server:
        yield server


def until(page: Any, expression: str, timeout: float = 20) -> Any:
    """Poll ``expression`` until it is truthy. Playwright's wait_for_function evaluates a string
    inside the page, which the policy refuses (no 'unsafe-eval'); evaluate() does not."""
    deadline = time.monotonic() + timeout
    while not (value := page.evaluate(expression)):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        page.wait_for_timeout(50)  # the page's own time: polling is how a page is watched
    return value


def violations(page: Any) -> list[str]:
    """What the browser refused on this page so far."""
    return list(page.evaluate("window.cspViolations"))


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_every_page_works_under_the_policy(page: Any, browser: Any, csp_daphne: Daphne) -> None:
    from django.contrib.auth.models import Permission

    url = csp_daphne.url
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.context.add_init_script(RECORD_VIOLATIONS)
    admin = make_user("root", everywhere=True, is_staff=True, is_superuser=True)
    admin.user_permissions.add(*Permission.objects.filter(content_type__app_label="terminals"))

    # The login form, then the portal.
    response = page.goto(f"{url}/accounts/login/")
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    page.get_by_label("Username").press_sequentially("root")
    page.get_by_label("Password").press_sequentially("pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/")
    assert violations(page) == []

    # The terminal: xterm.js draws, the WebSocket (connect-src 'self') carries a command.
    page.goto(f"{url}/terminals/kubesim/default/web/?container=main")
    until(page, "window.terminalApp?.state === 'connected'")
    session = page.evaluate("terminalApp.session")
    page.evaluate("terminalApp.term.focus()")
    page.keyboard.type("echo csp-$((6*7))")
    page.keyboard.press("Enter")
    until(page, "terminalApp.screenLines().some((line) => line === 'csp-42')")
    assert violations(page) == []

    # Watching it live, from a second window (a background tab would not draw).
    context = browser.new_context()
    context.add_cookies(page.context.cookies())
    context.add_init_script(RECORD_VIOLATIONS)
    watch = context.new_page()
    watch.goto(f"{url}/terminals/sessions/{session}/watch/")
    until(watch, "window.watchApp?.state === 'connected'")
    until(watch, "watchApp.screenLines().includes('csp-42')")
    assert violations(watch) == []
    context.close()

    page.keyboard.type("exit")
    page.keyboard.press("Enter")
    until(page, "terminalApp.closeCode === 1000")

    # The replay: asciinema-player plays the recording.
    page.goto(f"{url}/terminals/sessions/{session}/replay/")
    until(page, "window.replayPlayer !== undefined")
    expect(page.locator(".ap-player")).to_be_visible()
    page.get_by_role("button", name=re.compile("echo csp")).click()
    until(page, "Promise.resolve(replayPlayer.getCurrentTime()).then((time) => time > 0)")
    expect(page.locator(".ap-player")).to_contain_text("csp-42")
    assert violations(page) == []

    # The admin: its own scripts and styles.
    admin_pages = [
        "/admin/",
        "/admin/terminals/session/",
        "/admin/terminals/deniedattempt/",
        "/admin/terminals/accessrule/add/",
        "/admin/auth/user/add/",
    ]
    for path in admin_pages:
        page.goto(f"{url}{path}")
        page.wait_for_load_state("load")
        assert violations(page) == [], path
    assert problems == []
