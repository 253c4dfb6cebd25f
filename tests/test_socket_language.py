"""The terminal's socket speaks the user's language: the ``message`` of its error frames and the
record's ``end_message``, in the language LocaleMiddleware would choose for the page
(terminals/language.py), carried by the connection's context into the session's tasks."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import translation
from django.utils.translation import gettext as _

from terminals.language import language_of
from terminals.models import Session
from terminals.permissions import ExecTarget
from terminals.session import ending
from terminals.session.revocation import DEACTIVATED, Grant, Revoker, revoked
from tests.fixtures.terminal_client import terminal
from tests.fixtures.users import make_user, session_cookie
from tests.test_consumers import daphne_with
from tests.test_session_revocation import FakeCheck, FakeSession, FakeTime, stop

WEB = "/ws/terminals/kubesim/default/web/"
CHINESE = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
ENGLISH = {"Accept-Language": "en-GB,en;q=0.9"}


def scope(*headers: tuple[str, str], cookies: dict[str, str] | None = None) -> dict[str, Any]:
    """A WebSocket scope with these headers (and Channels' parsed cookies, if given)."""
    made: dict[str, Any] = {
        "type": "websocket",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
    }
    if cookies is not None:
        made["cookies"] = cookies
    return made


# Choosing the language.


@pytest.mark.parametrize(
    ("accept", "language"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.5", "zh-hans"),
        ("zh-Hans", "zh-hans"),
        ("zh", "zh-hans"),
        ("en-US,en;q=0.9", "en"),
        ("de-DE,de;q=0.9", "en"),  # not supported: the default
        ("de-DE, zh-Hans;q=0.5", "zh-hans"),  # the best supported one
        ("en;q=0.4, zh-CN;q=0.8", "zh-hans"),  # by quality, not by order
        ("*, zh-CN;q=0.1", "en"),  # "anything" first: the default, as LocaleMiddleware
        ("", "en"),
    ],
)
def test_accept_language_chooses_among_the_supported_languages(accept, language):
    assert language_of(scope(("Accept-Language", accept))) == language


def test_no_headers_at_all_is_the_default_language():
    assert language_of({"type": "websocket"}) == "en"


def test_the_language_cookie_wins_over_the_header():
    chosen = scope(("Accept-Language", "en"), cookies={"django_language": "zh-hans"})
    assert language_of(chosen) == "zh-hans"
    # Without Channels' CookieMiddleware, from the Cookie header itself.
    raw = scope(("Accept-Language", "en"), ("Cookie", "sessionid=x; django_language=zh-hans"))
    assert language_of(raw) == "zh-hans"


def test_an_unsupported_cookie_is_ignored_for_the_header():
    assert language_of(scope(*CHINESE.items(), cookies={"django_language": "fr"})) == "zh-hans"
    assert language_of(scope(cookies={"django_language": "fr"})) == "en"


def test_the_cookie_name_is_the_setting(settings):
    settings.LANGUAGE_COOKIE_NAME = "lang"
    assert language_of(scope(cookies={"lang": "zh-hans"})) == "zh-hans"
    assert language_of(scope(cookies={"django_language": "zh-hans"})) == "en"


# The language travels with the connection's context, and only there.


async def test_tasks_and_threads_started_after_activation_inherit_the_language():
    """What the consumer relies on: the session's supervisor and its parts are tasks created
    after ``connect`` activated the language; the ORM work runs in threads."""

    async def connection(language: str) -> list[str]:
        translation.activate(language)

        async def part() -> str:
            await asyncio.sleep(0)  # runs after the other connection has activated its own
            return ending.ended_by_auditor(1, "alice").message

        in_task = await asyncio.ensure_future(part())
        in_thread = await sync_to_async(lambda: _(DEACTIVATED), thread_sensitive=False)()
        return [in_task, in_thread]

    chinese, english = await asyncio.gather(
        asyncio.ensure_future(connection("zh-hans")), asyncio.ensure_future(connection("en"))
    )
    assert chinese == ["alice 结束了此会话。", "您的账户已被停用。"]
    assert english == ["alice ended this session.", DEACTIVATED]
    assert translation.get_language() == "en"  # nothing leaked out of the connections


@pytest.mark.django_db
def test_a_revoked_session_is_told_why_in_its_grants_language():
    user = make_user("sam", everywhere=True, is_active=False)
    target = ExecTarget("kubesim", "default", "web", "main")
    sid = uuid.uuid4()
    assert revoked({sid: Grant(user.pk, None, target, "zh-hans")}) == {sid: "您的账户已被停用。"}
    assert revoked({sid: Grant(user.pk, None, target)}) == {sid: DEACTIVATED}
    nobody = make_user("nobody")  # no access rule
    assert revoked({sid: Grant(nobody.pk, None, target, "zh-hans")}) == {
        sid: "您对 kubesim/default/web/main 的访问权限已被撤销。"
    }


async def test_the_revoker_keeps_the_language_the_session_was_opened_in():
    """The revoker's round is no connection's task: the grant carries the language."""
    check, time = FakeCheck(), FakeTime()
    revoker = Revoker(check=check, clock=time, sleep=time.sleep)
    chinese, english = FakeSession(revoker), FakeSession(revoker)
    with translation.override("zh-hans"):
        revoker.watch(chinese, Grant(1, "key", ExecTarget("kubesim", "default", "web")))
    revoker.watch(english, Grant(2, "key", ExecTarget("kubesim", "default", "web")))
    await revoker.sweep()
    (asked,) = check.batches
    assert (asked[chinese.id].language, asked[english.id].language) == ("zh-hans", "en")
    await stop(revoker, time)


# End to end: a real Daphne, a real socket.


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (CHINESE, "请登录后打开终端。"),
        ({"Cookie": "django_language=zh-hans", **ENGLISH}, "请登录后打开终端。"),
        (ENGLISH, "Log in to open a terminal."),
        ({}, "Log in to open a terminal."),
    ],
    ids=["accept-language", "cookie", "english", "no-header"],
)
async def test_a_refusal_comes_in_the_users_language(daphne, headers, message):
    async with terminal(daphne, WEB, None, headers=headers) as client:
        assert await client.until_closed() == 4401
        assert client.messages == [
            {"type": "error", "code": "not_authenticated", "message": message}
        ]


@pytest.mark.django_db(transaction=True)
async def test_an_unknown_cluster_is_refused_in_chinese(daphne):
    cookie = await sync_to_async(lambda: session_cookie(make_user("sam", everywhere=True)))()
    path = "/ws/terminals/elsewhere/default/web/"
    async with terminal(daphne, path, cookie, headers=CHINESE) as client:
        assert await client.until_closed() == 4404
        assert client.messages[-1] == {
            "type": "error",
            "code": "not_found",
            "message": "不存在名为 'elsewhere' 的集群。",
        }


@pytest.mark.django_db(transaction=True)
async def test_the_idle_ending_is_in_each_users_language_and_recorded_as_shown(kubesim):
    """The watchdog runs in the session's own task: it says it in the connection's language,
    and two connections at once each keep their own."""
    cookie = await sync_to_async(lambda: session_cookie(make_user("sam", everywhere=True)))()
    with daphne_with(kubesim, IDLE_TIMEOUT=2) as server:
        async with (
            terminal(server, WEB, cookie, headers=CHINESE) as chinese,
            terminal(server, WEB, cookie, headers=ENGLISH) as english,
        ):
            ready = [await chinese.until_message("ready"), await english.until_message("ready")]
            assert await chinese.until_closed() == 4408
            assert await english.until_closed() == 4408
    shown = [chinese.messages[-1], english.messages[-1]]
    assert shown == [
        {"type": "error", "code": "idle", "message": "已有 2 秒没有任何输入或输出。"},
        {"type": "error", "code": "idle", "message": "No input or output for 2 s."},
    ]
    for first, told in zip(ready, shown, strict=True):
        record = await Session.objects.aget(pk=first["session"])
        assert record.end_reason == Session.EndReason.IDLE
        assert record.end_message == told["message"]
