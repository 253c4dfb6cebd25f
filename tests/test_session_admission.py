"""Admission: who may open a terminal on what, and what each refusal leaves in the store.

Every test builds the ASGI scope by hand and admits against the real database, in Channels'
database thread as the consumer does. A refusal is checked three ways: the close code, the
message the page shows, and the record left (a DeniedAttempt, a Session, or nothing).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser, Group
from django.db import OperationalError
from django.utils import timezone

from terminals import protocol, records, servers
from terminals.conf import get_config
from terminals.models import DeniedAttempt, Server, Session
from terminals.permissions import ExecTarget
from terminals.protocol import CloseCode
from terminals.session import admission as admission_module
from terminals.session.admission import Admission, Admitted
from terminals.session.ending import Ending, EndSession
from tests.fixtures.users import make_user

pytestmark = pytest.mark.django_db(transaction=True)

STORE_DOWN = "The audit store is unavailable, so no terminal can open."
# Set by terminals.middleware when the store failed while looking up the user.
STORE_UNAVAILABLE = "terminals.store_unavailable"
TARGET = ExecTarget("kubesim", "default", "web-0")


def scope(
    user: Any,
    *,
    cluster: str = "kubesim",
    namespace: str = "default",
    pod: str = "web-0",
    query: bytes = b"",
    **extra: Any,
) -> dict[str, Any]:
    """The scope of a terminal WebSocket, as the router and the auth stack leave it."""
    return {
        "url_route": {"kwargs": {"cluster": cluster, "namespace": namespace, "pod": pod}},
        "query_string": query,
        "user": user,
        "client": ("10.0.0.7", 5555),
        "headers": [(b"user-agent", b"UA")],
        **extra,
    }


async def refused(admission: Admission) -> Ending:
    """The ending a refused admission raises."""
    with pytest.raises(EndSession) as raised:
        await admission.admit()
    return raised.value.ending


@database_sync_to_async
def denials() -> list[DeniedAttempt]:
    return list(DeniedAttempt.objects.order_by("at"))


@database_sync_to_async
def sessions() -> list[Session]:
    return list(Session.objects.select_related("user").order_by("started_at"))


@database_sync_to_async
def end(record: Session) -> None:
    records.close_session(record.pk, Session.EndReason.EXIT, exit_code=0)


def configure(settings: Any, **terminals: Any) -> None:
    """Change TERMINALS for this test (get_config()'s cache is cleared by the signal)."""
    settings.TERMINALS = {**settings.TERMINALS, **terminals}


@pytest.fixture
def alice() -> Any:
    """May open any terminal."""
    return make_user("alice", everywhere=True)


@pytest.fixture
def bob() -> Any:
    """May open none."""
    return make_user("bob")


@pytest.fixture
def server() -> Server:
    return servers.register("web-1", 4242)


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[ExecTarget]:
    """The targets admission asks Django's permission about."""
    calls: list[ExecTarget] = []
    real = admission_module.may_exec

    def spy(user: Any, target: ExecTarget) -> bool:
        calls.append(target)
        return real(user, target)

    monkeypatch.setattr(admission_module, "may_exec", spy)
    return calls


# The order of the checks, and what each refusal leaves.


async def test_a_bad_name_is_refused_before_anything_is_asked_of_permissions(alice, asked):
    ending = await refused(Admission(scope(alice, pod="Web_0!"), get_config()))

    assert ending.code == CloseCode.BAD_REQUEST
    assert ending.message == "'Web_0!' is not a valid pod name."
    assert asked == []
    [denial] = await denials()
    assert (denial.code, denial.username, denial.pod) == ("bad_request", "alice", "Web_0!")
    assert denial.reason == "'Web_0!' is not a valid pod name."
    assert await sessions() == []


async def test_a_bad_name_is_refused_before_the_login_is_checked():
    query = b"container=app&command=rm -rf /"
    ending = await refused(Admission(scope(AnonymousUser(), query=query), get_config()))

    assert ending.code == CloseCode.BAD_REQUEST
    assert ending.message == "'rm -rf /' is not a valid command."
    [denial] = await denials()
    assert (denial.code, denial.user_id, denial.username) == ("bad_request", None, "")
    assert (denial.container, denial.command) == ("app", "rm -rf /")


async def test_an_anonymous_user_is_asked_to_log_in_before_the_cluster_is_looked_up():
    ending = await refused(Admission(scope(AnonymousUser(), cluster="nowhere"), get_config()))

    assert ending.code == CloseCode.NOT_AUTHENTICATED
    assert ending.message == "Log in to open a terminal."
    [denial] = await denials()
    assert (denial.code, denial.user_id, denial.username) == ("not_authenticated", None, "")
    assert (denial.cluster, denial.client_address, denial.user_agent) == (
        "nowhere",
        "10.0.0.7",
        "UA",
    )


async def test_an_unknown_cluster_is_not_found_before_the_permission_is_asked(bob, asked):
    ending = await refused(Admission(scope(bob, cluster="nowhere"), get_config()))

    assert ending.code == CloseCode.NOT_FOUND
    assert ending.message == "There is no cluster called 'nowhere'."
    assert asked == []
    assert await denials() == []


async def test_a_target_the_user_may_not_open_is_forbidden_and_written_down(bob, asked):
    query = b"container=app"
    ending = await refused(Admission(scope(bob, query=query), get_config()))

    assert ending.code == CloseCode.FORBIDDEN
    assert ending.message == "You may not open a terminal on kubesim/default/web-0/app."
    assert asked == [ExecTarget("kubesim", "default", "web-0", "app")]
    [denial] = await denials()
    assert (denial.code, denial.user_id, denial.username) == ("forbidden", bob.pk, "bob")
    assert (denial.cluster, denial.namespace, denial.pod, denial.container) == (
        "kubesim",
        "default",
        "web-0",
        "app",
    )
    assert (denial.client_address, denial.user_agent) == ("10.0.0.7", "UA")
    assert denial.reason == "You may not open a terminal on kubesim/default/web-0/app."
    assert await sessions() == []


async def test_a_stopping_server_refuses_first_and_records_nothing():
    # Every later check would fail too: a bad name, no login.
    admission = Admission(scope(AnonymousUser(), pod="Web_0!"), get_config(), server_stopping=True)

    ending = await refused(admission)

    assert ending.code == CloseCode.SERVER_RESTARTING == 1012
    assert protocol.ERROR_WORDS[ending.code] == "server_restarting"
    assert ending.message == "The server is restarting; open the terminal again in a moment."
    assert await denials() == []
    assert await sessions() == []


async def test_a_store_that_failed_to_look_up_the_user_refuses_with_4503():
    # The auth stack could not load the user, so it is anonymous: not a 4401.
    admission = Admission(scope(AnonymousUser(), **{STORE_UNAVAILABLE: True}), get_config())

    ending = await refused(admission)

    assert ending.code == CloseCode.AUDIT_UNAVAILABLE
    assert ending.message == STORE_DOWN
    assert await denials() == []
    assert await sessions() == []


# Admitted.


async def test_an_admitted_connect_opens_its_session_record(alice, server):
    query = b"container=app&command=/bin/sh"
    admission = Admission(scope(alice, query=query), get_config(), server_id=server.pk)

    admitted = await admission.admit()

    assert isinstance(admitted, Admitted)
    assert admitted.target == ExecTarget("kubesim", "default", "web-0", "app", "/bin/sh")
    assert admitted.impersonation == []  # IMPERSONATE is off by default
    [record] = await sessions()
    assert record.pk == admitted.record.pk
    assert (record.user_id, record.username) == (alice.pk, "alice")
    assert (record.cluster, record.namespace, record.pod, record.container) == (
        "kubesim",
        "default",
        "web-0",
        "app",
    )
    assert record.command == ["/bin/sh"]
    assert (record.client_address, record.user_agent) == ("10.0.0.7", "UA")
    assert record.server_id == server.pk
    assert record.ended_at is None
    assert await denials() == []


async def test_an_admitted_connect_carries_the_impersonation_headers(settings):
    configure(settings, IMPERSONATE=True, IMPERSONATE_GROUP_PREFIX="django:")

    def carol() -> Any:
        user = make_user("carol", everywhere=True)
        user.groups.add(Group.objects.create(name="oncall"))
        return user

    user = await database_sync_to_async(carol)()

    admitted = await Admission(scope(user), get_config()).admit()

    assert admitted.impersonation == [
        ("Impersonate-User", "carol"),
        ("Impersonate-Group", "django:oncall"),
    ]


# The per-user limit.


async def test_a_connect_past_the_limit_is_refused_with_4429(alice, server, settings):
    configure(settings, MAX_SESSIONS_PER_USER=1)
    await Admission(scope(alice), get_config(), server_id=server.pk).admit()

    ending = await refused(Admission(scope(alice), get_config(), server_id=server.pk))

    assert ending.code == CloseCode.TOO_MANY_SESSIONS
    assert ending.message.startswith("You have 1 terminal")
    assert ending.message.endswith("close one first.")
    assert len(await sessions()) == 1
    assert await denials() == []


async def test_the_limit_is_per_user(alice, server, settings):
    configure(settings, MAX_SESSIONS_PER_USER=1)
    dave = await database_sync_to_async(make_user)("dave", everywhere=True)
    await Admission(scope(alice), get_config(), server_id=server.pk).admit()

    admitted = await Admission(scope(dave), get_config(), server_id=server.pk).admit()

    assert admitted.record.username == "dave"


async def test_a_session_of_a_lost_server_does_not_count(alice, server, settings):
    configure(settings, MAX_SESSIONS_PER_USER=1)
    first = await Admission(scope(alice), get_config(), server_id=server.pk).admit()
    stale = timezone.now() - dt.timedelta(seconds=get_config()["SERVER_TIMEOUT"] + 5)
    await database_sync_to_async(
        lambda: Server.objects.filter(pk=server.pk).update(heartbeat_at=stale)
    )()
    alive = await database_sync_to_async(servers.register)("web-2", 4343)

    second = await Admission(scope(alice), get_config(), server_id=alive.pk).admit()

    assert second.record.pk != first.record.pk
    assert len(await sessions()) == 2


async def test_an_ended_session_does_not_count(alice, server, settings):
    configure(settings, MAX_SESSIONS_PER_USER=1)
    first = await Admission(scope(alice), get_config(), server_id=server.pk).admit()
    await end(first.record)

    second = await Admission(scope(alice), get_config(), server_id=server.pk).admit()

    assert second.record.pk != first.record.pk


# A failing store fails closed.


async def test_a_store_that_fails_while_opening_the_record_refuses_with_4503(
    alice, monkeypatch, caplog
):
    def fail(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(records, "open_session", fail)

    ending = await refused(Admission(scope(alice), get_config()))

    assert ending.code == CloseCode.AUDIT_UNAVAILABLE
    assert ending.message == STORE_DOWN
    assert await sessions() == []
    assert await denials() == []
    assert "The audit store failed during admission" in caplog.text


class StalledStore:
    """``records.open_session`` blocks (the first call only) until :meth:`release`; then it
    commits the record late if ``commit_late``, else gives up without one."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.released = threading.Event()
        self.stalled = False
        self.commit_late = False

    def open_session(self, *args: Any, **kwargs: Any) -> Any:
        if not self.stalled:
            self.stalled = True
            self.released.wait()
            if not self.commit_late:
                return None
        return self.real(*args, **kwargs)

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def stalled(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[StalledStore]:
    """A store that hangs on the record; AUDIT_COMMIT_TIMEOUT is 1 s. Released at teardown,
    before the database is flushed, so that Channels' database thread is free again."""
    configure(settings, AUDIT_COMMIT_TIMEOUT=1)
    store = StalledStore(real=records.open_session)
    monkeypatch.setattr(records, "open_session", store.open_session)
    yield store
    store.commit_late = False  # nothing may write while the database is flushed
    store.release()


async def test_a_store_that_hangs_refuses_with_4503_within_the_commit_timeout(alice, stalled):
    bound = get_config()["AUDIT_COMMIT_TIMEOUT"] + 2  # generous: the thread hops, not the bound
    loop = asyncio.get_running_loop()
    started = loop.time()

    async with asyncio.timeout(bound):
        ending = await refused(Admission(scope(alice), get_config()))

    assert ending.code == CloseCode.AUDIT_UNAVAILABLE
    assert ending.message == STORE_DOWN
    assert loop.time() - started >= 1  # it did wait for the store, as long as allowed


async def test_a_record_committed_after_admission_gave_up_does_not_hold_a_place(
    alice, server, stalled, settings
):
    configure(settings, MAX_SESSIONS_PER_USER=1)
    ending = await refused(Admission(scope(alice), get_config(), server_id=server.pk))
    assert ending.code == CloseCode.AUDIT_UNAVAILABLE

    # The store comes back and commits the record nobody is waiting for any more. Channels'
    # database thread is one thread: the next admission's queries run after that commit.
    stalled.commit_late = True
    stalled.release()
    try:
        again = await Admission(scope(alice), get_config(), server_id=server.pk).admit()
    except EndSession as refusal:
        again = refusal.ending

    assert isinstance(again, Admitted), f"refused: {again}"


# Denials are written down, but never at the cost of the refusal.


async def test_record_denial_swallows_a_failing_store_and_logs_it(alice, monkeypatch, caplog):
    def fail(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(records, "record_denial", fail)
    admission = Admission(scope(alice), get_config())

    with caplog.at_level(logging.ERROR, logger="terminals.session.admission"):
        await admission.record_denial(TARGET, CloseCode.FORBIDDEN, "You may not.")

    assert "Could not record a denied attempt on kubesim/default/web-0" in caplog.text
    assert await denials() == []


async def test_a_forbidden_connect_stays_4403_when_the_denial_cannot_be_written(bob, monkeypatch):
    def fail(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(records, "record_denial", fail)

    ending = await refused(Admission(scope(bob), get_config()))

    assert ending.code == CloseCode.FORBIDDEN
    assert ending.message == "You may not open a terminal on kubesim/default/web-0."
