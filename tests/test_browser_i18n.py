"""The terminal page in a Chinese browser (Chromium with the zh-CN locale): the page and its
scripts (Django's JavaScript catalog, loaded before the modules) speak Simplified Chinese."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests import test_browser
from tests.test_browser import log_in_with_cookie, wait_connected
from tests.test_browser_workspace import open_tab, open_workspace, panel, tab

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
page = test_browser.page  # the fixture: pytest-playwright's page, failing on page errors


@pytest.fixture
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    """A browser set to Chinese: it sends Accept-Language: zh-CN."""
    return {**browser_context_args, "locale": "zh-CN"}


def test_the_terminal_page_says_its_state_and_its_end_in_chinese(page: Page, daphne) -> None:
    log_in_with_cookie(page, daphne.url, "sam")
    page.goto(f"{daphne.url}/terminals/kubesim/default/web/?container=main")
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    session = wait_connected(page)
    state = page.locator("#terminal-state")
    expect(state).to_have_text("已连接")
    expect(page.locator("#terminal-session")).to_have_attribute("title", f"会话 {session}")
    expect(page.locator("#terminal-search-input")).to_have_attribute("placeholder", "搜索输出")

    page.evaluate("terminalApp.term.focus()")
    page.keyboard.type("exit 7")
    page.keyboard.press("Enter")
    page.wait_for_function("terminalApp.closeCode === 1000")
    expect(state).to_have_attribute("data-state", "ended")
    expect(state).to_have_text("已结束")
    reason = "进程已退出，退出码为 7。"  # noqa: RUF001 (Chinese punctuation, as translated)
    expect(page.locator("#terminal-ended-reason")).to_have_text(reason)
    expect(page.locator("#terminal-restart")).to_have_text("新会话")


def test_the_workspace_speaks_chinese_in_its_page_and_its_tabs(page: Page, daphne) -> None:
    open_workspace(page, daphne.url)
    expect(page.locator(".workspace-title")).to_have_text("工作区")
    expect(page.locator("#ws-empty")).to_contain_text("在左侧选择一个 Pod")
    expect(page.locator("#ws-filter")).to_have_attribute("placeholder", "Pod、命名空间、容器…")
    open_tab(page, "web")
    expect(tab(page, "web/main").locator(".ws-tab-state")).to_have_text("已连接")
    expect(panel(page, "web/main").locator(".state")).to_contain_text("已连接 · main")
    expect(page.locator(".ws-tab-close").first).to_have_attribute("title", "关闭 web/main")
    page.locator(".ws-tab-close").first.click()  # a live session: asked first
    expect(page.locator("#ws-close-title")).to_have_text("关闭 web/main？")  # noqa: RUF001
    expect(page.locator("#ws-close-dialog button[value=keep]")).to_have_text("保持打开")
