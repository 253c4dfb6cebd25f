"""Admission: who may open a terminal on what, decided before anything is asked of a cluster.

In order: the names (Kubernetes names, never sent on otherwise), the login, the cluster, the
permission (``terminals.exec_pod``), what the login session must have proved (a second factor with
``REQUIRE_MFA``, a recent authentication for an access rule's step-up: ``terminals.mfa``), the
per-user limit (live sessions only). Refusals of a bad request, an anonymous user, a forbidden
target and a session short of a proof are written down as ``DeniedAttempt``s.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.db import DatabaseError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop, ngettext

from .. import mfa, protocol, records
from ..clients import client_address
from ..impersonation import impersonation_headers
from ..kube.clusters import UnknownCluster, get_cluster
from ..middleware import STORE_UNAVAILABLE
from ..models import Session
from ..permissions import ExecTarget, may_exec
from ..protocol import CloseCode
from .ending import EndSession

logger = logging.getLogger(__name__)

# Refusals written down as DeniedAttempt records.
DENIALS = {CloseCode.BAD_REQUEST, CloseCode.NOT_AUTHENTICATED, CloseCode.FORBIDDEN}
# Marked for translation, kept in English: said through gettext() where it is sent.
STORE_DOWN = gettext_noop("The audit store is unavailable, so no terminal can open.")
# Ends of records saved after admission gave up, kept until they are written.
_LATE_ENDS: set[asyncio.Future[None]] = set()


@dataclass(frozen=True)
class Admitted:
    """A connect that may go ahead: its open record and what to send the cluster."""

    record: Session
    target: ExecTarget
    impersonation: list[tuple[str, str]]


def target_from_scope(scope: Mapping[str, Any]) -> ExecTarget:
    """What the URL asks for, not yet validated."""
    kwargs = scope["url_route"]["kwargs"]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return ExecTarget(
        cluster=kwargs["cluster"],
        namespace=kwargs["namespace"],
        pod=kwargs["pod"],
        container=(query.get("container") or [""])[0],
        command=(query.get("command") or [""])[0],
    )


def user_agent(scope: Mapping[str, Any]) -> str:
    """The browser's User-Agent header."""
    for name, value in scope.get("headers", []):
        if name == b"user-agent":
            return str(value.decode("latin-1"))
    return ""


class Admission:
    """Admits one connect, or raises :class:`EndSession` with the refusal."""

    def __init__(
        self,
        scope: Mapping[str, Any],
        config: Mapping[str, Any],
        server_id: uuid.UUID | None = None,
        server_stopping: bool = False,
    ) -> None:
        self.scope = scope
        self.config = config
        self.server_id = server_id
        self.server_stopping = server_stopping
        self.target = target_from_scope(scope)
        # A record the store saves after admission gave up waiting must not stay open (it
        # would hold a place in the user's limit for good): the thread and the loop agree on
        # who ends it, under this lock.
        self._lock = threading.Lock()
        self._gave_up = False
        self._opened: uuid.UUID | None = None

    async def admit(self) -> Admitted:
        """Check everything, open the record; denials are recorded before raising."""
        try:
            return await self._admit()
        except EndSession as end:
            if end.ending.code in DENIALS:
                await self.record_denial(
                    self.target, end.ending.code, end.ending.message, end.ending.word
                )
            raise

    async def authenticate(self) -> Any:
        """The checks every connect passes first, a resume's as well as a new terminal's: the
        server not stopping, names that are names, the store up, a login. Returns the user;
        raises :class:`EndSession` (denials recorded)."""
        try:
            return self._authenticated()
        except EndSession as end:
            if end.ending.code in DENIALS:
                await self.record_denial(self.target, end.ending.code, end.ending.message)
            raise

    def _authenticated(self) -> Any:
        if self.server_stopping:
            raise EndSession(
                CloseCode.SERVER_RESTARTING,
                _("The server is restarting; open the terminal again in a moment."),
            )
        invalid = self.target.invalid_reason()
        if invalid:
            raise EndSession(CloseCode.BAD_REQUEST, invalid)
        if self.scope.get(STORE_UNAVAILABLE):
            raise EndSession(CloseCode.AUDIT_UNAVAILABLE, _(STORE_DOWN))
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            raise EndSession(CloseCode.NOT_AUTHENTICATED, _("Log in to open a terminal."))
        return user

    async def _admit(self) -> Admitted:
        self._authenticated()
        try:
            get_cluster(self.target.cluster)
        except UnknownCluster:
            raise EndSession(
                CloseCode.NOT_FOUND,
                _("There is no cluster called %(cluster)s.")
                % {"cluster": repr(self.target.cluster)},
            ) from None
        impersonation = await self.permitted(self.target)
        if impersonation is None:
            raise EndSession(
                CloseCode.FORBIDDEN,
                _("You may not open a terminal on %(target)s.") % {"target": self.target},
            )
        # The terminal page sends the user to the page that meets the need first; this is for
        # a socket opened otherwise (another tab, a script, a session that changed meanwhile).
        need: mfa.Requirement | None = await self._store(self._requirement, self.target)
        if need is not None:
            raise EndSession(CloseCode.FORBIDDEN, need.message, need.word)
        try:
            record = await self._store(self._open_record)
        except EndSession:
            self._give_up()
            raise
        if record is None:
            limit = self.config["MAX_SESSIONS_PER_USER"]
            raise EndSession(
                CloseCode.TOO_MANY_SESSIONS,
                ngettext(
                    "You have %(limit)s terminal open already; close one first.",
                    "You have %(limit)s terminals open already; close one first.",
                    limit,
                )
                % {"limit": limit},
            )
        return Admitted(record, self.target, impersonation)

    async def permitted(self, target: ExecTarget) -> list[tuple[str, str]] | None:
        """The impersonation headers if the user may open ``target``, else None."""
        headers: list[tuple[str, str]] | None = await self._store(self._permitted, target)
        return headers

    async def second_factor(self, target: ExecTarget) -> None:
        """Refuse a login session that ``REQUIRE_MFA`` does not accept (a resume's check, of
        the session on ``target``); raises :class:`EndSession` (the denial recorded)."""
        need: mfa.Requirement | None = await self._store(self._second_factor)
        if need is not None:
            await self.record_denial(target, CloseCode.FORBIDDEN, need.message, need.word)
            raise EndSession(CloseCode.FORBIDDEN, need.message, need.word)

    async def record_denial(
        self, target: ExecTarget, code: CloseCode, message: str, word: str = ""
    ) -> None:
        """Write down a refusal; a store that fails only loses this record, logged."""
        try:
            await self._store(self._record_denial, target, code, message, word)
        except EndSession:
            logger.error("Could not record a denied attempt on %s: %s", target, message)

    async def _store(self, function: Any, *args: Any) -> Any:
        """Run ORM work in Channels' database thread, bounded; a failing store is a 4503."""
        try:
            async with asyncio.timeout(self.config["AUDIT_COMMIT_TIMEOUT"]):
                return await database_sync_to_async(function)(*args)
        except (DatabaseError, TimeoutError) as exc:
            logger.error("The audit store failed during admission: %r", exc)
            raise EndSession(CloseCode.AUDIT_UNAVAILABLE, _(STORE_DOWN)) from exc

    # Synchronous ORM work.

    def _permitted(self, target: ExecTarget) -> list[tuple[str, str]] | None:
        user = self.scope["user"]
        if not may_exec(user, target):
            return None
        return impersonation_headers(user)  # reads the user's groups: here, once

    def _login_session(self) -> Mapping[str, Any]:
        # Channels' SessionMiddleware gives the login session (loaded already, to find the
        # user); a scope without one has proved nothing.
        session = self.scope.get("session")
        return {} if session is None else session

    def _requirement(self, target: ExecTarget) -> mfa.Requirement | None:
        return mfa.requirement(self._login_session(), self.scope["user"], target)

    def _second_factor(self) -> mfa.Requirement | None:
        return mfa.second_factor_requirement(self._login_session(), self.scope["user"])

    def _give_up(self) -> None:
        """Admission failed while opening the record: end the record if it was saved anyway."""
        with self._lock:
            self._gave_up = True
            late = self._opened
        if late is not None:
            ending = database_sync_to_async(records.close_session, thread_sensitive=False)
            task = asyncio.ensure_future(
                ending(late, Session.EndReason.AUDIT_UNAVAILABLE, None, _(STORE_DOWN))
            )
            _LATE_ENDS.add(task)
            task.add_done_callback(_LATE_ENDS.discard)

    def _open_record(self) -> Session | None:
        record = records.open_session(
            self.scope["user"],
            self.target,
            client_address(self.scope),
            user_agent(self.scope),
            self.config["MAX_SESSIONS_PER_USER"],
            self.config["MAX_DURATION"],
            server_id=self.server_id,
        )
        if record is None:
            return None
        with self._lock:
            if not self._gave_up:
                self._opened = record.pk
                return record
        # The loop stopped waiting while the store was saving: nobody will run this session.
        records.close_session(record.pk, Session.EndReason.AUDIT_UNAVAILABLE, None, _(STORE_DOWN))
        return None

    def _record_denial(
        self, target: ExecTarget, code: CloseCode, message: str, word: str = ""
    ) -> None:
        records.record_denial(
            self.scope.get("user"),
            target,
            word or protocol.ERROR_WORDS[code],
            message,
            client_address(self.scope),
            user_agent(self.scope),
        )
