"""Translations: the pages and messages in the browser's language (English or Simplified Chinese),
complete catalogues, and the scripts' catalogue.

The language comes from the browser's Accept-Language (LocaleMiddleware); "zh-CN", "zh-Hans"
and "zh" get Simplified Chinese, anything else English.
"""

from __future__ import annotations

import ast
import gettext
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from tests.fixtures.users import make_user
from tests.test_admin import recorded_session  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parent.parent
CATALOGUES = sorted(
    [
        *(ROOT / "terminals" / "locale").glob("*/LC_MESSAGES/*.po"),
        *(ROOT / "locale").glob("*/LC_MESSAGES/*.po"),
    ]
)
SCAN = ["--no-obsolete", "--no-location"]  # makemessages: only the messages matter here
CHINESE = {"HTTP_ACCEPT_LANGUAGE": "zh-CN,zh;q=0.9,en;q=0.5"}
ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en-GB,en;q=0.9"}


# The catalogues.


def read_po(path: Path) -> list[dict[str, Any]]:
    """The entries of a .po file: msgid, msgid_plural, msgstr (a list), flags, obsolete."""
    entries = []
    for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8").strip()):
        entry: dict[str, Any] = {"flags": set(), "msgstr": [], "obsolete": False}
        key = ""
        for line in block.splitlines():
            if line.startswith("#~"):
                entry["obsolete"] = True
            elif line.startswith("#,"):
                entry["flags"] |= {flag.strip() for flag in line[2:].split(",")}
            elif line.startswith("#"):
                continue
            elif line.startswith('"'):
                if key.startswith("msgstr"):
                    entry["msgstr"][-1] += ast.literal_eval(line)
                else:
                    entry[key] += ast.literal_eval(line)
            else:
                key, _, value = line.partition(" ")
                if key.startswith("msgstr"):
                    entry["msgstr"].append(ast.literal_eval(value))
                else:
                    entry[key] = ast.literal_eval(value)
        entries.append(entry)
    return entries


def test_both_languages_ship_catalogues():
    names = {path.relative_to(ROOT).as_posix() for path in CATALOGUES}
    assert {
        "terminals/locale/zh_Hans/LC_MESSAGES/django.po",
        "terminals/locale/zh_Hans/LC_MESSAGES/djangojs.po",
        "locale/zh_Hans/LC_MESSAGES/django.po",
    } <= names


@pytest.mark.parametrize("path", CATALOGUES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_message_is_translated(path):
    """No empty translation, none marked fuzzy (gettext ignores those), none left obsolete."""
    entries = [entry for entry in read_po(path) if entry.get("msgid")]
    assert entries, f"{path} has no messages"
    untranslated = [e["msgid"] for e in entries if not all(e["msgstr"]) or not e["msgstr"]]
    fuzzy = [e["msgid"] for e in entries if "fuzzy" in e["flags"]]
    obsolete = [e["msgid"] for e in entries if e["obsolete"]]
    assert untranslated == [], f"untranslated in {path}"
    assert fuzzy == [], f"fuzzy in {path}"
    assert obsolete == [], f"obsolete in {path}"


@pytest.mark.parametrize("path", CATALOGUES, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_compiled_catalogue_is_the_source_one(path):
    """The committed .mo says what its .po says (`make messages` compiles them)."""
    with path.with_suffix(".mo").open("rb") as compiled:
        catalog = gettext.GNUTranslations(compiled)._catalog  # type: ignore[attr-defined]
    expected: dict[Any, str] = {}
    for entry in read_po(path):
        if not entry.get("msgid"):
            continue
        if "msgid_plural" in entry:
            expected |= {(entry["msgid"], n): text for n, text in enumerate(entry["msgstr"])}
        else:
            expected[entry["msgid"]] = entry["msgstr"][0]
    compiled_messages = {key: value for key, value in catalog.items() if key != ""}
    assert compiled_messages == expected, f"{path.with_suffix('.mo')} is stale: `make messages`"


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="gettext tools are not installed")
@pytest.mark.parametrize(
    ("source", "domain"),
    [("terminals", "django"), ("terminals", "djangojs"), (".", "django")],
)
def test_every_marked_string_is_in_the_catalogue(tmp_path, source, domain):
    """What makemessages finds in the code is what the catalogue has: a string marked since
    its last run would be English on a Chinese page (`make messages`, then translate it)."""
    tree = tmp_path / "tree"
    if source == "terminals":
        shutil.copytree(
            ROOT / "terminals",
            tree,
            ignore=shutil.ignore_patterns("vendor", "__pycache__", "*.mo"),
        )
        committed = ROOT / "terminals" / "locale" / "zh_Hans" / "LC_MESSAGES" / f"{domain}.po"
    else:
        tree.mkdir()
        for part in ("templates", "webshell", "locale"):
            shutil.copytree(
                ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__", "*.mo")
            )
        committed = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES" / f"{domain}.po"
    # The test settings without LOCALE_PATHS, which would send strings to this checkout's locale/.
    (tmp_path / "scan_settings.py").write_text("from tests.settings import *\nLOCALE_PATHS = []\n")
    subprocess.run(
        [sys.executable, "-m", "django", "makemessages", "-l", "zh_Hans", "-d", domain, *SCAN],
        cwd=tree,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "scan_settings",
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        },
        check=True,
        capture_output=True,
        timeout=120,
    )
    (made,) = tree.glob(f"**/zh_Hans/LC_MESSAGES/{domain}.po")
    ids = {entry["msgid"] for entry in read_po(made) if entry.get("msgid")}
    assert ids - {e["msgid"] for e in read_po(committed)} == set(), "not in the catalogue"


# The pages.


@pytest.fixture
def sam(client, db):
    user = make_user("sam", everywhere=True)
    client.force_login(user)
    return user


def test_a_chinese_browser_gets_the_portal_in_chinese(client, sam, kubesim_settings):
    page = client.get("/", **CHINESE).content.decode()
    assert '<html lang="zh-hans">' in page
    for text in ["命名空间", "状态", "打开工作区", "我的会话", "退出登录", "未运行"]:
        assert text in page
    assert "Namespace" not in page


@pytest.mark.parametrize("language", ["en-US,en;q=0.9", "de-DE,de;q=0.9", ""])
def test_other_browsers_get_english(client, sam, kubesim_settings, language):
    headers = {"HTTP_ACCEPT_LANGUAGE": language} if language else {}
    response = client.get("/", **headers)
    page = response.content.decode()
    assert '<html lang="en">' in page
    assert "Namespace" in page and "My sessions" in page and "not running" in page
    assert "命名空间" not in page
    assert "Accept-Language" in response["Vary"]  # caches keep the languages apart


@pytest.mark.django_db
def test_the_login_page_in_chinese(client):
    page = client.get("/accounts/login/", **CHINESE).content.decode()
    assert '<html lang="zh-hans">' in page
    assert "登录" in page and "用户名" in page


def test_my_sessions_in_chinese(client, sam):
    page = client.get("/terminals/sessions/mine/", **CHINESE).content.decode()
    assert "<h1>我的会话</h1>" in page
    assert "您还没有打开过终端。" in page


@pytest.mark.django_db
def test_replay_and_watch_pages_in_chinese(client, recorded_session):  # noqa: F811
    user = make_user("audrey")
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="terminals",
            codename__in=["view_session", "watch_session", "end_session"],
        )
    )
    client.force_login(user)
    replay = client.get(f"/terminals/sessions/{recorded_session.pk}/replay/", **CHINESE)
    text = replay.content.decode()
    assert "<h2>命令</h2>" in text and "下载 .cast" in text and "速度" in text
    assert "进程已退出" in text  # the end reason's label, from the model's choices
    watch = client.get(f"/terminals/sessions/{recorded_session.pk}/watch/", **CHINESE)
    text = watch.content.decode()
    assert "正在连接…" in text and "结束会话" in text and "正在观看 sam" in text
    assert "End session" not in text


def test_the_terminal_page_in_chinese_loads_the_script_catalogue_first(
    client, sam, kubesim_settings
):
    page = client.get("/terminals/kubesim/default/web/?container=main", **CHINESE).content.decode()
    assert "正在连接…" in page and "终端设置" in page and "新会话" in page
    catalogue = page.index('<script src="/terminals/jsi18n/"></script>')
    assert catalogue < page.index('<script type="module"')  # defined when the modules run


def test_the_workspace_page_in_chinese(client, sam, kubesim_settings):
    page = client.get("/terminals/workspace/", **CHINESE).content.decode()
    texts = ["工作区", "没有与筛选条件匹配的 Pod。", "关闭此终端？", "保持打开", "已打开的终端"]  # noqa: RUF001
    for text in texts:
        assert text in page
    assert "Keep it open" not in page and "No pod matches" not in page


@pytest.mark.django_db
def test_a_refusal_says_why_in_chinese(client, kubesim_settings):
    client.force_login(get_user_model().objects.create_user("nobody", password="pw"))
    page = client.get("/terminals/kubesim/default/web/", **CHINESE).content.decode()
    assert "不允许访问" in page and "您无权在 kubesim/default/web" in page


def test_messages_come_in_chinese(client, sam):
    from terminals.models import Session

    session = Session.objects.create(
        user=sam, username="sam", cluster="kubesim", namespace="default", pod="web",
        container="main", end_reason="exit", exit_code=0,
    )  # fmt: skip
    Session.objects.filter(pk=session.pk).update(ended_at=session.started_at)
    response = client.post(f"/terminals/sessions/mine/{session.pk}/end/", follow=True, **CHINESE)
    assert "该会话已经结束。" in response.content.decode()


def test_a_refused_setting_is_explained_in_chinese(client, sam):
    response = client.post(
        "/terminals/preferences/", b"[]", content_type="application/json", **CHINESE
    )
    assert response.status_code == 400
    assert response.json() == {"error": "请求体必须是一个 JSON 对象。"}


# The scripts' catalogue.


@pytest.mark.django_db
def test_the_script_catalogue_answers_in_the_browsers_language(client):
    chinese = client.get("/terminals/jsi18n/", **CHINESE)
    assert chinese.status_code == 200
    assert chinese["Content-Type"].startswith("text/javascript")
    body = chinese.content.decode()
    assert f'"The session ended.": {json.dumps("会话已结束。")}' in body
    assert "globals.gettext = django.gettext" in body
    english = client.get("/terminals/jsi18n/", **ENGLISH).content.decode()
    assert "The session ended." not in english  # nothing to translate: the text as written
    assert "globals.gettext = django.gettext" in english


@pytest.mark.django_db
def test_the_script_catalogue_is_revalidated_not_rebuilt(client):
    first = client.get("/terminals/jsi18n/", **CHINESE)
    assert "no-cache" in first["Cache-Control"]
    again = client.get(
        "/terminals/jsi18n/", HTTP_IF_MODIFIED_SINCE=first["Last-Modified"], **CHINESE
    )
    assert again.status_code == 304


def test_the_script_catalogue_is_allowed_by_the_content_security_policy(
    client, sam, kubesim_settings
):
    """A script of the site's own origin and no inline code: the policy's script-src 'self'."""
    response = client.get("/terminals/kubesim/default/web/", **CHINESE)
    assert "script-src 'self'" in response["Content-Security-Policy"]
    scripts = re.findall(r"<script\b[^>]*>", response.content.decode())
    assert '<script src="/terminals/jsi18n/">' in scripts
    assert all("src=" in tag or 'type="application/json"' in tag for tag in scripts)
