"""Why a session ends: the close code and message the browser gets, and the record's reason.

Messages are in the active language (the connection's: :mod:`terminals.language`); the
constants here are English, marked for translation and translated where an ending is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from ..live import MAX_END_REASON
from ..models import Session
from ..protocol import CloseCode

EndReason = Session.EndReason

REASONS: dict[CloseCode, str] = {
    CloseCode.NORMAL: EndReason.EXIT,
    CloseCode.BAD_REQUEST: EndReason.PROTOCOL_ERROR,
    CloseCode.FRAME_TOO_LARGE: EndReason.PROTOCOL_ERROR,
    CloseCode.NOT_FOUND: EndReason.NOT_FOUND,
    CloseCode.FORBIDDEN: EndReason.FORBIDDEN,
    CloseCode.IDLE: EndReason.IDLE,
    CloseCode.MAX_DURATION: EndReason.MAX_DURATION,
    CloseCode.ENDED_BY_AUDITOR: EndReason.ENDED_BY_AUDITOR,
    CloseCode.UPSTREAM_FAILED: EndReason.UPSTREAM_FAILED,
    CloseCode.AUDIT_UNAVAILABLE: EndReason.AUDIT_UNAVAILABLE,
    CloseCode.SERVER_RESTARTING: EndReason.SERVER_STOPPED,
    CloseCode.INTERNAL_ERROR: EndReason.SERVER_ERROR,
}

AUDIT_DOWN = gettext_noop("The audit store cannot be written, so the session was stopped.")
SERVER_STOPPING = gettext_noop(
    "The server is restarting. Your session was recorded and ended; open a new one."
)
INTERNAL_ERROR = gettext_noop(
    "The terminal failed because of a server error; the session was recorded and ended."
)


@dataclass(frozen=True)
class Ending:
    """How one session ends; :meth:`TerminalSession.end` takes exactly one of these."""

    code: CloseCode
    message: str
    reason: str
    exit_code: int | None = None
    ended_by: tuple[int | None, str] | None = None
    # False when the browser is gone already (nothing to tell it).
    tell_browser: bool = True
    # The error message's code word where it is not the close code's own: a 4403 may be
    # "forbidden", "mfa_required" or "step_up_required".
    word: str = ""

    @classmethod
    def of(cls, code: CloseCode, message: str, word: str = "") -> Ending:
        """The ending for a close code, with the record's reason that goes with it."""
        return cls(code, message, REASONS.get(code, EndReason.SERVER_ERROR), word=word)


def exited(exit_code: int) -> Ending:
    """The process exited with ``exit_code``."""
    return Ending(CloseCode.NORMAL, "", EndReason.EXIT, exit_code=exit_code)


def browser_closed(ws_code: int) -> Ending:
    """The browser's socket closed (a tab closed, the network went)."""
    return Ending(
        CloseCode.NORMAL, f"WebSocket {ws_code}", EndReason.CLIENT_CLOSED, tell_browser=False
    )


BROWSER_GONE = gettext_noop("The browser went away and did not come back to resume the session.")


def browser_gone() -> Ending:
    """The browser's socket went away and no browser resumed within the grace."""
    return Ending(CloseCode.NORMAL, _(BROWSER_GONE), EndReason.BROWSER_GONE, tell_browser=False)


def server_stopping() -> Ending:
    """The serving process is stopping (SIGTERM, a deploy)."""
    return Ending.of(CloseCode.SERVER_RESTARTING, _(SERVER_STOPPING))


def internal_error() -> Ending:
    """A bug: an exception nobody expected, anywhere in the session."""
    return Ending.of(CloseCode.INTERNAL_ERROR, _(INTERNAL_ERROR))


def audit_unavailable() -> Ending:
    """The audit store cannot be written: fail closed."""
    return Ending.of(CloseCode.AUDIT_UNAVAILABLE, _(AUDIT_DOWN))


def ended_by_auditor(user_id: int | None, username: str, reason: str = "") -> Ending:
    """An auditor ended the session, saying why: the message the user sees and the record
    keeps ("alice ended this session: <reason>")."""
    who = username or _("An auditor")
    reason = " ".join(reason.split())[:MAX_END_REASON]  # one line, as the page shows it
    if reason:
        message = _("%(who)s ended this session: %(reason)s") % {"who": who, "reason": reason}
    else:
        message = _("%(who)s ended this session.") % {"who": who}
    ended_by = (user_id, username)
    return Ending(
        CloseCode.ENDED_BY_AUDITOR, message, EndReason.ENDED_BY_AUDITOR, ended_by=ended_by
    )


class EndSession(Exception):
    """Raised inside a session's parts to end it; carries the :class:`Ending`."""

    def __init__(self, code: CloseCode, message: str, word: str = "") -> None:
        super().__init__(message)
        self.ending = Ending.of(code, message, word)
