"""Putting one session together from its parts, with the real cluster, store and layer.

The session is watched by this process's revoker (:mod:`.revocation`) from here until its end,
so that it ends within seconds once its user is logged out, deactivated or loses the access.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from ..audit.recorder import Recorder
from ..live import WatcherNotices
from . import resume
from .admission import Admission, Admitted
from .core import Browser, TerminalSession
from .flow import FlowWindow
from .launcher import PodShell
from .revocation import Grant, Revoker, revoker
from .store import SessionRecord
from .upstream import Upstream
from .watchdog import Watchdog


def assemble(
    admitted: Admitted,
    admission: Admission,
    browser: Browser,
    layer: Any,
    config: dict[str, Any],
    registry: Any,
    revocations: Revoker | None = None,
) -> TerminalSession:
    """A :class:`TerminalSession` for an admitted connect, not yet started, and watched for
    revocation (by ``revocations``, else this process's revoker)."""
    session_id = admitted.record.pk
    revocations = revocations or revoker()
    upstream = Upstream(
        admitted.target,
        admitted.impersonation,
        config["CONNECT_TIMEOUT"],
        config["KEEPALIVE"],
        admission.record_denial,
    )

    async def permitted(target: Any) -> bool:
        return await admission.permitted(target) is not None

    session = TerminalSession(
        session_id,
        browser=browser,
        shell=PodShell(
            upstream, admitted.target, config["SHELLS"], permitted, admission.record_denial
        ),
        recorder=Recorder(session_id),
        records=SessionRecord(session_id, config["AUDIT_COMMIT_TIMEOUT"], registry),
        notices=WatcherNotices(layer, session_id),
        watchdog=Watchdog(config["IDLE_TIMEOUT"], config["MAX_DURATION"]),
        window=FlowWindow(config["OUTPUT_BUFFER"]),
        max_early_input=config["MAX_FRAME_SIZE"],
        flush_timeout=config["DRAIN_TIMEOUT"],
        resume_grace=config["RESUME_GRACE"],
        on_ended=functools.partial(_ended, revocations, session_id),
    )
    revocations.watch(session, grant_of(admission.scope, admitted))
    resume.hold(session_id, session)
    return session


def _ended(revocations: Revoker, session_id: Any) -> None:
    revocations.forget(session_id)
    resume.release(session_id)


def grant_of(scope: Mapping[str, Any], admitted: Admitted) -> Grant:
    """What the connect was admitted on: its user, the browser's login session, the target."""
    # Channels' session is a lazy wrapper around the engine's store, resolved before the
    # consumer runs; its key is the login the browser's cookie named.
    key = getattr(scope.get("session"), "session_key", None) or None
    return Grant(scope["user"].pk, key, admitted.target)
