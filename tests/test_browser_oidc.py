"""Single sign-on in a real browser through a real OpenID Provider (tests/oidc/provider.mjs).

Chromium → the web shell's "Sign in with Test IdP" → oidc-provider's login page → the callback
→ the portal, which lists only the pods the user's directory groups may open (access rules
granted to ``oidc:ops`` and ``oidc:dev``). Then: a group changed in the directory at the next
sign-in (and the live terminal it ends), logout at the provider, local login off, a forged or
replayed answer, and an ID token that has expired.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from playwright.sync_api import Browser, Page, expect

from tests.fixtures.daphne import Daphne, daphne_environment, run_daphne
from tests.fixtures.oidc_provider import OIDCProvider, run_oidc_provider
from tests.fixtures.users import grant

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

INTERVAL = 1  # REVOCATION_INTERVAL of this module's Daphne, in seconds


@pytest.fixture(scope="module")
def oidc_daphne(
    kubesim: Any, oidc_provider_process: OIDCProvider, django_db_setup: Any, django_db_blocker: Any
) -> Iterator[Daphne]:
    """A Daphne signing in through the test provider, its revocation checked every second."""
    with django_db_blocker.unblock():
        env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps({"REVOCATION_INTERVAL": INTERVAL})
    with run_daphne({**env, **oidc_provider_process.environment()}) as server:
        yield server


@pytest.fixture
def rules() -> None:
    """ops may open the pods of namespace prod, dev those of namespace dev."""
    grant(Group.objects.create(name="oidc:ops"), namespaces="prod", name="ops in prod")
    grant(Group.objects.create(name="oidc:dev"), namespaces="dev", name="dev in dev")


def sign_in(page: Page, url: str, username: str, password: str) -> None:
    """From the web shell's login page through the provider's login form."""
    page.goto(f"{url}/accounts/login/")
    page.get_by_role("button", name="Sign in with Test IdP").click()
    expect(page.get_by_role("heading")).to_have_text("Sign in to the test identity provider")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def pods_listed(page: Page) -> set[str]:
    """namespace/pod of every row of the portal."""
    expect(page.get_by_role("heading", name="Pods")).to_be_visible()
    rows = page.locator("tr.pod").all()
    return {
        f"{row.locator('td').nth(0).inner_text()}/{row.locator('td.name').inner_text()}"
        for row in rows
    }


def login_session(page: Page) -> dict[str, Any]:
    """The Django login session of this browser (its sessionid cookie)."""
    cookie = next(c for c in page.context.cookies() if c["name"] == "sessionid")
    return dict(SessionStore(cookie["value"]).load())


def test_each_user_signs_in_and_sees_the_pods_of_their_groups(
    browser: Browser, oidc_daphne: Daphne, oidc_provider: OIDCProvider, rules: None
) -> None:
    olga = browser.new_page()
    sign_in(olga, oidc_daphne.url, "olga", "olga-pw")
    expect(olga).to_have_url(f"{oidc_daphne.url}/")
    assert pods_listed(olga) == {"prod/db"}
    expect(olga.locator(".account .who")).to_have_text("olga")

    diego = browser.new_page()  # another browser context: another person
    sign_in(diego, oidc_daphne.url, "diego", "diego-pw")
    assert pods_listed(diego) == {"dev/api"}

    user = get_user_model().objects.get(username="olga")
    assert set(user.groups.values_list("name", flat=True)) == {"oidc:ops", "oidc:staff-wide"}
    assert user.email == "olga@example.test" and not user.has_usable_password()
    # What the provider said of each authentication, for the second factor's check.
    assert login_session(olga)["oidc_amr"] == ["pwd"]
    assert login_session(diego)["oidc_amr"] == ["pwd", "otp"]
    olga.context.close()
    diego.context.close()


def test_a_group_changed_in_the_directory_counts_at_the_next_sign_in_and_ends_the_terminal(
    page: Page, oidc_daphne: Daphne, oidc_provider: OIDCProvider, rules: None
) -> None:
    sign_in(page, oidc_daphne.url, "olga", "olga-pw")
    page.locator("tr.pod", has_text="db").get_by_role("link", name="main").click()
    page.wait_for_function('window.terminalApp?.state === "connected"')

    # The directory moves olga from ops to dev; nothing changes here until she signs in again.
    oidc_provider.set_user("olga", groups=["dev"])
    portal = page.context.new_page()
    portal.goto(f"{oidc_daphne.url}/accounts/login/")
    # The provider still knows her (single sign-on): straight back, no password asked.
    portal.get_by_role("button", name="Sign in with Test IdP").click()
    expect(portal).to_have_url(f"{oidc_daphne.url}/")
    assert pods_listed(portal) == {"dev/api"}

    # The terminal she may no longer have ends through the revoker, with the reason.
    expect(page.locator("#terminal-ended-reason")).to_contain_text(
        "was revoked", timeout=(INTERVAL + 10) * 1000
    )


def test_logging_out_ends_the_session_at_the_provider_too(
    page: Page, oidc_daphne: Daphne, oidc_provider: OIDCProvider, rules: None
) -> None:
    sign_in(page, oidc_daphne.url, "diego", "diego-pw")
    expect(page).to_have_url(f"{oidc_daphne.url}/")
    page.get_by_role("button", name="Log out").click()
    # oidc-provider asks before it ends its session (RP-initiated logout).
    page.get_by_role("button", name=re.compile("sign me out", re.I)).click()
    expect(page).to_have_url(re.compile(re.escape(f"{oidc_daphne.url}/accounts/login/")))
    expect(page.get_by_text("You have logged out.")).to_be_visible()
    # Signing in again asks for the password: the provider's session is gone too.
    page.get_by_role("button", name="Sign in with Test IdP").click()
    expect(page.get_by_label("Password")).to_be_visible()


def test_with_local_login_off_the_page_offers_only_the_provider(
    page: Page, kubesim: Any, oidc_provider: OIDCProvider, rules: None
) -> None:
    env = {**daphne_environment(kubesim), **oidc_provider.environment(WEBSHELL_LOCAL_LOGIN="0")}
    with run_daphne(env) as server:
        page.goto(f"{server.url}/accounts/login/")
        expect(page.get_by_role("button", name="Sign in with Test IdP")).to_be_focused()
        expect(page.get_by_label("Password")).to_have_count(0)
        page.goto(f"{server.url}/admin/")
        expect(page).to_have_url(re.compile(r"/accounts/login/\?next="))
        sign_in(page, server.url, "olga", "olga-pw")
        assert pods_listed(page) == {"prod/db"}


def test_a_forged_state_is_refused_and_nobody_is_logged_in(
    page: Page, oidc_daphne: Daphne, oidc_provider: OIDCProvider
) -> None:
    # The browser has a sign-in under way; an answer to another one arrives (login CSRF: an
    # attacker's code pushed into the victim's browser). Playwright cannot rewrite a redirect's
    # target, so the forged answer is a navigation of its own.
    page.goto(f"{oidc_daphne.url}/accounts/login/")
    page.get_by_role("button", name="Sign in with Test IdP").click()
    expect(page.get_by_label("Password")).to_be_visible()
    page.goto(f"{oidc_daphne.url}/oidc/callback/?code=attackers-code&state=attackers-state")
    expect(page).to_have_url(f"{oidc_daphne.url}/accounts/login/")
    expect(page.get_by_text("state does not match")).to_be_visible()
    page.goto(f"{oidc_daphne.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))


def test_a_replayed_answer_is_refused_and_nobody_is_logged_in(
    browser: Browser, oidc_daphne: Daphne, oidc_provider: OIDCProvider
) -> None:
    victim = browser.new_page()
    answers: list[str] = []
    victim.on("request", lambda r: answers.append(r.url) if "/oidc/callback/" in r.url else None)
    sign_in(victim, oidc_daphne.url, "diego", "diego-pw")
    expect(victim).to_have_url(f"{oidc_daphne.url}/")
    assert len(answers) == 1

    # Someone who got hold of the callback URL (a log, a referrer) replays it.
    attacker = browser.new_page()
    attacker.goto(answers[0])
    expect(attacker).to_have_url(f"{oidc_daphne.url}/accounts/login/")
    expect(attacker.get_by_text("state does not match")).to_be_visible()
    attacker.goto(f"{oidc_daphne.url}/")
    expect(attacker).to_have_url(re.compile(r"/accounts/login/"))
    victim.context.close()
    attacker.context.close()


def test_an_expired_id_token_is_refused(page: Page, kubesim: Any, django_db_blocker: Any) -> None:
    # A provider whose clock is 15 minutes behind: its 5-minute ID tokens are already expired.
    with run_oidc_provider(clock_offset=-900) as late:
        with run_daphne({**daphne_environment(kubesim), **late.environment()}) as server:
            sign_in(page, server.url, "olga", "olga-pw")
            expect(page).to_have_url(f"{server.url}/accounts/login/")
            expect(page.get_by_text("ID token has expired")).to_be_visible()
            page.goto(f"{server.url}/")
            expect(page).to_have_url(re.compile(r"/accounts/login/"))
    assert not get_user_model().objects.filter(username="olga").exists()
