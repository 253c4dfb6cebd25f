"""The second factor in a real browser: a user of a site with ``REQUIRE_MFA`` logs in, is sent to
enrol, reads the secret off the page as an authenticator app would (the code is computed here
from it), confirms, is shown the recovery codes once, and gets the terminal it asked for.

Headless Chromium (Debian's, tests/fixtures/browser.py) against a Daphne of its own with
``TERMINALS["REQUIRE_MFA"]`` on. Nothing sleeps: every wait is on a condition.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django_otp.oath import totp
from playwright.sync_api import Page, expect

from tests.fixtures.daphne import daphne_environment, run_daphne
from tests.fixtures.users import make_user
from tests.test_browser import ARTIFACTS, PASSWORD, run, track_problems, wait_connected

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def mfa_daphne(kubesim: Any) -> Iterator[Any]:
    """A Daphne whose TERMINALS require a second factor."""
    env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps({"REQUIRE_MFA": True})
    with run_daphne(env) as server:
        yield server


@pytest.fixture
def page(page: Page, mfa_daphne: Any) -> Iterator[Page]:
    """pytest-playwright's page, failing the test on page errors and failed requests."""
    problems = track_problems(page)
    yield page
    assert problems == []


def code_from_secret(secret: str) -> str:
    """What an authenticator app shows for the base32 ``secret`` (30 s, 6 digits, SHA-1)."""
    key = base64.b32decode(secret.replace(" ", "") + "=" * (-len(secret.replace(" ", "")) % 8))
    return f"{totp(key, step=30, digits=6):06d}"


def test_a_user_enrols_from_the_qr_page_and_gets_the_terminal(page: Page, mfa_daphne) -> None:
    make_user("mia", everywhere=True)
    terminal = f"{mfa_daphne.url}/terminals/kubesim/default/web/?container=main"

    # Asking for the terminal: the login form first.
    page.goto(terminal)
    page.get_by_label("Username").press_sequentially("mia")
    page.get_by_label("Password").press_sequentially(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    # No device yet: the enrolment page, with its QR code drawn in the page.
    expect(page).to_have_url(re.compile(r"/terminals/mfa/enrol/\?next="))
    qr = page.locator("figure.mfa-qr svg")
    expect(qr).to_be_visible()
    assert qr.bounding_box()["width"] > 100  # big enough to scan
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "mfa-enrol.png", full_page=True)
    secret = page.locator("#mfa-secret").inner_text()
    assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{1,4})+", secret)
    page.get_by_label("Code", exact=True).press_sequentially(code_from_secret(secret))
    page.get_by_role("button", name="Confirm").click()

    # The recovery codes, shown once, then on to the terminal asked for.
    codes = page.locator("#recovery-codes li")
    expect(codes).to_have_count(10)
    page.screenshot(path=ARTIFACTS / "mfa-recovery-codes.png", full_page=True)
    page.get_by_role("link", name="I have saved them: continue").click()

    expect(page).to_have_url(terminal)
    wait_connected(page)
    page.locator("#terminal .xterm").click()
    assert run(page, "echo $((6 * 7))", "42") == "42"
