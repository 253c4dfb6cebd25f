"""Resuming in a real browser: the page's socket is cut as a network cuts it (a TCP reset
through tests/fixtures/proxy.py, no close frame), and the page is reloaded.

``WEBSHELL_SCREENSHOT=1`` also writes docs/screenshots/resume-*.png (the README's pictures).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from terminals.models import Frame, Resume, Session
from tests.fixtures.proxy import CuttableProxy
from tests.test_browser import ALL_LINES, ROOT, log_in_with_cookie, run, wait_connected
from tests.test_resume import resuming_daphne

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ROOT / "docs" / "screenshots"
TERMINAL = "/terminals/kubesim/default/web/?container=main"


@pytest.fixture
def proxied(kubesim: Any) -> Iterator[CuttableProxy]:
    """A Daphne that keeps detached sessions 60 s, reached through a proxy that can cut."""
    with resuming_daphne(kubesim) as server:
        proxy = CuttableProxy(server.port)
        try:
            yield proxy
        finally:
            proxy.close()


def screenshot(page: Page, name: str) -> None:
    if os.environ.get("WEBSHELL_SCREENSHOT") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / name)


def count_lines(page: Page, text: str) -> int:
    return sum(text in line for line in page.evaluate(ALL_LINES))


def state_text(page: Page) -> str:
    return page.locator("#terminal-state").inner_text()


def a_terminal_typed_into(page: Page, proxied: CuttableProxy) -> str:
    """Ada's terminal through the proxy, a line run in it; its session id."""
    log_in_with_cookie(page, proxied.url, "ada")
    page.goto(proxied.url + TERMINAL)
    session = wait_connected(page)
    page.locator("#terminal .xterm").click()
    run(page, "echo before-$((6*7))", "before-42")
    return session


def stdin_of(session: str) -> bytes:
    """Every stdin byte the session's record holds, in order."""
    frames = Frame.objects.filter(session_id=session, direction="i").order_by("seq")
    return b"".join(frames.values_list("data", flat=True))


def test_a_dropped_connection_reconnects_by_itself_and_keeps_everything(
    page: Page, proxied: CuttableProxy
) -> None:
    page.set_viewport_size({"width": 1100, "height": 650})
    log_in_with_cookie(page, proxied.url, "ada")
    page.goto(proxied.url + TERMINAL)
    session = wait_connected(page)
    page.locator("#terminal .xterm").click()
    run(page, "echo before-$((6*7))", "before-42")
    # Output printed while the network is down, and keystrokes typed meanwhile.
    page.keyboard.type("sleep 2; echo away-$((6*7))")
    page.keyboard.press("Enter")
    # The connection is cut once the shell has the whole line (its echo moved the cursor on):
    # this test is about output; input lost with the connection is the next one's.
    page.wait_for_function(
        """(typed) => { const buffer = terminalApp.term.buffer.active;
                        for (let y = buffer.length - 1; y >= 0; y--) {
                          if (buffer.getLine(y)?.translateToString(true).endsWith(typed))
                            return buffer.baseY + buffer.cursorY > y;
                        }
                        return false; }""",
        arg="sleep 2; echo away-$((6*7))",
    )
    with proxied.down():
        page.wait_for_function("terminalApp.state === 'reconnecting'")
        expect(page.locator("#terminal-state")).to_have_text("reconnecting…")
        page.keyboard.type("echo held-$((6*7))")
        page.keyboard.press("Enter")
        screenshot(page, "resume-reconnecting.png")
    page.wait_for_function("terminalApp.state === 'connected' && terminalApp.resumes === 1")
    assert page.evaluate("terminalApp.session") == session
    assert state_text(page).startswith("reconnected")
    page.wait_for_function(f"({ALL_LINES})().some((line) => line === 'held-42')", timeout=10_000)
    screenshot(page, "resume-reconnected.png")
    # Scrollback kept, output while away and the held line each exactly once.
    assert count_lines(page, "before-42") == 1
    assert sum(line == "away-42" for line in page.evaluate(ALL_LINES)) == 1
    assert sum(line == "held-42" for line in page.evaluate(ALL_LINES)) == 1
    resumes = list(Resume.objects.filter(session_id=session))
    assert len(resumes) >= 1


def test_keystrokes_lost_with_a_dropped_connection_are_sent_again_once(
    page: Page, proxied: CuttableProxy
) -> None:
    session = a_terminal_typed_into(page, proxied)
    line = "echo lost-$((6*7))"
    with proxied.stalled():
        # The page sends each key on its open socket; the network takes it and goes silent.
        page.keyboard.type(line)
        page.keyboard.press("Enter")
        proxied.wait_dropped(7 * (len(line) + 1))  # a masked one-byte frame is 7 bytes
    page.wait_for_function("terminalApp.state === 'connected' && terminalApp.resumes === 1")
    page.wait_for_function(f"({ALL_LINES})().some((line) => line === 'lost-42')", timeout=10_000)
    assert page.evaluate("terminalApp.session") == session
    assert state_text(page).startswith("reconnected")
    run(page, "echo after-$((6*7))", "after-42")
    assert sum(line == "lost-42" for line in page.evaluate(ALL_LINES)) == 1
    # The record has the line once: sent again only what the server never took.
    assert stdin_of(session).count(line.encode() + b"\r") == 1


def test_more_lost_input_than_the_page_keeps_is_not_sent_again_and_the_page_says_so(
    page: Page, proxied: CuttableProxy
) -> None:
    session = a_terminal_typed_into(page, proxied)
    with proxied.stalled():
        # Five pastes of 20,000 bytes: the page keeps the last 64 KiB and more it sent, not all.
        for _ in range(5):
            page.evaluate("(text) => terminalApp.term.paste(text)", "x" * 20_000)
        proxied.wait_dropped(100_000)
    page.wait_for_function("terminalApp.state === 'connected' && terminalApp.resumes === 1")
    expect(page.locator("#terminal-state")).to_have_text(
        "reconnected; input sent as the connection dropped was lost"
    )
    run(page, "echo after-$((6*7))", "after-42")  # nothing half-sent before it
    assert b"x" not in stdin_of(session)


def test_a_reload_resumes_the_same_session_with_its_screen(
    page: Page, proxied: CuttableProxy
) -> None:
    log_in_with_cookie(page, proxied.url, "ada")
    page.goto(proxied.url + TERMINAL)
    session = wait_connected(page)
    page.locator("#terminal .xterm").click()
    run(page, "cd /tmp && echo kept-$((6*7))", "kept-42")
    page.reload()
    assert wait_connected(page) == session
    page.wait_for_function(f"({ALL_LINES})().some((line) => line === 'kept-42')")
    page.locator("#terminal .xterm").click()
    run(page, "pwd", "/tmp")  # the same shell: its working directory is kept
    record = Session.objects.get(pk=session)
    assert record.ended_at is None


def test_a_session_that_cannot_be_resumed_offers_a_new_one(page: Page, kubesim: Any) -> None:
    with resuming_daphne(kubesim, grace=1) as server:
        proxy = CuttableProxy(server.port)
        try:
            log_in_with_cookie(page, proxy.url, "ada")
            page.goto(proxy.url + TERMINAL)
            session = wait_connected(page)
            with proxy.down():
                page.wait_for_function("terminalApp.state === 'reconnecting'")
                # The grace (1 s) runs out while the page cannot reach the server.
                ended = Session.objects.filter(pk=session, ended_at__isnull=False)
                while not ended.exists():
                    page.wait_for_timeout(100)  # the record is written by another process
            ended_box = page.locator("#terminal-ended")
            expect(ended_box).to_be_visible(timeout=20_000)
            expect(page.locator("#terminal-ended-reason")).to_contain_text("cannot be resumed")
            page.locator("#terminal-restart").click()
            assert wait_connected(page, session) != session
        finally:
            proxy.close()


def test_a_resume_refused_for_a_second_factor_keeps_the_session_for_after_it(
    page: Page, kubesim: Any
) -> None:
    """With REQUIRE_MFA, a resume coming with a login session no longer verified is refused
    (mfa_required); the page keeps the session's token, and once the login session is verified
    again, Reconnect brings the same shell back."""
    from django.contrib.sessions.backends.db import SessionStore

    from terminals import mfa
    from tests.test_browser import staff_user
    from tests.test_mfa import login_session, totp_device

    user = staff_user("mia")
    device = totp_device(user)
    login = login_session(user, **{mfa.OTP_DEVICE: device.persistent_id})

    def verified(yes: bool) -> None:
        store = SessionStore(session_key=login.session_key)
        if yes:
            store[mfa.OTP_DEVICE] = device.persistent_id
        else:
            store.pop(mfa.OTP_DEVICE, None)
        store.save()

    with resuming_daphne(kubesim, REQUIRE_MFA=True) as server:
        proxy = CuttableProxy(server.port)
        try:
            page.context.add_cookies(
                [{"name": "sessionid", "value": login.session_key, "url": proxy.url}]
            )
            page.goto(proxy.url + TERMINAL)
            session = wait_connected(page)
            page.locator("#terminal .xterm").click()
            run(page, "cd /tmp && echo mia-$((6*7))", "mia-42")
            with proxy.down():
                page.wait_for_function("terminalApp.state === 'reconnecting'")
                verified(False)  # e.g. the device was removed from the account meanwhile
            expect(page.locator("#terminal-ended-reason")).to_contain_text("second factor")
            reconnect = page.locator("#terminal-reconnect")
            expect(reconnect).to_be_visible()
            assert Session.objects.get(pk=session).ended_at is None  # it waits out its grace
            verified(True)
            reconnect.click()
            page.wait_for_function("terminalApp.state === 'connected' && terminalApp.resumes >= 1")
            assert page.evaluate("terminalApp.session") == session
            page.locator("#terminal .xterm").click()
            run(page, "pwd", "/tmp")  # the same shell
        finally:
            proxy.close()
