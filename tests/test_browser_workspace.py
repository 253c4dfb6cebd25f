"""The workspace in a real browser: the pods' tree beside terminals in tabs.

Each tab is its own session on its own xterm.js; the tests read every tab's screen through
``workspaceApp.tabs[i].screenLines()`` (xterm.js's buffer API) and the records in the store.

``WEBSHELL_SCREENSHOT=1`` also writes docs/screenshots/workspace.png (the README's picture).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Dialog, Locator, Page, expect

from terminals.models import Session
from tests.test_browser import ARTIFACTS, ROOT, log_in_with_cookie, track_problems
from tests.test_resume import resuming_daphne

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WORKSPACE = "/terminals/workspace/"
TARGET = "kubesim / default / "  # a tab's title starts with its target
SCREENSHOTS = ROOT / "docs" / "screenshots"

# Every line of a tab's buffer, scrollback included.
TAB_LINES = """(name) => {
  const term = workspaceApp.tab(name).term, buffer = term.buffer.active, lines = [];
  for (let y = 0; y < buffer.length; y++) {
    lines.push(buffer.getLine(y)?.translateToString(true) ?? "");
  }
  return lines;
}"""


@pytest.fixture
def page(page: Page) -> Iterator[Page]:
    """pytest-playwright's page, failing the test on page errors and failed requests."""
    problems = track_problems(page)
    yield page
    assert problems == []


@pytest.fixture
def resuming(kubesim: Any) -> Iterator[Any]:
    """A Daphne that keeps a session whose browser went away for 60 s, as deployed."""
    with resuming_daphne(kubesim) as server:
        yield server


def open_workspace(page: Page, url: str, username: str = "wes") -> None:
    log_in_with_cookie(page, url, username)
    page.goto(url + WORKSPACE)
    page.wait_for_function("window.workspaceApp?.ready === true")


def tab(page: Page, name: str) -> Locator:
    """The tab whose target is ``name`` ("pod/container")."""
    return page.get_by_role("tab").filter(has=page.locator(".ws-tab-name", has_text=name))


def open_tab(page: Page, pod: str) -> str:
    """Click ``pod`` in the tree, wait for its tab's session; return its session id."""
    page.locator(".ws-tree button.ws-pod-name", has_text=pod).click()
    return wait_tab_connected(page, f"{pod}/main")


def wait_tab_connected(page: Page, name: str) -> str:
    handle = page.wait_for_function(
        """(name) => { const tab = workspaceApp.tab(name);
                       return tab?.state === "connected" && tab.session; }""",
        arg=name,
    )
    return str(handle.json_value())


def panel(page: Page, name: str) -> Locator:
    """The tab panel of the (first) tab on ``name``."""
    return page.locator(f"#{tab(page, name).first.get_attribute('aria-controls')}")


def size(page: Page, name: str) -> tuple[int, int]:
    """(cols, rows) of the tab's terminal."""
    cols, rows = page.evaluate(
        "(name) => [workspaceApp.tab(name).term.cols, workspaceApp.tab(name).term.rows]", name
    )
    return int(cols), int(rows)


def tab_lines(page: Page, name: str) -> list[str]:
    return list(page.evaluate(TAB_LINES, name))


def wait_line(page: Page, name: str, line: str) -> None:
    """Wait until a whole line of tab ``name``'s buffer is ``line``."""
    page.wait_for_function(
        f"([name, line]) => ({TAB_LINES})(name).includes(line)", arg=[name, line]
    )


def type_line(page: Page, text: str) -> None:
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def ended_record(session: str, timeout: float = 20) -> Session:
    """The record once another process (Daphne) has written its end."""
    deadline = time.monotonic() + timeout
    while (record := Session.objects.get(pk=session)).ended_at is None:
        assert time.monotonic() < deadline, f"session {session} has not ended"
        time.sleep(0.05)  # the store has nothing to wait on: poll it
    return record


def test_tabs_open_type_switch_by_keyboard_and_close(page: Page, daphne: Any) -> None:
    open_workspace(page, daphne.url)
    expect(page.locator("#ws-empty")).to_be_visible()

    web = open_tab(page, "web")
    alpine = open_tab(page, "alpine")
    assert web != alpine
    # Each tab names its target and its state; the dot's colour follows the state.
    expect(tab(page, "web/main")).to_have_accessible_name("web/main connected")
    expect(tab(page, "alpine/main")).to_have_attribute("aria-selected", "true")
    expect(tab(page, "web/main")).to_have_attribute("aria-selected", "false")
    expect(tab(page, "web/main")).to_have_attribute("title", f"{TARGET}web / main · connected")
    dot = page.locator(".ws-tab[data-state='connected'] .ws-dot").first
    assert dot.evaluate("(dot) => getComputedStyle(dot).backgroundColor") == "rgb(63, 185, 80)"
    expect(page.locator("#ws-empty")).to_be_hidden()
    expect(page).to_have_title("alpine/main · Workspace · webshell")

    # The new tab has the keyboard: what is typed goes to its session only.
    type_line(page, "echo alpine-$((6*7))")
    wait_line(page, "alpine/main", "alpine-42")
    # Output keeps coming to a tab in the background, drawn into its own terminal.
    type_line(page, "sleep 1; echo later-$((2*3))")

    # The keyboard: the selected tab, then the arrows move (and wrap), Enter goes in.
    tab(page, "alpine/main").focus()
    page.keyboard.press("ArrowLeft")
    expect(tab(page, "web/main")).to_be_focused()
    expect(tab(page, "web/main")).to_have_attribute("aria-selected", "true")
    expect(panel(page, "web/main")).to_be_visible()
    expect(panel(page, "alpine/main")).to_be_hidden()
    page.keyboard.press("ArrowLeft")
    expect(tab(page, "alpine/main")).to_be_focused()
    page.keyboard.press("Home")
    expect(tab(page, "web/main")).to_be_focused()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.classList.contains('xterm-helper-textarea')")
    type_line(page, "echo web-$((5*5))")
    wait_line(page, "web/main", "web-25")
    wait_line(page, "alpine/main", "later-6")  # drawn while hidden
    assert "web-25" not in tab_lines(page, "alpine/main")
    assert "alpine-42" not in tab_lines(page, "web/main")
    assert "later-6" not in tab_lines(page, "web/main")

    # A tab hidden while the window changed size fits the new size when shown again, and
    # its shell is told.
    size_before = size(page, "alpine/main")
    page.set_viewport_size({"width": 1000, "height": 560})
    page.wait_for_function(
        "(cols) => workspaceApp.tab('web/main').term.cols !== cols", arg=size_before[0]
    )
    tab(page, "alpine/main").click()
    page.wait_for_function(
        """() => { const a = workspaceApp.tab('alpine/main').term;
                   const w = workspaceApp.tab('web/main').term;
                   return a.cols === w.cols && a.rows === w.rows; }"""
    )
    cols, rows = size(page, "alpine/main")
    assert (cols, rows) != size_before
    type_line(page, "stty size")
    wait_line(page, "alpine/main", f"{rows} {cols}")

    # Closing a live tab asks first: keeping it open changes nothing.
    tab(page, "alpine/main").focus()
    page.keyboard.press("Delete")
    dialog = page.locator("#ws-close-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Close alpine/main?")
    dialog.get_by_role("button", name="Keep it open").click()
    expect(dialog).to_be_hidden()
    expect(tab(page, "alpine/main")).to_be_visible()
    assert Session.objects.get(pk=alpine).ended_at is None

    # Closed for good (its close button, confirmed): its session ends as the browser closed it.
    page.get_by_role("button", name="Close alpine/main").click()
    expect(dialog).to_contain_text("Close alpine/main?")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "workspace-close-dialog.png")
    dialog.get_by_role("button", name="Close the terminal").click()
    expect(tab(page, "alpine/main")).to_have_count(0)
    record = ended_record(alpine)
    assert record.end_reason == Session.EndReason.CLIENT_CLOSED
    # The other tab is shown, selected, and goes on.
    expect(tab(page, "web/main")).to_have_attribute("aria-selected", "true")
    expect(tab(page, "web/main")).to_be_focused()
    assert Session.objects.get(pk=web).ended_at is None
    page.keyboard.press("Enter")
    type_line(page, "echo still-$((6*7))")
    wait_line(page, "web/main", "still-42")

    # A tab whose process exited says so, and closes without asking.
    type_line(page, "exit 3")
    expect(tab(page, "web/main")).to_have_accessible_name("web/main ended")
    expect(panel(page, "web/main").locator(".ended")).to_contain_text(
        "The process exited with code 3."
    )
    assert ended_record(web).exit_code == 3
    page.screenshot(path=ARTIFACTS / "workspace-ended.png")
    # "New session" starts another in the same tab, on a clean screen.
    panel(page, "web/main").get_by_role("button", name="New session").click()
    page.wait_for_function(
        """(old) => { const tab = workspaceApp.tab("web/main");
                      return tab.state === "connected" && tab.session !== old; }""",
        arg=web,
    )
    assert "still-42" not in tab_lines(page, "web/main")
    type_line(page, "exit")
    expect(tab(page, "web/main")).to_have_accessible_name("web/main ended")
    page.get_by_role("button", name="Close web/main").click()
    expect(page.get_by_role("tab")).to_have_count(0)
    expect(page.locator("#ws-empty")).to_be_visible()


def test_a_pods_containers_each_open_a_tab_and_the_filter_narrows_the_tree(
    page: Page, daphne: Any
) -> None:
    open_workspace(page, daphne.url)
    tree = page.locator(".ws-tree")
    pods = tree.locator(".ws-pod")
    names = [name.strip() for name in tree.locator(".ws-pod-name").all_inner_texts()]
    assert {"web", "alpine", "multi", "done", "api", "db"} <= set(names)

    page.locator("#ws-filter").press_sequentially("multi side")
    expect(pods.filter(visible=True)).to_have_count(1)
    expect(tree.locator(".ws-pod", has_text="multi")).to_be_visible()
    expect(tree.locator(".ws-namespace[data-namespace='prod']")).to_be_hidden()
    expect(tree.locator(".ws-namespace[data-namespace='default']")).to_be_visible()
    expect(page.locator("#ws-no-match")).to_be_hidden()

    tree.get_by_role("button", name="sidecar").click()
    wait_tab_connected(page, "multi/sidecar")
    expect(tab(page, "multi/sidecar")).to_have_attribute(
        "title", f"{TARGET}multi / sidecar · connected"
    )

    page.locator("#ws-filter").fill("nothing-like-this")
    expect(pods.filter(visible=True)).to_have_count(0)
    expect(page.locator("#ws-no-match")).to_be_visible()
    page.locator("#ws-filter").fill("")
    expect(pods.filter(visible=False)).to_have_count(0)
    # The tree's filter does not touch the tabs.
    expect(tab(page, "multi/sidecar")).to_be_visible()


def test_a_reload_warns_then_resumes_every_tab_with_its_screen(page: Page, resuming: Any) -> None:
    open_workspace(page, resuming.url)
    web = open_tab(page, "web")
    type_line(page, "cd /tmp && echo web-kept-$((6*7))")
    wait_line(page, "web/main", "web-kept-42")
    # A second tab on the same pod: a session (and a resume token) of its own.
    second = page.evaluate(
        """() => workspaceApp.open({cluster: "kubesim", namespace: "default", pod: "web",
                                    container: "main"}).then((tab) => tab.id)"""
    )
    page.wait_for_function(
        "(id) => workspaceApp.tabs.find((tab) => tab.id === id)?.state === 'connected'", arg=second
    )
    sessions = page.evaluate("workspaceApp.tabs.map((tab) => tab.session)")
    assert len(sessions) == 2 and sessions[0] == web and sessions[1] != web
    type_line(page, "echo second-$((6*7))")
    page.wait_for_function(
        """(line) => workspaceApp.tabs[1].screenLines().includes(line)""", arg="second-42"
    )
    assert "second-42" not in page.evaluate("workspaceApp.tabs[0].screenLines()")
    tab(page, "web/main").first.click()  # the first tab shown when the page goes

    # The page warns before it goes while tabs are live; accepted, it reloads.
    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.type)
        dialog.accept()

    page.on("dialog", accept)
    page.reload()
    assert dialogs == ["beforeunload"]
    page.wait_for_function("window.workspaceApp?.ready === true")
    page.wait_for_function(
        """workspaceApp.tabs.length === 2
           && workspaceApp.tabs.every((tab) => tab.state === 'connected')"""
    )
    # The same sessions, in the same tabs, with their screens; the shown one is shown again.
    assert page.evaluate("workspaceApp.tabs.map((tab) => tab.session)") == sessions
    assert page.evaluate("workspaceApp.active.session") == web
    expect(page.locator(".ws-panel:not([hidden]) .state")).to_contain_text("reconnected")
    page.wait_for_function("() => workspaceApp.tabs[0].screenLines().includes('web-kept-42')")
    page.wait_for_function("() => workspaceApp.tabs[1].screenLines().includes('second-42')")
    # The same shell: its working directory is kept.
    page.keyboard.type("pwd")
    page.keyboard.press("Enter")
    wait_line(page, "web/main", "/tmp")
    for session in sessions:
        assert Session.objects.get(pk=session).ended_at is None
    page.remove_listener("dialog", accept)
    page.on("dialog", lambda dialog: dialog.accept())  # leaving at the end of the test


@pytest.mark.skipif(
    os.environ.get("WEBSHELL_SCREENSHOT") != "1",
    reason="set WEBSHELL_SCREENSHOT=1 to rewrite docs/screenshots/workspace.png",
)
def test_readme_screenshot(page: Page, daphne: Any) -> None:
    """docs/screenshots/workspace.png: three tabs, one of them shown, beside the tree."""
    page.set_viewport_size({"width": 1280, "height": 720})
    open_workspace(page, daphne.url, "ada")
    open_tab(page, "api")
    type_line(page, "echo $APP_ENV")
    wait_line(page, "api/main", "dev")
    open_tab(page, "alpine")
    open_tab(page, "web")
    type_line(page, 'echo "Hello from $HOSTNAME"')
    wait_line(page, "web/main", "Hello from web")
    type_line(page, "uname -sr")
    page.wait_for_function(
        "() => workspaceApp.tab('web/main').screenLines().some((line) => line.startsWith('Linux '))"
    )
    page.evaluate("document.activeElement.blur()")  # no focus ring, a steady cursor
    page.mouse.move(900, 600)  # no hover on the tree
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "workspace.png")
    page.on("dialog", lambda dialog: dialog.accept())  # leaving at the end of the test


def test_a_tab_refused_for_a_stale_authentication_offers_to_confirm_it(
    page: Page, daphne: Any
) -> None:
    from django.contrib.sessions.backends.db import SessionStore

    from terminals import mfa
    from tests.fixtures.users import grant, make_user, session_cookie

    user = make_user("stella")
    grant(user, name="prod, fresh", namespaces="prod", fresh_auth_minutes=10)
    cookie = session_cookie(user)
    stale = SessionStore(session_key=cookie)
    stale[mfa.AUTH_AT] = time.time() - 11 * 60  # the login was 11 minutes ago
    stale.save()
    page.context.add_cookies([{"name": "sessionid", "value": cookie, "url": daphne.url}])
    page.goto(daphne.url + WORKSPACE)
    page.wait_for_function("window.workspaceApp?.ready === true")
    page.locator(".ws-tree button.ws-pod-name", has_text="db").click()
    confirm = panel(page, "db/main").locator(".ws-confirm")
    expect(confirm).to_be_visible()
    expect(panel(page, "db/main").locator(".ended-reason")).to_contain_text("10 minutes")
    confirm.click()
    expect(page).to_have_url(re.compile(r"/terminals/reauth/\?next=%2Fterminals%2Fworkspace%2F$"))
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name=re.compile("Confirm|Continue|Open", re.I)).click()
    expect(page).to_have_url(re.compile(r"/terminals/workspace/$"))
    page.wait_for_function("window.workspaceApp?.ready === true")
    page.locator(".ws-tree button.ws-pod-name", has_text="db").click()
    wait_tab_connected(page, "db/main")
