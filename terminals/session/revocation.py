"""Revocation: a live session ends within seconds once its user may no longer have it.

Every ``REVOCATION_INTERVAL`` seconds (5 by default) each serving process asks the store again,
in one batch for all of its live sessions, what admission asked once:

1. Does the user still exist, and is the account active? ("Your account was deactivated.")
2. Does the browser's login (the Django session the socket was opened with) still exist,
   unexpired, for that user, with the password it was made with? ("You were logged out.",
   "Your login expired.", "Your password was changed, …") Django retires a login session on
   logout and also when it renews one (a new login, one's own password change): the socket's
   login then no longer exists either, and the terminal ends with it.
3. Does ``terminals.exec_pod`` (:func:`~terminals.permissions.may_exec`) still allow the
   target, with the container that really runs? ("Your access to <target> was revoked.")

A session that fails ends through its one end path, :meth:`TerminalSession.end`, with close
code 4403 ``forbidden`` and that message; its record says ``forbidden`` with the message.

Why a periodic check rather than signals: it sees every way a permission can change (the
admin, a shell, raw SQL, a rule's expiry passing, a group synced from LDAP, any other auth
backend) in every process, without a channel layer, and it cannot miss a change the way a
lost broadcast would. The bound: a change at T ends the session by T + ``REVOCATION_INTERVAL``
+ one check + the end itself (hang-up, last commit), about 6 s with the defaults.

Cost of one round (only while the process holds sessions): one query for the users, one for
the login sessions (``db`` and ``cached_db`` engines; other engines one lookup per session), and
one for the access rules of each distinct user (``TerminalsBackend``; none for superusers;
other backends whatever they cost). Per session, only Python: decoding its login session and
matching rules, some microseconds. The round runs on a thread of its own (:data:`EXECUTOR`), so
it never waits behind Channels' database thread or delays the heartbeats.

A round that fails (the store is down, or does not answer within ``AUDIT_COMMIT_TIMEOUT``) ends
nothing and is tried again at the next interval: the store's own failure is handled where it
matters (writes fail closed, with 4503). A login the session engine cannot vouch for either way
ends nothing either.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Protocol

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.backends.signed_cookies import SessionStore as SignedCookieStore
from django.core.exceptions import ValidationError
from django.db import close_old_connections
from django.utils import timezone, translation
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from ..conf import get_config
from ..permissions import ExecTarget, may_exec
from ..protocol import CloseCode
from .ending import Ending

logger = logging.getLogger(__name__)

#: One thread for the checks: they must not queue behind the thread that
#: ``database_sync_to_async`` shares across every consumer, nor delay the servers' heartbeats.
EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="terminals-revocation")

# Marked for translation, kept in English: a round says them in each session's language.
ACCOUNT_DELETED = gettext_noop("Your account was deleted.")
DEACTIVATED = gettext_noop("Your account was deactivated.")
LOGGED_OUT = gettext_noop("You were logged out.")
LOGIN_EXPIRED = gettext_noop("Your login expired.")
PASSWORD_CHANGED = gettext_noop("Your password was changed, which ended this login.")
ACCESS_REVOKED = gettext_noop("Your access to %(target)s was revoked.")

_CHUNK = 500  # login session keys per query, well under every database's limit on parameters


@dataclass(frozen=True)
class Grant:
    """What a session was admitted on: the question to ask again."""

    user_id: Any
    # The Django session key of the browser's login; None when the socket had no session
    # (another auth middleware): then only the account and the permission are checked.
    login_key: str | None
    target: ExecTarget  # as admitted; the container that runs replaces "" once known
    # The language of the connection the session was opened on, for its reason ("": the
    # default). The revoker's task is no connection's, so it cannot take the active one.
    language: str = ""


@dataclass
class Logins:
    """What the session engine says about some login session keys."""

    data: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> the session's data
    expired: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)  # the engine could not say: end nothing

    def problem(self, key: str, user: Any) -> str | None:
        """Why the login ``key`` no longer authenticates ``user``, or None."""
        if key in self.unknown:
            return None
        if key in self.expired:
            return LOGIN_EXPIRED
        data = self.data.get(key)
        if data is None:
            return LOGGED_OUT
        return _login_problem(data, user)


# Synchronous: run in the revoker's thread.


def revoked(
    grants: Mapping[uuid.UUID, Grant], now: dt.datetime | None = None
) -> dict[uuid.UUID, str]:
    """The sessions of ``grants`` that are no longer permitted, each with the reason (in the
    grant's language).

    Raises whatever the store raises: a failed check must end nothing.
    """
    if not grants:
        return {}
    now = now or timezone.now()
    users = get_user_model()._default_manager.in_bulk({g.user_id for g in grants.values()})
    logins = login_sessions({g.login_key for g in grants.values() if g.login_key}, now)
    reasons: dict[uuid.UUID, str] = {}
    for session_id, grant in grants.items():
        why = _why_revoked(grant, users.get(grant.user_id), logins)
        if why is not None:
            reasons[session_id] = _said(why, grant)
    return reasons


def _said(why: str, grant: Grant) -> str:
    """The reason ``why`` (one of the constants above) as the session's user is told it."""
    with translation.override(grant.language or None):
        text = _(why)
    return text % {"target": grant.target} if why == ACCESS_REVOKED else text


def _why_revoked(grant: Grant, user: Any, logins: Logins) -> str | None:
    if user is None:
        return ACCOUNT_DELETED
    if not getattr(user, "is_active", True):
        return DEACTIVATED
    if grant.login_key is not None:
        problem = logins.problem(grant.login_key, user)
        if problem is not None:
            return problem
    # The user object is shared by the user's sessions, so TerminalsBackend's rule cache on it
    # makes this one query per user, not per session.
    if not may_exec(user, grant.target):
        return ACCESS_REVOKED
    return None


def login_sessions(keys: Collection[str], now: dt.datetime) -> Logins:
    """Look up login sessions by key: in one query per 500 keys where the engine is a table."""
    logins = Logins()
    store_class: Any = import_module(settings.SESSION_ENGINE).SessionStore
    if issubclass(store_class, DatabaseSessionStore):  # db and cached_db: the table is the truth
        model = store_class.get_model_class()
        codec = store_class()
        ordered = sorted(keys)
        for start in range(0, len(ordered), _CHUNK):
            rows = model.objects.filter(session_key__in=ordered[start : start + _CHUNK])
            for key, data, expires in rows.values_list(
                "session_key", "session_data", "expire_date"
            ):
                if expires <= now:
                    logins.expired.add(key)
                else:
                    logins.data[key] = codec.decode(data)
        return logins
    for key in keys:
        _look_up_one(store_class(key), key, logins)
    return logins


def _look_up_one(store: Any, key: str, logins: Logins) -> None:
    """Other engines (cache, file, signed cookies), one key at a time."""
    if isinstance(store, SignedCookieStore):
        # The key is the data: the server cannot see a logout, only the login's expiry.
        data = store.load()
        if data:
            logins.data[key] = data
        else:
            logins.expired.add(key)
        return
    if not store.exists(key):  # raises if the engine's store is down: the round fails
        return
    data = store.load()
    if data:
        logins.data[key] = data
    else:
        # Gone or expired since exists(), or an error load() swallowed (the cache engine
        # does): ask again next round rather than end a session on a guess.
        logins.unknown.add(key)


def _login_problem(data: Mapping[str, Any], user: Any) -> str | None:
    """As ``django.contrib.auth.get_user`` decides, without its side effects."""
    try:
        user_id = type(user)._meta.pk.to_python(data[SESSION_KEY])
        backend = data[BACKEND_SESSION_KEY]
    except (KeyError, ValidationError):
        return LOGGED_OUT
    if user_id != user.pk or backend not in settings.AUTHENTICATION_BACKENDS:
        return LOGGED_OUT
    if not hasattr(user, "get_session_auth_hash"):
        return None
    session_hash = data.get(HASH_SESSION_KEY)
    if not session_hash:
        return LOGGED_OUT
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return None
    # Hashes made with a SECRET_KEY_FALLBACKS key are still good (Django renews them).
    if any(
        constant_time_compare(session_hash, fallback)
        for fallback in user.get_session_auth_fallback_hash()
    ):
        return None
    return PASSWORD_CHANGED


# The async side: one revoker per process.


class Revocable(Protocol):
    """What the revoker needs of a session (``TerminalSession``)."""

    id: uuid.UUID

    @property
    def container(self) -> str | None: ...

    async def end(self, ending: Ending) -> None: ...


Check = Callable[[Mapping[uuid.UUID, Grant]], Mapping[uuid.UUID, str]]


class Revoker:
    """Checks this process's live sessions every ``REVOCATION_INTERVAL`` and ends the revoked.

    Sessions are watched from assembly until their end (``TerminalSession``'s ``on_ended``
    calls :meth:`forget`). The loop runs while any session is watched; :meth:`sweep` is one
    round, which tests call directly.
    """

    def __init__(
        self,
        *,
        check: Check = revoked,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._check = check
        self._clock = clock
        self._sleep = sleep
        self._watched: dict[uuid.UUID, tuple[Revocable, Grant]] = {}
        self._task: asyncio.Task[None] | None = None
        self._pending: asyncio.Future[Mapping[uuid.UUID, str]] | None = None
        self._ending: set[asyncio.Task[None]] = set()

    @property
    def watched(self) -> set[uuid.UUID]:
        """The sessions being watched."""
        return set(self._watched)

    @property
    def running(self) -> bool:
        """True while the loop runs (it stops once nothing is watched)."""
        return self._task is not None and not self._task.done()

    def watch(self, session: Revocable, grant: Grant) -> None:
        """Check ``session`` against ``grant`` from now until :meth:`forget`; called as the
        session opens, so a grant without a language takes the connection's."""
        if not grant.language:
            grant = dataclasses.replace(grant, language=translation.get_language() or "")
        self._watched[session.id] = (session, grant)
        loop = asyncio.get_running_loop()
        task = self._task
        # A task of another loop is dead with its loop (a test's loop, say): start afresh.
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="terminals revocation")

    def forget(self, session_id: uuid.UUID) -> None:
        """The session has ended."""
        self._watched.pop(session_id, None)

    async def sweep(self) -> list[uuid.UUID]:
        """One round: ask about every watched session, end those no longer permitted."""
        if not self._watched:
            return []
        if self._pending is not None and not self._pending.done():
            logger.warning("The last revocation check has not answered yet; skipping a round")
            return []
        watched = dict(self._watched)
        grants = {sid: _resolved(session, grant) for sid, (session, grant) in watched.items()}
        loop = asyncio.get_running_loop()
        pending = self._pending = loop.run_in_executor(
            EXECUTOR, _with_connection, self._check, grants
        )
        try:
            async with asyncio.timeout(get_config()["AUDIT_COMMIT_TIMEOUT"]):
                # Shielded: a check that times out keeps its thread; the next round waits.
                reasons = await asyncio.shield(pending)
        except Exception:
            logger.warning("Could not check for revoked access; nothing ended", exc_info=True)
            return []
        ended: list[uuid.UUID] = []
        for session_id, reason in reasons.items():
            entry = self._watched.get(session_id)
            if entry is None or entry[0] is not watched[session_id][0]:
                continue  # it ended meanwhile
            session = entry[0]
            self.forget(session_id)
            logger.info("Session %s is no longer permitted: %s", session_id, reason)
            task = asyncio.ensure_future(self._end(session, reason))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)
            ended.append(session_id)
        if self._ending:
            # Not cancelled with the round: an end, once begun, runs to its record.
            await asyncio.wait(set(self._ending))
        return ended

    async def _end(self, session: Revocable, reason: str) -> None:
        try:
            await session.end(Ending.of(CloseCode.FORBIDDEN, reason))
        except Exception:
            logger.exception("Ending revoked session %s failed", session.id)

    async def _run(self) -> None:
        """A round every REVOCATION_INTERVAL seconds (from the start of the last) while watched."""
        due = self._clock() + get_config()["REVOCATION_INTERVAL"]
        while True:
            await self._sleep(max(0.0, due - self._clock()))
            if not self._watched:
                return  # watch() starts another
            due = self._clock() + get_config()["REVOCATION_INTERVAL"]
            try:
                await self.sweep()
            except Exception:  # a bug must not stop the checks
                logger.exception("A revocation round failed")


def _resolved(session: Revocable, grant: Grant) -> Grant:
    """The grant for the container that really runs, once it is known."""
    container = session.container
    if container and container != grant.target.container:
        return dataclasses.replace(
            grant, target=dataclasses.replace(grant.target, container=container)
        )
    return grant


def _with_connection(check: Check, grants: Mapping[uuid.UUID, Grant]) -> Mapping[uuid.UUID, str]:
    """Run the check in the revoker's thread, its connection checked as a request's would be."""
    close_old_connections()
    try:
        return check(grants)
    finally:
        close_old_connections()


@functools.cache
def revoker() -> Revoker:
    """This process's revoker (``revoker.cache_clear()`` gives a fresh one, in tests)."""
    return Revoker()
