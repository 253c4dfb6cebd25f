"""The replay page and My sessions in a real browser (Daphne, kubesim, Debian's Chromium).

Each test records a real session first (a terminal page, a shell in kubesim), then replays it
with asciinema-player. The player's screen is read from its DOM (``.ap-term-text``), its time
from its API; ``window.replayApp`` (replay.js) says whether it plays, and ``remade`` counts
the players made since the page loaded once each is in place.
"""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Page, expect

from tests import test_browser
from tests.test_browser import ARTIFACTS, ROOT, log_in_with_cookie, run, wait_connected

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
page = test_browser.page  # the fixture: pytest-playwright's page, failing on page errors

MIN_FONT_PX = 12  # replay.js: wide recordings are drawn no smaller, and scroll instead
NOW = "replayPlayer.getCurrentTime()"
MARKED = 'button.jump[aria-current="true"]'


def record_session(page: Page, url: str, commands: list[tuple[str, str]]) -> str:
    """Log in as sam, run ``commands`` ((command, output line regex)) in a terminal and exit;
    return the session id. The window is 900 px wide meanwhile (about 100 columns)."""
    page.set_viewport_size({"width": 900, "height": 600})
    log_in_with_cookie(page, url, "sam")
    page.goto(f"{url}/terminals/kubesim/default/web/?container=main")
    session = wait_connected(page)
    page.evaluate("terminalApp.term.focus()")
    for command, pattern in commands:
        run(page, command, pattern)
    page.keyboard.type("exit")
    page.keyboard.press("Enter")
    page.wait_for_function("terminalApp.closeCode === 1000")
    page.set_viewport_size({"width": 1280, "height": 720})
    return session


def open_replay(page: Page, url: str, session: str, query: str = "") -> None:
    page.goto(f"{url}/terminals/sessions/{session}/replay/{query}")
    page.wait_for_function("window.replayApp?.remade === 0")


def remade(page: Page, count: int) -> float:
    """Wait for the ``count``th new player to be in place; return its time."""
    page.wait_for_function("(count) => replayApp.remade === count", arg=count)
    return float(page.evaluate(NOW))


def font_px(page: Page) -> float:
    return float(
        page.evaluate("parseFloat(getComputedStyle(document.querySelector('.ap-term')).fontSize)")
    )


def scrolls_sideways(page: Page) -> bool:
    return bool(
        page.evaluate(
            "(() => { const box = document.querySelector('.replay-screen');"
            " return box.scrollWidth > box.clientWidth; })()"
        )
    )


def test_a_new_speed_goes_on_playing_from_the_same_moment_and_the_command_is_marked(
    page: Page, daphne
) -> None:
    session = record_session(
        page,
        daphne.url,
        [
            ("echo replay-me-$((6*7))", "replay-me-42"),
            ("for i in $(seq 1 10); do echo tick-$i; sleep 0.3; done", "tick-10"),
            ("echo last-$((5*5))", "last-25"),
        ],
    )
    open_replay(page, daphne.url, session)
    screen = page.locator(".ap-term-text")
    marked = page.locator(MARKED)
    expect(marked).to_have_count(0)

    # A jump marks its command; playing on into the next command moves the mark.
    page.get_by_role("button", name=re.compile("echo replay-me")).click()
    expect(marked).to_contain_text("echo replay-me")
    expect(marked).to_contain_text("for i in")
    expect(screen).to_contain_text("tick-3")

    before = float(page.evaluate(NOW))
    page.evaluate("window.previousPlayer = replayPlayer")
    page.get_by_label("Speed").select_option("2")
    after = remade(page, 1)
    assert page.evaluate("replayPlayer !== previousPlayer")
    # The same moment (the old player played on until the change), not 00:00; still playing,
    # on the frame of that moment.
    assert before <= after < before + 1.5, (before, after)
    assert page.evaluate("replayApp.playing") is True
    assert "tick-3" in screen.inner_text()
    page.wait_for_function(f"(after) => {NOW} > after + 0.3", arg=after)
    expect(screen).to_contain_text("last-25")
    expect(marked).to_contain_text("exit")  # the last command, once played to the end

    # A jump back marks the command jumped to.
    page.get_by_role("button", name=re.compile("echo replay-me")).click()
    expect(marked).to_contain_text("echo replay-me")

    # A recording of about 100 columns fills the box, larger than the minimum, and does not
    # scroll.
    assert font_px(page) > MIN_FONT_PX
    assert not scrolls_sideways(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "replay-speed.png")
    if os.environ.get("WEBSHELL_SCREENSHOT") == "1":  # the README's picture
        (ROOT / "docs" / "screenshots").mkdir(parents=True, exist_ok=True)
        page.screenshot(path=ROOT / "docs" / "screenshots" / "replay.png")


def test_a_new_idle_cap_keeps_a_paused_player_on_the_same_frame(page: Page, daphne) -> None:
    session = record_session(
        page,
        daphne.url,
        [
            ("echo replay-me-$((6*7))", "replay-me-42"),
            ("sleep 4; echo after-pause-$((2*3))", "after-pause-6"),
            ("echo last-$((5*5))", "last-25"),
        ],
    )
    # ?command=2 opens the page paused at the third command, under the default 2 s cap.
    open_replay(page, daphne.url, session, "?command=2")
    screen = page.locator(".ap-term-text")
    marked = page.locator(MARKED)
    expect(marked).to_contain_text("echo last")
    expect(screen).to_contain_text("after-pause-6")
    capped = float(page.evaluate(NOW))
    recorded = float(marked.get_attribute("data-offset") or "nan")
    assert recorded - capped > 1.5, "the 4 s pause should play as 2 s"

    # Without a cap, the player's time is the recording's: the same moment is later.
    page.get_by_label("Idle time capped at").select_option("")
    uncapped = remade(page, 1)
    assert uncapped == pytest.approx(recorded, abs=0.01)
    assert page.evaluate("replayApp.playing") is False
    # That moment's frame, not a blank one (the new player draws it a moment after it is made).
    expect(screen).to_contain_text("after-pause-6")
    expect(page.locator(".ap-overlay-start")).to_be_hidden()
    expect(marked).to_contain_text("echo last")

    # A new speed keeps the paused moment too.
    page.get_by_label("Speed").select_option("4")
    assert remade(page, 2) == pytest.approx(uncapped, abs=0.01)
    assert page.evaluate("replayApp.playing") is False
    assert "after-pause-6" in screen.inner_text()
    page.screenshot(path=ARTIFACTS / "replay-paused.png")


def test_a_wide_session_plays_at_a_readable_size_and_scrolls(page: Page, daphne) -> None:
    page.set_viewport_size({"width": 2400, "height": 700})
    log_in_with_cookie(page, daphne.url, "sam")
    page.goto(f"{daphne.url}/terminals/kubesim/default/web/?container=main")
    session = wait_connected(page)
    page.evaluate("terminalApp.term.focus()")
    cols = int(run(page, "stty size", r"\d+ \d+").split()[1])
    assert cols >= 250, f"the terminal has {cols} columns; the test wants a wide one"
    run(page, f"printf 'w%.0s' $(seq 1 {cols - 10}); echo; echo wide-$((6*7))", "wide-42")
    page.keyboard.type("exit")
    page.keyboard.press("Enter")
    page.wait_for_function("terminalApp.closeCode === 1000")

    page.set_viewport_size({"width": 1280, "height": 720})
    open_replay(page, daphne.url, session)
    assert page.locator("#player").get_attribute("data-cols") == str(cols)
    page.get_by_role("button", name=re.compile("printf")).click()
    expect(page.locator(".ap-term-text")).to_contain_text("wide-42")

    # Fitting 250 columns into the box would draw them at about 5 px.
    assert font_px(page) >= MIN_FONT_PX - 0.01
    row_height = page.evaluate(
        "document.querySelector('.ap-term-text .ap-line').getBoundingClientRect().height"
    )
    assert row_height >= MIN_FONT_PX * 1.3, f"a row is {row_height} px high"
    assert scrolls_sideways(page)
    # The page itself does not: only the player's box.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=ARTIFACTS / "replay-wide.png")


def test_my_sessions_shows_a_live_terminal_then_replays_it(page: Page, daphne) -> None:
    log_in_with_cookie(page, daphne.url, "sam")
    page.goto(f"{daphne.url}/terminals/kubesim/default/web/?container=main")
    session = wait_connected(page)
    page.evaluate("terminalApp.term.focus()")
    run(page, "echo mine-$((6*7))", "mine-42")

    # My sessions, from the site's header, in a second tab: the terminal stays open.
    mine = page.context.new_page()
    mine.goto(f"{daphne.url}/")
    mine.get_by_role("link", name="My sessions").click()
    expect(mine).to_have_url(f"{daphne.url}/terminals/sessions/mine/")
    row = mine.locator(f'tr.session[data-session="{session}"]')
    expect(row).to_have_attribute("data-state", "live")
    expect(row).to_contain_text("counts toward your limit")
    expect(row.get_by_role("button", name="End the session on web")).to_be_visible()
    expect(mine.locator("#sessions-in-use")).to_contain_text("1 of 5 live sessions used")
    mine.screenshot(path=ARTIFACTS / "my-sessions.png")

    page.keyboard.type("exit 3")
    page.keyboard.press("Enter")
    page.wait_for_function("terminalApp.closeCode === 1000")

    mine.reload()
    expect(row).to_have_attribute("data-state", "ended")
    expect(row.locator(".end-reason")).to_have_text("process exited")
    expect(row.locator(".exit-code")).to_have_text("3")
    expect(mine.locator("#sessions-in-use")).to_contain_text("0 of 5 live sessions used")
    row.get_by_role("link", name="Replay").click()
    expect(mine).to_have_url(f"{daphne.url}/terminals/sessions/{session}/replay/")
    mine.wait_for_function("window.replayApp?.remade === 0")
    mine.get_by_role("button", name=re.compile("echo mine")).click()
    expect(mine.locator(".ap-term-text")).to_contain_text("mine-42")
    mine.close()
