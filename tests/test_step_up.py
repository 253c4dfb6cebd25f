"""Step-up (``AccessRule.fresh_auth_minutes``): a recent authentication before a shell opens on a
sensitive target, as sudo's timestamp (terminals.mfa, terminals.session.admission).

The session's last authentication is set back by hand to make it stale. The page is driven
with Django's test client; admission in-process with the login session in the scope; one test
goes through the suite's Daphne.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import pytest
from axes.models import AccessAttempt
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from terminals import mfa
from terminals.conf import get_config
from terminals.models import AccessRule, DeniedAttempt, Session
from terminals.permissions import ExecTarget
from terminals.protocol import CloseCode
from terminals.session.admission import Admission
from terminals.session.ending import EndSession
from tests.fixtures.terminal_client import terminal
from tests.fixtures.users import grant, make_user

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-for-tests"  # what make_user sets
PAGE = "/terminals/kubesim/prod/db/"
WS = "/ws/terminals/kubesim/prod/db/"
PROD = ExecTarget("kubesim", "prod", "db")
ELSEWHERE = ExecTarget("kubesim", "default", "web")


@pytest.fixture
def alice() -> Any:
    """May open production's pods after an authentication in the last 10 minutes, and the
    rest without."""
    user = make_user("alice")
    grant(user, name="prod, fresh", namespaces="prod", fresh_auth_minutes=10)
    grant(user, name="default", namespaces="default")
    return user


@pytest.fixture
def browser(alice: Any) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def age_session(client: Client, minutes: float) -> None:
    """Make the session's last authentication ``minutes`` old."""
    session = client.session
    session[mfa.AUTH_AT] = time.time() - minutes * 60
    session.save()


def location(response: Any) -> str:
    assert response.status_code == 302, response.content[:500]
    return str(response["Location"])


# The rules: which freshness applies.


def test_a_login_is_fresh_and_opens_at_once(browser):
    assert browser.get(PAGE).status_code == 200


def test_a_stale_login_is_sent_to_the_step_up_page_and_back(browser):
    age_session(browser, 11)
    assert location(browser.get(PAGE + "?container=main")) == (
        "/terminals/reauth/?next=" + quote(PAGE + "?container=main", safe="")
    )
    # Targets that no step-up rule grants open as before.
    assert browser.get("/terminals/kubesim/default/web/").status_code == 200


def test_the_step_up_page_takes_the_password_and_opens_the_terminal(browser):
    age_session(browser, 11)
    form = browser.get("/terminals/reauth/", {"next": PAGE}).content.decode()
    assert 'type="password" name="password"' in form
    assert location(browser.post("/terminals/reauth/", {"password": PASSWORD, "next": PAGE})) == (
        PAGE
    )
    assert browser.get(PAGE).status_code == 200


def test_a_wrong_password_is_refused_and_counts_toward_the_lockout(browser, settings):
    age_session(browser, 11)
    wrong = browser.post("/terminals/reauth/", {"password": "guess", "next": PAGE})
    assert wrong.status_code == 400
    assert "That password is not right." in wrong.content.decode()
    assert browser.get(PAGE).status_code == 302
    [attempt] = AccessAttempt.objects.all()
    assert (attempt.username, attempt.failures_since_start) == ("alice", 1)
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        browser.post("/terminals/reauth/", {"password": "guess", "next": PAGE})
    # Locked out: even the right password is refused now, with the lockout page.
    locked = browser.post("/terminals/reauth/", {"password": PASSWORD, "next": PAGE})
    assert locked.status_code != 302
    assert "Too many failed logins" in locked.content.decode()
    assert browser.get(PAGE).status_code == 302


def test_a_user_with_a_second_factor_steps_up_with_a_code(browser, alice):
    device = TOTPDevice.objects.create(user=alice, name="phone", confirmed=True)
    age_session(browser, 11)
    form = browser.get("/terminals/reauth/", {"next": PAGE}).content.decode()
    assert 'name="token"' in form and 'name="password"' not in form
    code = f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):06d}"
    assert location(browser.post("/terminals/reauth/", {"token": code, "next": PAGE})) == PAGE
    assert browser.get(PAGE).status_code == 200


def test_an_account_without_a_password_is_asked_to_sign_in_again(browser, alice):
    alice.set_unusable_password()
    alice.save()
    browser.force_login(alice)  # as an OIDC login would (the password change ended the session)
    age_session(browser, 11)
    page = browser.get("/terminals/reauth/", {"next": PAGE}).content.decode()
    assert "Sign in again" in page
    assert 'href="/accounts/login/?next=' + quote(PAGE, safe="") in page


def test_a_login_records_its_time(alice):
    before = time.time()
    client = Client()
    answer = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert location(answer) == "/"
    assert before <= client.session[mfa.AUTH_AT] <= time.time()


def test_the_least_demanding_rule_applies(alice):
    assert mfa.step_up_minutes(alice, PROD) == 10
    assert mfa.step_up_minutes(alice, ELSEWHERE) is None
    # Another rule granting prod with a longer window: the longer one applies.
    grant(alice, name="prod, an hour", namespaces="prod", fresh_auth_minutes=60)
    assert mfa.step_up_minutes(get_user_model().objects.get(pk=alice.pk), PROD) == 60
    # And one without step-up: none.
    grant(alice, name="prod, always", namespaces="prod")
    assert mfa.step_up_minutes(get_user_model().objects.get(pk=alice.pk), PROD) is None


def test_a_superuser_is_granted_without_a_rule_and_so_without_step_up():
    root = make_user("root", is_superuser=True)
    grant(root, name="prod, fresh", namespaces="prod", fresh_auth_minutes=1)
    assert mfa.step_up_minutes(root, PROD) is None


def test_an_expired_rule_does_not_count(alice):
    grant(alice, name="old", namespaces="prod", expires_at="2000-01-01T00:00Z")
    assert mfa.step_up_minutes(get_user_model().objects.get(pk=alice.pk), PROD) == 10


def test_the_admin_rule_form_has_the_field():
    admin = make_user("admin", is_superuser=True, is_staff=True)
    client = Client()
    client.force_login(admin)
    form = client.get("/admin/terminals/accessrule/add/").content.decode()
    assert 'name="fresh_auth_minutes"' in form
    saved = client.post(
        "/admin/terminals/accessrule/add/",
        {
            "name": "prod",
            "clusters": "*",
            "namespaces": "prod",
            "pods": "*",
            "containers": "*",
            "fresh_auth_minutes": "0",
        },
    )
    assert saved.status_code == 200  # 0 is refused: at least one minute
    assert not AccessRule.objects.filter(name="prod").exists()


# The WebSocket.


def login_session(user: Any, minutes_ago: float | None) -> SessionStore:
    """A saved login session of ``user`` whose last authentication is ``minutes_ago`` old."""
    client = Client()
    client.force_login(user)
    session = SessionStore(session_key=client.cookies["sessionid"].value)
    if minutes_ago is None:
        del session[mfa.AUTH_AT]
    else:
        session[mfa.AUTH_AT] = time.time() - minutes_ago * 60
    session.save()
    return SessionStore(session_key=session.session_key)


def scope(user: Any, session: Any, namespace: str = "prod", pod: str = "db") -> dict[str, Any]:
    return {
        "url_route": {"kwargs": {"cluster": "kubesim", "namespace": namespace, "pod": pod}},
        "query_string": b"",
        "user": user,
        "session": session,
        "client": ("10.0.0.7", 5555),
        "headers": [(b"user-agent", b"UA")],
    }


async def admit(scope: dict[str, Any]) -> Any:
    """The ending of a refused admission, or the record of an admitted one (deleted)."""
    try:
        admitted = await Admission(scope, get_config()).admit()
    except EndSession as end:
        return end.ending
    await database_sync_to_async(Session.objects.filter(pk=admitted.record.pk).delete)()
    return admitted.record


@database_sync_to_async
def denials() -> list[tuple[str, str, str]]:
    return list(DeniedAttempt.objects.values_list("code", "pod", "reason"))


async def test_the_socket_refuses_a_stale_session_and_records_it(alice):
    stale = await database_sync_to_async(login_session)(alice, 11)
    ending = await admit(scope(alice, stale))
    assert (ending.code, ending.word) == (CloseCode.FORBIDDEN, "step_up_required")
    assert "within the last 10 minutes" in ending.message
    assert await denials() == [("step_up_required", "db", ending.message)]
    # Other targets open.
    assert isinstance(await admit(scope(alice, stale, "default", "web")), Session)


async def test_the_socket_opens_for_a_fresh_session(alice):
    fresh = await database_sync_to_async(login_session)(alice, 9)
    assert isinstance(await admit(scope(alice, fresh)), Session)


async def test_a_session_with_no_recorded_authentication_is_stale(alice):
    unknown = await database_sync_to_async(login_session)(alice, None)
    assert (await admit(scope(alice, unknown))).word == "step_up_required"


async def test_after_the_step_up_page_the_socket_opens(alice):
    def step_up() -> str:
        client = Client()
        client.force_login(alice)
        age_session(client, 30)
        client.post("/terminals/reauth/", {"password": PASSWORD, "next": PAGE})
        return str(client.cookies["sessionid"].value)

    key = await database_sync_to_async(step_up)()
    assert isinstance(await admit(scope(alice, SessionStore(session_key=key))), Session)


async def test_through_daphne_a_stale_session_gets_step_up_required(daphne, alice):
    stale = await database_sync_to_async(login_session)(alice, 11)
    async with terminal(daphne, WS, stale.session_key) as client:
        assert await client.until_closed() == 4403
        assert client.messages[-1]["code"] == "step_up_required"
        assert "within the last 10 minutes" in client.messages[-1]["message"]
    fresh = await database_sync_to_async(login_session)(alice, 1)
    async with terminal(daphne, WS, fresh.session_key) as client:
        await client.until_message("ready")
