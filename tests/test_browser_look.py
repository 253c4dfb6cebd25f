"""How the pages look in a real browser, read from their pixels where the buffer cannot tell:
underscores with the DOM renderer, the terminal settings, search feedback, the admin's width.

Every wait is on a condition. Screenshots are decoded here (a small PNG reader, no imaging
library) so a test can say "the underscore has ink", which the buffer API never could.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, BrowserType, Page, expect

from terminals.models import (
    AccessRule,
    AuditPrune,
    DeniedAttempt,
    Server,
    Session,
    TerminalPreference,
)
from tests.fixtures.users import make_user, session_cookie
from tests.test_browser import (
    ARTIFACTS,
    log_in_with_cookie,
    run,
    staff_user,
    track_problems,
    wait_connected,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TERMINAL = "/terminals/kubesim/default/web/?container=main"


@pytest.fixture
def page(page: Page, daphne: Any) -> Iterator[Page]:
    """pytest-playwright's page, failing the test on page errors and failed requests."""
    problems = track_problems(page)
    yield page
    assert problems == []


@pytest.fixture
def no_webgl_browser(
    browser_type: BrowserType, browser_type_launch_args: dict[str, Any]
) -> Iterator[Browser]:
    """A Chromium without WebGL (``--disable-3d-apis``): the terminal falls back to the DOM
    renderer, as it does on machines without a GPU; the watch page always uses it."""
    args = [*browser_type_launch_args.get("args", []), "--disable-3d-apis"]
    browser = browser_type.launch(**{**browser_type_launch_args, "args": args})
    yield browser
    browser.close()


# Screenshots: a PNG decoder just big enough for Chromium's (8-bit RGB or RGBA, no interlace).


def decode_png(data: bytes) -> list[list[tuple[int, int, int]]]:
    """The pixels of a PNG as rows of (r, g, b)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, compressed = 8, b""
    width = height = channels = 0
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and colour in (2, 6), "unexpected PNG format"
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            compressed += body
    raw, stride = zlib.decompress(compressed), width * channels
    rows: list[list[tuple[int, int, int]]] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                near = min((abs(guess - left), 0, left), (abs(guess - up), 1, up))
                near = min(near, (abs(guess - corner), 2, corner))
                line[x] = (line[x] + near[2]) & 0xFF
        rows.append([tuple(line[x : x + 3]) for x in range(0, stride, channels)])  # type: ignore[misc]
        previous = line
    return rows


def hex_colour(text: str) -> tuple[int, int, int]:
    return (int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16))


def ink_rows(page: Page, app: str, line: str, cells: int) -> list[int]:
    """For the screen row showing ``line``: per pixel row of its first ``cells`` cells, the
    largest difference from the terminal's background (0 = nothing drawn there)."""
    index = page.evaluate(f"{app}.screenLines().indexOf({line!r})")
    assert index >= 0, f"{line!r} is not on the screen"
    row = page.locator(".xterm-rows > div").nth(index)
    box = row.bounding_box()
    assert box is not None
    cell_width = page.evaluate(f"{app}.term._core._renderService.dimensions.css.cell.width")
    box["width"] = cells * cell_width
    background = hex_colour(page.evaluate(f"{app}.term.options.theme.background"))
    pixels = decode_png(page.screenshot(clip=box))
    return [
        max(max(abs(c - b) for c, b in zip(pixel, background, strict=True)) for pixel in pixels_row)
        for pixels_row in pixels
    ]


def rendered_fonts(page: Page, line: str) -> list[str]:
    """The fonts Chromium really draws the screen row showing ``line`` with (DevTools)."""
    index = page.evaluate(f"terminalApp.screenLines().indexOf({line!r})")
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    selector = f".xterm-rows > div:nth-child({index + 1}) span"
    nodes = cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": selector})["nodeIds"]
    families = set()
    for node in nodes:
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        families.update(font["familyName"] for font in fonts)
    cdp.detach()
    return sorted(families)


def assert_underscores_drawn(ink: list[int]) -> None:
    """Four underscores: a line of strong ink in the lower half of the row, nothing above."""
    half = len(ink) // 2
    assert max(ink[half:]) >= 96, f"no underscore drawn (ink per pixel row: {ink})"
    assert max(ink[:half]) < 32, f"something drawn above the underscores: {ink}"


@pytest.mark.parametrize(("theme", "font_size"), [("dark", 14), ("light", 19)])
def test_underscores_show_with_the_dom_renderer(
    no_webgl_browser: Browser, daphne: Any, theme: str, font_size: int
) -> None:
    """DejaVu Sans Mono (the font Chromium uses here) draws "_" below its descent; a row clipped
    at line height 1 hid it at 14 and 19 px. The watch page always has the DOM renderer."""
    from django.contrib.auth.models import Permission

    user = staff_user("sam")
    TerminalPreference.objects.create(user=user, theme=theme, font_size=font_size)
    context = no_webgl_browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    problems = track_problems(page)
    context.add_cookies([{"name": "sessionid", "value": session_cookie(user), "url": daphne.url}])
    page.goto(daphne.url + TERMINAL)
    session = wait_connected(page)
    assert page.evaluate("terminalApp.renderer") == "dom"
    assert page.evaluate("terminalApp.term.options.fontSize") == font_size
    page.evaluate("terminalApp.term.focus()")
    line = run(page, "echo ____$((6*7))____", "____42____")
    assert rendered_fonts(page, line) == ["DejaVu Sans Mono"]
    assert_underscores_drawn(ink_rows(page, "terminalApp", line, cells=4))

    # The watch page, for an auditor with the same settings.
    auditor = make_user("audrey")
    TerminalPreference.objects.create(user=auditor, theme=theme, font_size=font_size)
    auditor.user_permissions.add(
        Permission.objects.get(content_type__app_label="terminals", codename="watch_session")
    )
    watch_context = no_webgl_browser.new_context(viewport={"width": 1280, "height": 720})
    watch_context.add_cookies(
        [{"name": "sessionid", "value": session_cookie(auditor), "url": daphne.url}]
    )
    watch = watch_context.new_page()
    problems += track_problems(watch)
    watch.goto(f"{daphne.url}/terminals/sessions/{session}/watch/")
    watch.wait_for_function("window.watchApp?.state === 'connected'")
    watch.wait_for_function(f"watchApp.screenLines().includes({line!r})")
    assert watch.evaluate("watchApp.term.options.fontSize") == font_size
    assert watch.evaluate("document.body.dataset.terminalTheme") == theme
    assert_underscores_drawn(ink_rows(watch, "watchApp", line, cells=4))
    watch_context.close()
    context.close()
    assert problems == []


def test_settings_apply_at_once_and_persist_across_a_reload(page: Page, daphne: Any) -> None:
    log_in_with_cookie(page, daphne.url, "sam")
    page.goto(daphne.url + TERMINAL)
    wait_connected(page)
    assert page.evaluate("terminalApp.term.options.fontSize") == 14
    assert page.evaluate("document.body.dataset.terminalTheme") == "dark"
    cols = page.evaluate("terminalApp.term.cols")

    button = page.get_by_role("button", name="Terminal settings")
    expect(button).to_have_attribute("aria-expanded", "false")
    button.click()
    panel = page.locator("#terminal-settings")
    expect(panel).to_be_visible()
    expect(button).to_have_attribute("aria-expanded", "true")
    expect(panel.locator("#terminal-font-size")).to_have_text("14 px")
    larger = panel.get_by_role("button", name="Larger text")
    larger.click()
    larger.click()
    expect(panel.locator("#terminal-font-size")).to_have_text("16 px")
    panel.get_by_label("Theme").select_option("light")
    expect(panel.locator("#terminal-settings-status")).to_have_text("Saved")

    # Applied at once: the font, the colours, and the terminal refitted (fewer columns).
    assert page.evaluate("terminalApp.term.options.fontSize") == 16
    assert page.evaluate("terminalApp.term.options.theme.background") == "#ffffff"
    assert page.evaluate("document.body.dataset.terminalTheme") == "light"
    page.wait_for_function("(cols) => terminalApp.term.cols < cols", arg=cols)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "terminal-settings.png")

    # Escape closes the panel and gives the focus back to its button.
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(button).to_be_focused()

    # The shell was told the new size.
    page.evaluate("terminalApp.term.focus()")
    size = run(page, "stty size", r"\d+ \d+")
    assert size == "{} {}".format(*page.evaluate("[terminalApp.term.rows, terminalApp.term.cols]"))

    saved = TerminalPreference.objects.get(user__username="sam")
    assert (saved.font_size, saved.theme) == (16, "light")

    page.reload()
    wait_connected(page)
    assert page.evaluate("terminalApp.term.options.fontSize") == 16
    assert page.evaluate("terminalApp.term.options.theme.background") == "#ffffff"
    button.click()
    expect(panel.locator("#terminal-font-size")).to_have_text("16 px")
    expect(panel.get_by_label("Theme")).to_have_value("light")


def test_search_counts_moves_and_gives_the_focus_back(page: Page, daphne: Any) -> None:
    log_in_with_cookie(page, daphne.url, "sam")
    page.goto(daphne.url + TERMINAL)
    wait_connected(page)
    page.evaluate("terminalApp.term.focus()")
    # The quotes keep the typed command itself from matching "needle".
    run(page, "printf 'nee''dle-%s\\n' 1 2 3", "needle-3")

    search = page.get_by_role("searchbox", name="Search the terminal output")
    count = page.locator("#terminal-search-count")
    search.click()
    search.press_sequentially("needle")
    expect(count).to_have_text(re.compile(r"^[123] of 3$"))

    def position() -> int:
        return int(count.inner_text().split()[0])

    first = position()
    search.press("Enter")
    expect(count).to_have_text(f"{first % 3 + 1} of 3")
    search.press("Shift+Enter")
    expect(count).to_have_text(f"{first} of 3")
    page.get_by_role("button", name="Next match").click()
    expect(count).to_have_text(f"{first % 3 + 1} of 3")
    page.get_by_role("button", name="Previous match").click()
    expect(count).to_have_text(f"{first} of 3")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "terminal-search.png")
    # The match is selected in the terminal.
    assert page.evaluate("terminalApp.term.getSelection()") == "needle"

    search.fill("")
    search.press_sequentially("no-such-thing")
    expect(count).to_have_text("no match")
    search.fill("")
    search.press_sequentially("needle-2")
    expect(count).to_have_text("1 of 1")

    # Escape: the keyboard is the terminal's again, the search term stays.
    search.press("Escape")
    assert page.evaluate("document.activeElement.classList.contains('xterm-helper-textarea')"), (
        "the focus did not return to the terminal"
    )
    expect(search).to_have_value("needle-2")
    run(page, "echo back-$((1+1))", "back-2")


def _admin_rows() -> None:
    """Rows with long values, as a busy site has them, in every terminals changelist."""
    long_pod = "payments-reconciliation-worker-" + "x" * 90
    long_user = "firstname.middlename.lastname@departments.example.com"
    server = Server.objects.create(hostname="webshell-7d9f8c6b5d-x2k4q.example.internal", pid=4242)
    now = timezone.now()
    for n in range(3):
        Session.objects.create(
            username=long_user, cluster="production-eu-west-1", namespace="payments-processing",
            pod=f"{long_pod}-{n}", container="reconciliation-sidecar", server=server,
            ended_at=now + dt.timedelta(minutes=n), exit_code=130,
            end_reason=Session.EndReason.BROWSER_GONE,
        )  # fmt: skip
        DeniedAttempt.objects.create(
            username=long_user, cluster="production-eu-west-1", namespace="payments-processing",
            pod=f"{long_pod}-{n}", container="reconciliation-sidecar", code="forbidden",
            reason=f"You may not open a terminal on production-eu-west-1/payments/{long_pod}.",
        )  # fmt: skip
        AccessRule.objects.create(
            name=f"payments on-call engineers, production clusters, rule {n}",
            clusters="production-eu-west-1, production-us-east-1, staging-eu-west-1",
            namespaces="payments-processing payments-reporting payments-ledger",
            pods=f"{long_pod}-*",
            containers="reconciliation-sidecar, main, debug",
            reason="Incident response for the payments platform, approved by the security team "
            "in ticket SEC-12345 until the end of the quarter.",
        )
    AuditPrune.objects.create(before=now, sessions=123456, frames=987654321)


def test_every_terminals_admin_list_fits_1280_pixels(page: Page, daphne: Any) -> None:
    from django.contrib.auth import get_user_model

    _admin_rows()
    admin = get_user_model().objects.create_superuser("root", password="pw-for-tests")
    page.context.add_cookies(
        [{"name": "sessionid", "value": session_cookie(admin), "url": daphne.url}]
    )
    page.set_viewport_size({"width": 1280, "height": 800})
    ARTIFACTS.mkdir(exist_ok=True)
    for model in ["session", "deniedattempt", "accessrule", "server", "auditprune"]:
        page.goto(f"{daphne.url}/admin/terminals/{model}/")
        expect(page.locator("#result_list tbody tr").first).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1280, f"the {model} list makes the page {width} px wide"
        # Django's admin scrolls a wide table inside its own box (.results), not the page.
        table, room = page.locator("#changelist .results").evaluate(
            "(box) => [box.scrollWidth, box.clientWidth]"
        )
        page.screenshot(path=ARTIFACTS / f"admin-{model}.png")
        assert table <= room, f"the {model} table is {table} px wide in {room} px"
    # What was cut short stays readable in full, on hover.
    page.goto(f"{daphne.url}/admin/terminals/session/")
    target = page.locator("#result_list td.field-target span.truncated").first
    assert "/payments-reconciliation-worker-" + "x" * 90 in (target.get_attribute("title") or "")
    cell = target.locator("xpath=..")
    assert cell.evaluate("(cell) => cell.scrollWidth > cell.clientWidth"), "not cut short"
