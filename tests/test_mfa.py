"""The second factor (``TERMINALS["REQUIRE_MFA"]``): enrolment, codes, recovery codes, OIDC's
``amr``, and the WebSocket's own check (terminals.mfa, terminals.session.admission).

The pages are driven with Django's test client and real TOTP codes computed here from the
device's secret (``django_otp.oath.totp``), as an authenticator app would. Admission is run
in-process with the login session in the scope, as Channels' SessionMiddleware leaves it; one
test goes through a real Daphne.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from terminals import mfa
from terminals.checks import check_settings
from terminals.conf import get_config
from terminals.models import DeniedAttempt, Session
from terminals.protocol import CloseCode
from terminals.session.admission import Admission
from terminals.session.ending import EndSession
from tests.fixtures.daphne import daphne_environment, run_daphne
from tests.fixtures.terminal_client import terminal
from tests.fixtures.users import make_user

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/terminals/kubesim/default/web/"
WS = "/ws/terminals/kubesim/default/web/"


def code_for(device: TOTPDevice, steps_ahead: int = 0) -> str:
    """The code an authenticator app shows now (or ``steps_ahead`` periods later)."""
    value = totp(device.bin_key, device.step, device.t0, device.digits, device.drift + steps_ahead)
    return f"{value:0{device.digits}d}"


def unthrottle(device: Any) -> None:
    """Forget the wrong codes, as the passing of time would (django-otp waits 1 s, 2 s, …)."""
    type(device).objects.filter(pk=device.pk).update(
        throttling_failure_count=0, throttling_failure_timestamp=None
    )


def totp_device(user: Any) -> TOTPDevice:
    """A confirmed authenticator for ``user``."""
    return TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def recovery_codes(user: Any, *codes: str) -> StaticDevice:
    device = StaticDevice.objects.create(user=user, name="recovery codes", confirmed=True)
    for code in codes:
        StaticToken.objects.create(device=device, token=code)
    return device


@pytest.fixture
def mfa_on(settings: Any) -> Any:
    settings.TERMINALS = {**settings.TERMINALS, "REQUIRE_MFA": True}
    return settings


@pytest.fixture
def alice() -> Any:
    """May open any terminal; has no second factor yet."""
    return make_user("alice", everywhere=True)


@pytest.fixture
def browser(alice: Any) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def location(response: Any) -> str:
    assert response.status_code == 302, response.content[:500]
    return str(response["Location"])


# The terminal page sends the user where the second factor is set up or given.


def test_a_user_without_a_device_is_sent_to_enrol_and_back(mfa_on, browser):
    assert location(browser.get(PAGE + "?container=main")) == (
        "/terminals/mfa/enrol/?next=" + quote(PAGE + "?container=main", safe="")
    )


def test_the_workspace_sends_the_user_to_enrol_or_verify_too(mfa_on, browser, alice):
    assert location(browser.get("/terminals/workspace/")) == (
        "/terminals/mfa/enrol/?next=" + quote("/terminals/workspace/", safe="")
    )
    totp_device(alice)
    assert location(browser.get("/terminals/workspace/")).startswith("/terminals/mfa/verify/")


def test_enrolment_shows_a_qr_code_and_the_secret_and_confirms_with_a_first_code(
    mfa_on, browser, alice
):
    page = browser.get("/terminals/mfa/enrol/", {"next": PAGE}).content.decode()
    [device] = TOTPDevice.objects.filter(user=alice)
    assert not device.confirmed
    # The QR code is drawn here, inline: no image is fetched from anywhere.
    assert re.search(r'<figure class="mfa-qr"[^>]*><svg[^>]*viewBox', page)
    assert "<img" not in page
    secret = re.search(r'<code id="mfa-secret" class="mfa-secret">([A-Z2-7 ]+)</code>', page)
    assert secret is not None
    assert base64.b32decode(secret.group(1).replace(" ", "")) == device.bin_key
    # A reload shows the same secret: the one scanned stays valid until confirmed.
    assert secret.group(1) in browser.get("/terminals/mfa/enrol/").content.decode()

    wrong = "000000" if code_for(device) != "000000" else "111111"
    refused = browser.post("/terminals/mfa/enrol/", {"token": wrong, "next": PAGE})
    assert refused.status_code == 400
    assert "That code is not right" in refused.content.decode()
    # django-otp's throttle: right after a wrong code even the right one must wait.
    throttled = browser.post("/terminals/mfa/enrol/", {"token": code_for(device), "next": PAGE})
    assert "Too many wrong codes in a row" in throttled.content.decode()
    unthrottle(device)

    shown = browser.post("/terminals/mfa/enrol/", {"token": code_for(device), "next": PAGE})
    assert shown.status_code == 200
    codes = re.findall(r"<li><code>([a-z2-7]{8})</code></li>", shown.content.decode())
    assert len(codes) == 10 and len(set(codes)) == 10
    assert shown["Cache-Control"].startswith("max-age=0")  # never_cache: shown once
    assert f'href="{PAGE}"' in shown.content.decode()
    device.refresh_from_db()
    assert device.confirmed
    saved = StaticToken.objects.filter(device__user=alice).values_list("token", flat=True)
    assert sorted(saved) == sorted(codes)
    # The session is verified: the terminal page opens.
    assert browser.get(PAGE).status_code == 200


def test_a_user_with_a_device_cannot_enrol_another(mfa_on, browser, alice):
    totp_device(alice)
    assert location(browser.get("/terminals/mfa/enrol/", {"next": PAGE})).startswith(
        "/terminals/mfa/verify/"
    )
    assert TOTPDevice.objects.filter(user=alice).count() == 1


def test_a_user_with_a_device_gives_a_code_once_per_login_session(mfa_on, browser, alice):
    device = totp_device(alice)
    assert location(browser.get(PAGE)) == "/terminals/mfa/verify/?next=" + quote(PAGE, safe="")

    wrong = browser.post("/terminals/mfa/verify/", {"token": "12345x", "next": PAGE})
    assert wrong.status_code == 400
    assert "That code is not right" in wrong.content.decode()
    assert browser.get(PAGE).status_code == 302
    unthrottle(device)

    token = code_for(device)
    assert location(browser.post("/terminals/mfa/verify/", {"token": token, "next": PAGE})) == PAGE
    assert browser.get(PAGE).status_code == 200
    assert browser.get(PAGE).status_code == 200  # not asked again

    # A new login session is asked again.
    other = Client()
    other.force_login(alice)
    assert other.get(PAGE).status_code == 302


def test_a_recovery_code_works_once(mfa_on, alice):
    totp_device(alice)
    recovery_codes(alice, "abcd2345", "efgh6777")
    first, second = Client(), Client()
    first.force_login(alice)
    second.force_login(alice)

    verified = first.post("/terminals/mfa/verify/", {"token": "ABCD 2345", "next": PAGE})
    assert location(verified) == PAGE
    assert first.get(PAGE).status_code == 200

    again = second.post("/terminals/mfa/verify/", {"token": "abcd2345", "next": PAGE})
    assert again.status_code == 400
    assert list(StaticToken.objects.values_list("token", flat=True)) == ["efgh6777"]


def test_recovery_codes_are_made_anew_only_by_a_verified_session(mfa_on, browser, alice):
    device = totp_device(alice)
    recovery_codes(alice, "abcd2345")
    # Only a password so far: sent to give a code first.
    assert location(browser.post("/terminals/mfa/recovery/")).startswith("/terminals/mfa/verify/")
    assert list(StaticToken.objects.values_list("token", flat=True)) == ["abcd2345"]

    browser.post("/terminals/mfa/verify/", {"token": code_for(device)})
    assert (
        "You have 1 unused recovery code."
        in browser.get("/terminals/mfa/recovery/").content.decode()
    )
    new = browser.post("/terminals/mfa/recovery/").content.decode()
    codes = re.findall(r"<li><code>([a-z2-7]{8})</code></li>", new)
    assert len(codes) == 10
    assert "abcd2345" not in codes
    assert sorted(StaticToken.objects.values_list("token", flat=True)) == sorted(codes)


def test_next_must_be_on_this_site(mfa_on, browser, alice):
    device = totp_device(alice)
    answer = browser.post(
        "/terminals/mfa/verify/", {"token": code_for(device), "next": "https://evil.example/"}
    )
    assert location(answer) == "/"


def test_with_require_mfa_off_nothing_changes(browser, alice):
    assert get_config()["REQUIRE_MFA"] is False
    assert browser.get(PAGE).status_code == 200
    totp_device(alice)  # having a device asks for nothing either
    assert browser.get(PAGE).status_code == 200


@pytest.mark.parametrize(
    ("amr", "opens"),
    [(["pwd", "otp"], True), (["hwk"], True), (["pwd"], False), ("otp", False), (None, False)],
)
def test_an_oidc_login_counts_when_its_amr_names_a_second_factor(mfa_on, browser, amr, opens):
    session = browser.session
    if amr is not None:
        session[mfa.OIDC_AMR] = amr
    session.save()
    assert browser.get(PAGE).status_code == (200 if opens else 302)


def test_the_amr_values_that_count_are_a_setting(mfa_on, browser):
    mfa_on.TERMINALS = {**mfa_on.TERMINALS, "MFA_AMR": ["hwk"]}
    session = browser.session
    session[mfa.OIDC_AMR] = ["pwd", "otp"]
    session.save()
    assert browser.get(PAGE).status_code == 302


# The WebSocket: admission checks the login session itself.


def login_session(user: Any, **keys: Any) -> SessionStore:
    """A saved login session of ``user`` with ``keys``, as the cookie would bring it."""
    client = Client()
    client.force_login(user)
    session = SessionStore(session_key=client.cookies["sessionid"].value)
    for key, value in keys.items():
        session[key] = value
    session.save()
    return SessionStore(session_key=session.session_key)  # as loaded by a new request


def scope(user: Any, session: Any) -> dict[str, Any]:
    return {
        "url_route": {"kwargs": {"cluster": "kubesim", "namespace": "default", "pod": "web-0"}},
        "query_string": b"",
        "user": user,
        "session": session,
        "client": ("10.0.0.7", 5555),
        "headers": [(b"user-agent", b"UA")],
    }


async def admit(user: Any, session: Any) -> Any:
    """The admission's outcome: the EndSession's ending, or the open record (then ended)."""
    try:
        admitted = await Admission(scope(user, session), get_config()).admit()
    except EndSession as end:
        return end.ending
    await database_sync_to_async(Session.objects.filter(pk=admitted.record.pk).delete)()
    return admitted.record


@database_sync_to_async
def denials() -> list[tuple[str, str, str]]:
    return list(DeniedAttempt.objects.values_list("code", "username", "reason"))


async def test_an_unverified_session_is_refused_on_the_socket_and_recorded(mfa_on, alice):
    session = await database_sync_to_async(login_session)(alice)
    ending = await admit(alice, session)
    assert (ending.code, ending.word) == (CloseCode.FORBIDDEN, "mfa_required")
    assert "needs a second factor" in ending.message
    [(code, username, reason)] = await denials()
    assert (code, username, reason) == ("mfa_required", "alice", ending.message)

    # With a device, the message says to give a code.
    await database_sync_to_async(totp_device)(alice)
    ending = await admit(alice, session)
    assert ending.word == "mfa_required"
    assert "enter a code" in ending.message


async def test_a_verified_session_opens_on_the_socket(mfa_on, alice):
    device = await database_sync_to_async(totp_device)(alice)
    session = await database_sync_to_async(login_session)(
        alice, **{mfa.OTP_DEVICE: device.persistent_id}
    )
    record = await admit(alice, session)
    assert isinstance(record, Session) and record.username == "alice"
    assert await denials() == []


async def test_a_deleted_or_unconfirmed_or_foreign_device_does_not_verify(mfa_on, alice):
    bob = await database_sync_to_async(make_user)("bob")
    theirs = await database_sync_to_async(totp_device)(bob)
    pending = await TOTPDevice.objects.acreate(user=alice, name="new", confirmed=False)
    gone = await database_sync_to_async(totp_device)(alice)
    gone_id = gone.persistent_id
    await gone.adelete()
    for persistent_id in (theirs.persistent_id, pending.persistent_id, gone_id, "junk"):
        session = await database_sync_to_async(login_session)(alice, otp_device_id=persistent_id)
        ending = await admit(alice, session)
        assert ending.word == "mfa_required", persistent_id


async def test_oidc_amr_on_the_socket(mfa_on, alice):
    with_otp = await database_sync_to_async(login_session)(alice, oidc_amr=["pwd", "otp"])
    assert isinstance(await admit(alice, with_otp), Session)
    password_only = await database_sync_to_async(login_session)(alice, oidc_amr=["pwd"])
    assert (await admit(alice, password_only)).word == "mfa_required"


async def test_with_require_mfa_off_the_socket_asks_nothing(alice):
    session = await database_sync_to_async(login_session)(alice)
    assert isinstance(await admit(alice, session), Session)


async def test_an_anonymous_user_is_still_asked_to_log_in_first(mfa_on):
    ending = await admit(AnonymousUser(), SessionStore())
    assert ending.code == CloseCode.NOT_AUTHENTICATED


# End to end: the error frame a browser gets from a real Daphne.


@contextlib.contextmanager
def daphne_requiring_mfa(kubesim: Any) -> Iterator[Any]:
    env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps({"REQUIRE_MFA": True})
    with run_daphne(env) as server:
        yield server


async def test_through_daphne_unverified_gets_mfa_required_and_verified_a_shell(kubesim, alice):
    device = await database_sync_to_async(totp_device)(alice)
    unverified = await database_sync_to_async(login_session)(alice)
    verified = await database_sync_to_async(login_session)(
        alice, otp_device_id=device.persistent_id
    )
    with daphne_requiring_mfa(kubesim) as server:
        async with terminal(server, WS, unverified.session_key) as client:
            assert await client.until_closed() == 4403
            assert client.messages[-1]["code"] == "mfa_required"
            assert "enter a code" in client.messages[-1]["message"]
        async with terminal(server, WS, verified.session_key) as client:
            await client.until_message("ready")
    assert [code for code, _, _ in await denials()] == ["mfa_required"]


# The settings' checks (terminals.checks).


@pytest.mark.parametrize(
    ("terminals", "expected"),
    [
        ({"REQUIRE_MFA": "yes"}, ["terminals.E015"]),
        ({"MFA_AMR": "otp"}, ["terminals.E017"]),
        ({"MFA_AMR": ["otp", 2]}, ["terminals.E017"]),
        ({"REQUIRE_MFA": True, "MFA_AMR": []}, []),
    ],
)
def test_the_mfa_settings_are_checked(settings, terminals, expected):
    settings.TERMINALS = {"CLUSTERS": {"a": {"in_cluster": True}}, **terminals}
    assert sorted(message.id for message in check_settings()) == expected


def test_require_mfa_needs_django_otp_installed(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if "otp" not in app]
    settings.TERMINALS = {"CLUSTERS": {"a": {"in_cluster": True}}, "REQUIRE_MFA": True}
    [message] = check_settings()
    assert message.id == "terminals.E018"
    assert "django_otp, django_otp.plugins.otp_totp, django_otp.plugins.otp_static" in message.msg
    settings.TERMINALS = {"CLUSTERS": {"a": {"in_cluster": True}}}
    assert check_settings() == []  # without REQUIRE_MFA the app runs without django-otp


async def test_a_resume_asks_the_second_factor_of_the_login_session_it_comes_with(kubesim, alice):
    from tests.fixtures.terminal_client import TerminalClient, run_line, say
    from tests.test_resume import detached_record, resume_path

    device = await database_sync_to_async(totp_device)(alice)
    unverified = await database_sync_to_async(login_session)(alice)
    verified = await database_sync_to_async(login_session)(
        alice, otp_device_id=device.persistent_id
    )
    env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps({"REQUIRE_MFA": True, "RESUME_GRACE": 60})
    with run_daphne(env) as server:
        client = await TerminalClient.connect(server.ws_url, WS, verified.session_key)
        ready = await client.until_message("ready")
        await client.drop()
        await detached_record(ready["session"])
        path = resume_path(WS, ready["resume"], len(client.output))
        # The same user, with a login session of another tab that gave no code.
        async with terminal(server, path, unverified.session_key, size=None) as refused:
            assert await refused.until_closed() == 4403
            assert refused.messages[-1]["code"] == "mfa_required"
        async with terminal(server, path, verified.session_key, size=None) as resumed:
            again = await resumed.until_message("ready")
            assert again["resumed"] and again["session"] == ready["session"]
            await run_line(resumed, say("BACK"), "BACK")  # the shell is this page's again
    assert [code for code, _, _ in await denials()] == ["mfa_required"]
