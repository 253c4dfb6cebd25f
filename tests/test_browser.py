"""The terminal page in a real browser: login form → portal → xterm.js → Daphne → kubesim → bash.

Headless Chromium (Debian's, see tests/fixtures/browser.py) drives the pages a user sees. The
terminal's screen is read through xterm.js's buffer API (``terminalApp.screenLines()``), which
works with the WebGL and the DOM renderer alike. Nothing sleeps: every wait is on a condition.

``WEBSHELL_SCREENSHOT=1`` also rewrites docs/screenshot.png (the README's picture).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.fixtures.daphne import daphne_environment, run_daphne
from tests.fixtures.users import make_user, session_cookie

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "pw-for-tests"  # what tests.fixtures.users.make_user sets
STDIN_CHUNK = 16 * 1024  # what terminal.js promises to stay under

# Every line of the terminal's buffer, scrollback included (screenLines() has only the screen).
ALL_LINES = """() => {
  const buffer = terminalApp.term.buffer.active, lines = [];
  for (let y = 0; y < buffer.length; y++) {
    lines.push(buffer.getLine(y)?.translateToString(true) ?? "");
  }
  return lines;
}"""


@pytest.fixture
def page(page: Page, daphne) -> Iterator[Page]:
    """pytest-playwright's page, failing the test on page errors and failed requests."""
    problems = track_problems(page)
    yield page
    assert problems == []


def track_problems(page: Page) -> list[str]:
    """The page errors and failed requests of ``page``, as they come (the browser tests of
    every page fail on them)."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "response",
        lambda response: (
            problems.append(f"HTTP {response.status}: {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico")
            else None
        ),
    )
    return problems


def staff_user(username: str) -> Any:
    """A staff user whom an access rule lets open every pod's shells."""
    return make_user(username, everywhere=True, is_staff=True)


def log_in_with_cookie(page: Page, url: str, username: str) -> None:
    """Skip the login form (the first test goes through it): put a session cookie in place."""
    cookie = session_cookie(staff_user(username))
    page.context.add_cookies([{"name": "sessionid", "value": cookie, "url": url}])


def wait_connected(page: Page, previous_session: str | None = None) -> str:
    """Wait for ``ready`` (a session other than ``previous_session``); return the session id."""
    page.wait_for_function(
        """(previous) => window.terminalApp?.state === "connected"
                         && terminalApp.session && terminalApp.session !== previous""",
        arg=previous_session,
    )
    return page.evaluate("terminalApp.session")


def matching_lines(page: Page, pattern: str) -> list[str]:
    return [line for line in page.evaluate(ALL_LINES) if re.fullmatch(pattern, line)]


def run(page: Page, command: str, pattern: str, **wait: Any) -> str:
    """Type ``command`` + Enter and wait for a new buffer line matching ``pattern`` (a whole-line
    regex that the typed command line itself cannot match); return that line. ``wait`` goes to
    ``wait_for_function`` (timeout, polling)."""
    before = len(matching_lines(page, pattern))
    page.keyboard.type(command)
    page.keyboard.press("Enter")
    handle = page.wait_for_function(
        f"""([pattern, before]) => {{
          const regex = new RegExp("^(?:" + pattern + ")$");
          const found = ({ALL_LINES})().filter((line) => regex.test(line));
          return found.length > before && found[found.length - 1];
        }}""",
        arg=[pattern, before],
        **wait,
    )
    return handle.json_value()


def screen_shows(page: Page, text: str) -> bool:
    return text in page.evaluate("terminalApp.screenLines()")


def test_log_in_open_a_terminal_type_resize_exit_and_start_again(page: Page, daphne) -> None:
    staff_user("sam")

    # The real login form.
    page.goto(f"{daphne.url}/accounts/login/")
    page.get_by_label("Username").press_sequentially("sam")
    page.get_by_label("Password").press_sequentially(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    # The portal lists pod web; the filter hides the rows that do not match.
    expect(page).to_have_url(f"{daphne.url}/")
    page.wait_for_load_state()  # portal.js listens to the filter box from then on
    rows = page.locator("tr.pod")
    web = rows.filter(has=page.locator("td.name", has_text=re.compile(r"^web$")))
    alpine = rows.filter(has=page.locator("td.name", has_text=re.compile(r"^alpine$")))
    expect(web).to_be_visible()
    expect(alpine).to_be_visible()
    page.locator("#pod-filter").press_sequentially("web")
    expect(alpine).to_be_hidden()
    expect(web).to_be_visible()
    for row in rows.all():
        if row.locator("td.name").inner_text() != "web":
            expect(row).to_be_hidden()
    web.locator("a.open-terminal", has_text="main").click()

    # The terminal page connects and shows its session id.
    expect(page).to_have_url(re.compile(r"/terminals/kubesim/default/web/\?container=main$"))
    session = wait_connected(page)
    expect(page.locator("#terminal-state")).to_have_attribute("data-state", "connected")
    # The header shows the id's first 8 characters, whole (as git shows a commit); the full id
    # is its tooltip and is on "My sessions".
    session_label = page.locator("#terminal-session")
    expect(session_label).to_have_text(session[:8])
    expect(session_label).to_have_attribute("title", f"session {session}")
    assert session_label.evaluate("(label) => label.scrollWidth <= label.clientWidth")

    page.locator("#terminal .xterm").click()  # focus, as a user would
    page.keyboard.type("echo hello")
    page.keyboard.press("Enter")
    # The output line, not just the echo of what was typed.
    page.wait_for_function("terminalApp.screenLines().some((line) => line === 'hello')")

    # The shell's size is the terminal's size, before and after the window changes.
    rows_cols = r"\d+ \d+"
    size = run(page, "stty size", rows_cols)
    term_size = page.evaluate("[terminalApp.term.rows, terminalApp.term.cols]")
    assert size == f"{term_size[0]} {term_size[1]}"

    page.set_viewport_size({"width": 900, "height": 520})
    page.wait_for_function(
        "([rows, cols]) => terminalApp.term.rows !== rows && terminalApp.term.cols !== cols",
        arg=term_size,
    )
    new_term_size = page.evaluate("[terminalApp.term.rows, terminalApp.term.cols]")
    new_size = run(page, "stty size", rows_cols)
    assert new_size == f"{new_term_size[0]} {new_term_size[1]}"
    assert new_size != size

    assert screen_shows(page, "hello") and screen_shows(page, new_size)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "terminal.png")

    # The process ends: the page says how, and offers a new session.
    page.keyboard.type("exit 7")
    page.keyboard.press("Enter")
    ended = page.locator("#terminal-ended")
    expect(ended).to_be_visible()
    expect(ended).to_contain_text("The process exited with code 7.")
    expect(page.locator("#terminal-state")).to_have_attribute("data-state", "ended")
    restart = ended.get_by_role("button", name="New session")
    expect(restart).to_be_visible()
    expect(restart).to_be_focused()
    page.screenshot(path=ARTIFACTS / "terminal-ended.png")
    restart.click()

    new_session = wait_connected(page, previous_session=session)
    assert new_session != session
    expect(page.locator("#terminal-session")).to_have_text(new_session[:8])
    expect(page.locator("#terminal-ended")).to_be_hidden()


def test_a_large_paste_arrives_whole_in_16_kib_frames(page: Page, daphne) -> None:
    sent_frames: list[int] = []

    def watch(ws: Any) -> None:
        ws.on(
            "framesent",
            lambda payload: (
                sent_frames.append(len(payload)) if isinstance(payload, bytes) else None
            ),
        )

    page.on("websocket", watch)
    log_in_with_cookie(page, daphne.url, "pat")
    page.goto(f"{daphne.url}/terminals/kubesim/default/web/?container=main")
    wait_connected(page)
    page.locator("#terminal .xterm").click()

    run(page, "stty -echo; echo echo-$((6*7))", "echo-42")
    # 2048 lines of 100 bytes: lines stay far below the tty's 4 KiB canonical-mode limit.
    line = "x" * 99 + "\n"
    data = line * 2048
    assert len(data) == 200 * 1024
    # Paste only once wc reads: bytes that reach the tty while readline still has it in raw
    # mode keep their \r (no icrnl), so they would not end lines in wc's canonical mode.
    run(page, "echo ready-$((6*7)); wc -c", "ready-42")
    assert page.evaluate("terminalApp.term.modes.bracketedPasteMode") is False
    sent_frames.clear()
    page.evaluate("(data) => terminalApp.term.paste(data)", data)
    page.keyboard.press("Control+d")  # end of input, at the start of a line
    count = page.wait_for_function(
        f"""() => ({ALL_LINES})().find((line) => /^\\s*\\d{{4,}}\\s*$/.test(line))"""
    ).json_value()
    assert int(count) == len(data)

    # The page cut the paste into frames the server accepts.
    assert sum(sent_frames) >= len(data)
    assert max(sent_frames) <= STDIN_CHUNK
    assert len(sent_frames) >= len(data) // STDIN_CHUNK
    # And the shell is still there.
    run(page, "stty echo; echo still-$((6*7))", "still-42")
    assert page.evaluate("terminalApp.state") == "connected"


@pytest.mark.skipif(
    os.environ.get("WEBSHELL_SCREENSHOT") != "1",
    reason="set WEBSHELL_SCREENSHOT=1 to rewrite docs/screenshot.png",
)
def test_readme_screenshot(page: Page, daphne, kubesim) -> None:
    """docs/screenshot.png: a terminal after a few everyday commands."""
    workdir = kubesim.state_dir / "containers" / "default" / "web" / "main"
    workdir.mkdir(parents=True, exist_ok=True)
    props = {
        "app.py": "print('hello')\n",
        "requirements.txt": "django>=5.2\n",
        "README.md": "# web\n",
    }
    for name, text in props.items():
        (workdir / name).write_text(text)
    (workdir / "static").mkdir(exist_ok=True)
    try:
        page.set_viewport_size({"width": 1100, "height": 650})
        log_in_with_cookie(page, daphne.url, "ada")
        page.goto(f"{daphne.url}/terminals/kubesim/default/web/?container=main")
        wait_connected(page)
        page.locator("#terminal .xterm").click()
        run(page, "ls --color=auto", r".*requirements\.txt.*")
        run(page, 'echo "Hello from $HOSTNAME"', "Hello from web")
        run(page, "stty size", r"\d+ \d+")
        run(page, "uname -a", r"Linux .*")
        page.evaluate("document.activeElement.blur()")  # no focus ring, a steady cursor
        (ROOT / "docs").mkdir(exist_ok=True)
        page.screenshot(path=ROOT / "docs" / "screenshot.png")
    finally:
        for name in props:
            (workdir / name).unlink(missing_ok=True)
        (workdir / "static").rmdir()


def test_an_auditor_replays_a_session_and_jumps_to_a_command(page: Page, daphne) -> None:
    from django.contrib.auth.models import Permission

    log_in_with_cookie(page, daphne.url, "sam")
    page.goto(f"{daphne.url}/terminals/kubesim/default/web/?container=main")
    session = wait_connected(page)
    page.evaluate("terminalApp.term.focus()")
    run(page, "echo replay-me-$((6*7))", "replay-me-42")
    run(page, "echo second-$((2*2))", "second-4")
    page.keyboard.type("exit")
    page.keyboard.press("Enter")
    page.wait_for_function("terminalApp.closeCode === 1000")

    auditor = make_user("audrey")
    auditor.user_permissions.add(
        Permission.objects.get(content_type__app_label="terminals", codename="view_session")
    )
    page.context.clear_cookies()
    page.context.add_cookies(
        [{"name": "sessionid", "value": session_cookie(auditor), "url": daphne.url}]
    )
    page.goto(f"{daphne.url}/terminals/sessions/{session}/replay/")
    expect(page.get_by_role("button", name=re.compile("echo replay-me"))).to_be_visible()
    page.wait_for_function("window.replayPlayer !== undefined")
    expect(page.locator(".ap-player")).to_be_visible()
    page.get_by_role("button", name=re.compile("echo second")).click()
    page.wait_for_function("async () => (await replayPlayer.getCurrentTime()) > 0")
    expect(page.locator(".ap-player")).to_contain_text("replay-me-42")
    page.screenshot(path=str(ARTIFACTS / "replay.png"))


def test_an_auditor_watches_a_live_session_and_ends_it(page: Page, daphne, browser) -> None:
    from django.contrib.auth.models import Permission

    log_in_with_cookie(page, daphne.url, "sam")
    page.goto(f"{daphne.url}/terminals/kubesim/default/web/?container=main")
    session = wait_connected(page)
    page.evaluate("terminalApp.term.focus()")
    run(page, "echo before-watch-$((1+1))", "before-watch-2")

    auditor = make_user("audrey")
    auditor.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="terminals", codename__in=["watch_session", "end_session"]
        )
    )
    context = browser.new_context()
    context.add_cookies(
        [{"name": "sessionid", "value": session_cookie(auditor), "url": daphne.url}]
    )
    watch = context.new_page()
    watch.goto(f"{daphne.url}/terminals/sessions/{session}/watch/")
    watch.wait_for_function("window.watchApp?.state === 'connected'")
    watch.wait_for_function("watchApp.screenLines().includes('before-watch-2')")

    run(page, "echo while-watched-$((3+3))", "while-watched-6")
    watch.wait_for_function("watchApp.screenLines().includes('while-watched-6')")
    watch.screenshot(path=str(ARTIFACTS / "watch.png"))

    # "End session" asks first, in a dialog, for a reason (required); Cancel ends nothing.
    dialog = watch.get_by_role("dialog", name="End sam's session?")
    watch.get_by_role("button", name="End session").click()
    expect(dialog).to_be_visible()
    reason = dialog.get_by_role("textbox", name="Reason")
    expect(reason).to_be_focused()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    watch.get_by_role("button", name="End session").click()
    reason.fill("   ")  # "required" lets spaces through; the page (and the server) do not
    dialog.get_by_role("button", name="End", exact=True).click()
    expect(dialog.get_by_role("alert")).to_have_text(
        "Say why you end the session: the reason is required."
    )
    why = "Copying customer records to a laptop"
    reason.fill(why)
    expect(dialog).to_contain_text(f"{len(why)} / 500")
    expect(dialog.get_by_role("alert")).to_be_hidden()
    watch.screenshot(path=str(ARTIFACTS / "watch-end-dialog.png"))
    run(page, "echo not-ended-$((4+4))", "not-ended-8")  # nothing was sent so far
    dialog.get_by_role("button", name="End", exact=True).click()

    # The user is told who ended the session and why; so is the watcher.
    told = f"audrey ended this session: {why}"
    page.wait_for_function("terminalApp.closeCode === 4409")
    expect(page.locator("#terminal-ended")).to_contain_text(told)
    watch.wait_for_function("watchApp.state === 'ended'")
    expect(watch.locator("#watch-ended")).to_contain_text(told)
    expect(dialog).to_be_hidden()
    expect(watch.get_by_role("button", name="End session")).to_be_disabled()
    page.screenshot(path=str(ARTIFACTS / "terminal-ended-by-auditor.png"))
    context.close()


def test_the_user_sees_who_is_watching(page: Page, daphne, browser) -> None:
    """An eye badge in the terminal's header names the watchers; it goes when they leave."""
    from django.contrib.auth.models import Permission

    log_in_with_cookie(page, daphne.url, "sam")
    page.goto(f"{daphne.url}/terminals/kubesim/default/web/?container=main")
    session = wait_connected(page)
    badge = page.locator("#terminal-watchers")
    expect(badge).to_be_hidden()

    auditor = make_user("audrey")
    auditor.user_permissions.add(Permission.objects.get(codename="watch_session"))
    context = browser.new_context()
    context.add_cookies(
        [{"name": "sessionid", "value": session_cookie(auditor), "url": daphne.url}]
    )
    watch = context.new_page()
    watch.goto(f"{daphne.url}/terminals/sessions/{session}/watch/")
    watch.wait_for_function("window.watchApp?.state === 'connected'")

    expect(badge).to_be_visible()
    expect(badge).to_have_text("watched by audrey")
    expect(badge).to_have_attribute("role", "status")  # read out when it changes
    expect(badge).to_have_attribute("title", "Your screen is being watched by audrey.")
    page.screenshot(path=str(ARTIFACTS / "terminal-watched.png"))

    watch.close()  # the watcher says it leaves: the badge goes now, not when its lease lapses
    expect(badge).to_be_hidden(timeout=10_000)
    context.close()


def test_fifty_mebibytes_of_output_do_not_freeze_the_page(page: Page, daphne) -> None:
    log_in_with_cookie(page, daphne.url, "sam")
    page.goto(f"{daphne.url}/terminals/kubesim/default/web/?container=main")
    wait_connected(page)
    page.evaluate("terminalApp.term.focus()")
    # A timer that notes the longest gap between its ticks: how long the page was frozen.
    page.evaluate(
        """() => { window.longestGap = 0; let last = performance.now();
                   window.gapTimer = setInterval(() => { const now = performance.now();
                     longestGap = Math.max(longestGap, now - last); last = now; }, 50); }"""
    )
    # 55 MB; the search runs twice a second, not every frame, to leave the page its time.
    run(page, "seq 1 7000000; echo done-$((5*5))", "done-25", timeout=180_000, polling=500)
    gap = page.evaluate("longestGap")
    assert matching_lines(page, "7000000") == ["7000000"]
    print(f"longest frozen: {gap:.0f} ms")
    assert gap < 1000, f"the page froze for {gap:.0f} ms"


def test_a_server_restart_ends_the_session_and_offers_a_new_one(page: Page, kubesim) -> None:
    """A deploy: SIGTERM to the page's Daphne. The page says why the session ended, with the
    focus on "New session"; the record says the server stopped; Daphne exits by itself."""
    from terminals.models import Session

    with run_daphne(daphne_environment(kubesim)) as server:
        log_in_with_cookie(page, server.url, "sam")
        page.goto(f"{server.url}/terminals/kubesim/default/web/?container=main")
        session = wait_connected(page)
        run(page, "echo up-$((6*7))", "up-42")  # the shell answers: it is ready

        server.process.send_signal(signal.SIGTERM)
        ended = page.locator("#terminal-ended")
        expect(ended).to_be_visible()
        expect(page.locator("#terminal-ended-reason")).to_have_text(
            "The server is restarting. Your session was recorded and ended; open a new one."
        )
        state = page.locator("#terminal-state")
        expect(state).to_have_text("closed")
        expect(state).to_have_attribute("data-state", "error")
        assert page.evaluate("terminalApp.closeCode") == 1012
        expect(ended.get_by_role("button", name="New session")).to_be_focused()
        page.screenshot(path=ARTIFACTS / "terminal-server-restarting.png")

        # Daphne waits for its sessions to end, then exits by itself.
        assert server.process.wait(20) == 0, "".join(server.log)

    record = Session.objects.get(pk=session)
    assert record.end_reason == Session.EndReason.SERVER_STOPPED
    assert record.ended_at is not None


def test_the_header_names_the_container_and_switches_to_another(page: Page, daphne) -> None:
    log_in_with_cookie(page, daphne.url, "cleo")
    page.goto(f"{daphne.url}/terminals/kubesim/default/multi/")  # no container asked for
    first = wait_connected(page)
    expect(page.locator("#terminal-container")).to_have_text("app")  # what the server chose
    switch = page.locator("#terminal-container-switch")
    expect(switch).to_be_visible()
    assert switch.locator("option").all_inner_texts() == ["app", "sidecar"]
    switch.select_option("sidecar")
    expect(page).to_have_url(re.compile(r"/terminals/kubesim/default/multi/\?container=sidecar$"))
    assert wait_connected(page, first) != first
    expect(page.locator("#terminal-container")).to_have_text("sidecar")
    assert page.evaluate("terminalApp.container") == "sidecar"
