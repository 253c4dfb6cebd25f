"""Revocation in-process: the check on the real store (each reason, one batch of queries), the
revoker with fakes and a fake clock (rounds, a failing or slow store ends nothing), and the end
path of a real TerminalSession that is no longer permitted."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session as LoginSession
from django.core.checks import run_checks
from django.db import DatabaseError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from terminals.conf import get_config
from terminals.kube.exec import ExecStatus
from terminals.models import AccessRule, Session
from terminals.permissions import ExecTarget
from terminals.protocol import CloseCode
from terminals.session import revocation
from terminals.session.core import State, TerminalSession
from terminals.session.ending import Ending
from terminals.session.flow import FlowWindow
from terminals.session.revocation import Grant, Revoker, revoked
from tests.fixtures.users import grant, make_user, session_cookie
from tests.test_session_core import Parts, until

WEB = ExecTarget("kubesim", "default", "web")
MAIN = ExecTarget("kubesim", "default", "web", "main")


def grant_for(user: Any, target: ExecTarget = WEB, login: str | None = "") -> Grant:
    """The grant of a session opened by ``user`` with a fresh login (``login=""``)."""
    key = session_cookie(user) if login == "" else login
    return Grant(user.pk, key, target)


def verdict(one: Grant) -> str | None:
    """Why the one session of ``one`` is revoked, or None."""
    session_id = uuid.uuid4()
    return revoked({session_id: one}).get(session_id)


# The check, on the real store: each reason.


@pytest.mark.django_db
class TestTheCheck:
    def test_a_session_still_permitted_is_left_alone(self):
        assert verdict(grant_for(make_user("sam", everywhere=True))) is None

    def test_a_deleted_account(self):
        user = make_user("sam", everywhere=True)
        one = grant_for(user)
        user.delete()
        assert verdict(one) == "Your account was deleted."

    def test_a_deactivated_account(self):
        user = make_user("sam", everywhere=True)
        one = grant_for(user)
        type(user).objects.filter(pk=user.pk).update(is_active=False)
        assert verdict(one) == "Your account was deactivated."

    def test_a_deactivated_superuser_too(self):
        user = make_user("root", is_superuser=True)
        one = grant_for(user)
        assert verdict(one) is None  # no rule needed
        type(user).objects.filter(pk=user.pk).update(is_active=False)
        assert verdict(one) == "Your account was deactivated."

    def test_a_logout(self):
        user = make_user("sam", everywhere=True)
        client = Client()
        client.force_login(user)
        one = Grant(user.pk, client.cookies["sessionid"].value, WEB)
        client.logout()  # Django's own logout: the login session is deleted
        assert verdict(one) == "You were logged out."

    def test_a_login_session_that_now_belongs_to_someone_else(self):
        user, other = make_user("sam", everywhere=True), make_user("eve")
        one = grant_for(user)
        login = SessionStore(one.login_key)
        login[SESSION_KEY] = str(other.pk)
        login.save()
        assert verdict(one) == "You were logged out."

    def test_an_expired_login(self):
        user = make_user("sam", everywhere=True)
        one = grant_for(user)
        past = timezone.now() - dt.timedelta(seconds=1)
        LoginSession.objects.filter(pk=one.login_key).update(expire_date=past)
        assert verdict(one) == "Your login expired."

    def test_a_password_change_ends_the_login_as_django_does(self):
        user = make_user("sam", everywhere=True)
        one = grant_for(user)
        user.set_password("a-new-password")
        user.save()
        assert verdict(one) == "Your password was changed, which ended this login."

    def test_without_a_login_session_the_account_and_the_rules_still_count(self):
        user = make_user("sam", everywhere=True)
        one = grant_for(user, login=None)
        assert verdict(one) is None
        AccessRule.objects.all().delete()
        assert verdict(one) == "Your access to kubesim/default/web was revoked."

    def test_a_deleted_rule(self):
        user = make_user("sam", everywhere=True)
        one = grant_for(user, MAIN)
        AccessRule.objects.all().delete()
        assert verdict(one) == "Your access to kubesim/default/web/main was revoked."

    def test_an_expired_rule(self):
        user = make_user("sam", everywhere=True)
        one = grant_for(user, MAIN)
        AccessRule.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
        assert verdict(one) == "Your access to kubesim/default/web/main was revoked."

    def test_leaving_the_group_that_granted_it(self):
        user, team = make_user("sam"), Group.objects.create(name="ops")
        user.groups.add(team)
        grant(team)
        one = grant_for(user, MAIN)
        assert verdict(one) is None
        user.groups.remove(team)
        assert verdict(one) == "Your access to kubesim/default/web/main was revoked."

    def test_the_container_that_runs_is_what_counts(self):
        user = make_user("sam")
        grant(user, containers="main")
        assert verdict(grant_for(user, MAIN)) is None
        sidecar = ExecTarget("kubesim", "default", "web", "sidecar")
        assert verdict(grant_for(user, sidecar)) == (
            "Your access to kubesim/default/web/sidecar was revoked."
        )

    def test_a_failing_store_raises_rather_than_answer(self, monkeypatch):
        one = grant_for(make_user("sam", everywhere=True))

        def down(*args: Any, **kwargs: Any) -> Any:
            raise DatabaseError("connection refused")

        monkeypatch.setattr(type(LoginSession.objects), "filter", down)
        with pytest.raises(DatabaseError):
            revoked({uuid.uuid4(): one})


@pytest.mark.django_db
def test_one_round_costs_the_same_queries_for_2_sessions_or_40():
    """Users, login sessions: one query each; rules: one per user, not per session."""
    people = [make_user(name, everywhere=True) for name in ("sam", "kim")]
    logins = {user.pk: session_cookie(user) for user in people}

    def grants(count: int) -> dict[uuid.UUID, Grant]:
        return {
            uuid.uuid4(): Grant(people[n % 2].pk, logins[people[n % 2].pk], MAIN)
            for n in range(count)
        }

    queries = []
    for count in (2, 40):
        with CaptureQueriesContext(connection) as captured:
            assert revoked(grants(count)) == {}
        queries.append(len(captured))
    assert queries == [4, 4]


@pytest.mark.django_db
def test_a_cache_session_engine_is_asked_key_by_key(settings):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    user = make_user("sam", everywhere=True)
    client = Client()
    client.force_login(user)
    one = Grant(user.pk, client.cookies["sessionid"].value, WEB)
    assert verdict(one) is None
    client.logout()
    assert verdict(one) == "You were logged out."


# The revoker, with fakes and a fake clock.


class FakeSession:
    """A session as the revoker sees it; its end tells the revoker, as TerminalSession does."""

    def __init__(self, revoker: Revoker, container: str | None = "main") -> None:
        self.id = uuid.uuid4()
        self.container = container
        self.endings: list[Ending] = []
        self._revoker = revoker

    async def end(self, ending: Ending) -> None:
        self.endings.append(ending)
        self._revoker.forget(self.id)


class FakeCheck:
    """Answers from ``revoke`` (session id -> reason); records every batch it was asked."""

    def __init__(self) -> None:
        self.revoke: dict[uuid.UUID, str] = {}
        self.batches: list[dict[uuid.UUID, Grant]] = []
        self.fail: Exception | None = None
        self.hold: threading.Event | None = None
        self.during: Any = None

    def __call__(self, grants: Mapping[uuid.UUID, Grant]) -> dict[uuid.UUID, str]:
        self.batches.append(dict(grants))
        if self.during is not None:
            self.during()
        if self.hold is not None:
            self.hold.wait(10)
        if self.fail is not None:
            raise self.fail
        return {sid: why for sid, why in self.revoke.items() if sid in grants}


class FakeTime:
    """A clock that moves only when told; the revoker's loop sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.wake_at = 0.0
        self.sleeping: asyncio.Future[None] | None = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.wake_at = self.now + seconds
        self.sleeping = asyncio.get_running_loop().create_future()
        await self.sleeping

    async def advance(self, seconds: float, revoker: Revoker) -> None:
        """Once the loop sleeps, move on; a round that falls due runs until it sleeps again."""
        await until(lambda: self._asleep() or not revoker.running)
        self.now += seconds
        sleeping = self.sleeping
        if sleeping is None or not self._asleep() or self.now < self.wake_at:
            return
        sleeping.set_result(None)
        await until(
            lambda: (self._asleep() and self.sleeping is not sleeping) or not revoker.running
        )

    def _asleep(self) -> bool:
        return self.sleeping is not None and not self.sleeping.done()


@pytest.fixture
def check() -> FakeCheck:
    return FakeCheck()


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


async def stop(revoker: Revoker, time: FakeTime) -> None:
    """Forget every session; the loop then stops at its next wake-up."""
    for session_id in revoker.watched:
        revoker.forget(session_id)
    await time.advance(3600, revoker)
    assert not revoker.running


@pytest.fixture
async def revoker(check, time):
    revoker = Revoker(check=check, clock=time, sleep=time.sleep)
    yield revoker
    await stop(revoker, time)


def watched(revoker: Revoker, count: int = 1, **kwargs: Any) -> list[FakeSession]:
    sessions = [FakeSession(revoker, **kwargs) for _ in range(count)]
    for session in sessions:
        revoker.watch(session, Grant(1, "key", WEB))
    return sessions


async def test_a_round_asks_once_for_every_session_and_ends_the_revoked(revoker, check):
    keep, lose = watched(revoker, 2)
    check.revoke[lose.id] = "Your account was deactivated."
    assert await revoker.sweep() == [lose.id]
    assert len(check.batches) == 1 and set(check.batches[0]) == {keep.id, lose.id}
    (ending,) = lose.endings
    assert (ending.code, ending.reason) == (CloseCode.FORBIDDEN, "forbidden")
    assert ending.message == "Your account was deactivated."
    assert keep.endings == []
    assert revoker.watched == {keep.id}


async def test_the_check_is_asked_about_the_container_that_runs(revoker, check):
    (running,) = watched(revoker, container="main")
    (starting,) = watched(revoker, container=None)
    await revoker.sweep()
    assert check.batches[0][running.id].target == MAIN
    assert check.batches[0][starting.id].target == WEB  # as admitted, until it is known


async def test_a_failing_store_ends_nothing(revoker, check):
    sessions = watched(revoker, 3)
    check.revoke = {session.id: "You were logged out." for session in sessions}
    check.fail = DatabaseError("connection refused")
    assert await revoker.sweep() == []
    assert all(session.endings == [] for session in sessions)
    assert revoker.watched == {session.id for session in sessions}
    check.fail = None  # the store is back: the next round counts
    assert len(await revoker.sweep()) == 3


async def test_a_store_that_does_not_answer_ends_nothing_and_is_not_asked_twice(
    revoker, check, settings
):
    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_COMMIT_TIMEOUT": 0.05}
    (session,) = watched(revoker)
    check.revoke[session.id] = "You were logged out."
    check.hold = threading.Event()
    assert await revoker.sweep() == []
    assert await revoker.sweep() == []  # still waiting: this round is skipped
    assert len(check.batches) == 1 and session.endings == []
    check.hold.set()
    # The revoker's thread is one: this runs once the check has answered, and its result
    # reaches the loop after the check's.
    await asyncio.get_running_loop().run_in_executor(revocation.EXECUTOR, lambda: None)
    check.hold = None
    assert await revoker.sweep() == [session.id]


async def test_a_session_that_ended_during_the_check_is_not_ended_again(revoker, check):
    (session,) = watched(revoker)
    check.revoke[session.id] = "You were logged out."
    check.during = lambda: revoker.forget(session.id)
    assert await revoker.sweep() == []
    assert session.endings == []


async def test_rounds_run_every_interval_and_end_a_revoked_session_within_one(time):
    changed_at = 12.0
    asked_at: list[float] = []

    def check(grants: Mapping[uuid.UUID, Grant]) -> dict[uuid.UUID, str]:
        asked_at.append(time.now)
        time.now += 3  # a slow round: the next one still starts an interval after this one
        return {sid: "You were logged out." for sid in grants} if asked_at[-1] > changed_at else {}

    revoker = Revoker(check=check, clock=time, sleep=time.sleep)
    (session,) = watched(revoker)
    while not session.endings:
        await time.advance(1, revoker)
    interval = get_config()["REVOCATION_INTERVAL"]
    assert asked_at == [interval, 2 * interval, 3 * interval]
    assert asked_at[-1] - changed_at <= interval
    await time.advance(interval, revoker)
    assert not revoker.running  # nothing left to watch: the loop stops
    watched(revoker)
    assert revoker.running  # and starts again with the next session
    await stop(revoker, time)


# A real TerminalSession, ended by the revoker.


def watched_terminal(parts: Parts, revoker: Revoker) -> TerminalSession:
    """The fakes' TerminalSession, wired to ``revoker`` as assembly wires it."""
    session_id = parts.session.id
    parts.session = TerminalSession(
        session_id,
        browser=parts.browser,
        shell=parts.shell,
        recorder=parts.recorder,
        records=parts.records,
        notices=parts.notices,
        watchdog=parts.watchdog,  # type: ignore[arg-type]
        window=FlowWindow(1024 * 1024),
        max_early_input=64,
        flush_timeout=0.2,
        size_wait=0.0,
        on_ended=lambda: revoker.forget(session_id),
    )
    revoker.watch(parts.session, Grant(1, "key", WEB))
    return parts.session


async def test_a_revoked_terminal_ends_with_4403_its_reason_and_record(revoker, check):
    parts = Parts()
    session = watched_terminal(parts, revoker)
    assert session.container is None
    await parts.started()
    assert session.container == "main"
    message = "Your access to kubesim/default/web/main was revoked."
    check.revoke[session.id] = message
    assert await revoker.sweep() == [session.id]
    ending = parts.assert_ended_once(Session.EndReason.FORBIDDEN)
    assert ending.message == message
    assert parts.browser.texts[-1] == {"type": "error", "code": "forbidden", "message": message}
    assert parts.browser.closed == 4403
    assert session.state is State.ENDED and revoker.watched == set()


async def test_a_terminal_that_ends_by_itself_is_forgotten(revoker):
    parts = Parts()
    session = watched_terminal(parts, revoker)
    await parts.started()
    assert revoker.watched == {session.id}
    parts.stream.events.put_nowait(ExecStatus(0, "", ""))
    await session.wait_ended()
    assert revoker.watched == set()


# On the real store, through the revoker's own thread.


@pytest.mark.django_db(transaction=True)
async def test_the_revoker_asks_the_real_store_in_its_thread(time):
    def permitted_user() -> tuple[Any, Grant]:
        user = make_user("sam", everywhere=True)
        return user, grant_for(user)

    user, one = await sync_to_async(permitted_user)()
    revoker = Revoker(clock=time, sleep=time.sleep)
    session = FakeSession(revoker)
    revoker.watch(session, one)
    assert await revoker.sweep() == []
    await type(user).objects.filter(pk=user.pk).aupdate(is_active=False)
    assert await revoker.sweep() == [session.id]
    assert session.endings[0].message == "Your account was deactivated."
    await stop(revoker, time)


# The setting.


def test_the_interval_defaults_to_5_seconds_and_is_checked(settings):
    assert get_config()["REVOCATION_INTERVAL"] == 5
    settings.TERMINALS = {**settings.TERMINALS, "REVOCATION_INTERVAL": 0}
    errors = [m for m in run_checks() if m.id == "terminals.E007"]
    assert len(errors) == 1 and "REVOCATION_INTERVAL" in errors[0].msg
