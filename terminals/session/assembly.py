"""Putting one session together from its parts, with the real cluster, store and layer."""

from __future__ import annotations

from typing import Any

from ..audit.recorder import Recorder
from ..live import WatcherNotices
from .admission import Admission, Admitted
from .core import Browser, TerminalSession
from .flow import FlowWindow
from .launcher import PodShell
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
) -> TerminalSession:
    """A :class:`TerminalSession` for an admitted connect, not yet started."""
    session_id = admitted.record.pk
    upstream = Upstream(
        admitted.target,
        admitted.impersonation,
        config["CONNECT_TIMEOUT"],
        config["KEEPALIVE"],
        admission.record_denial,
    )

    async def permitted(target: Any) -> bool:
        return await admission.permitted(target) is not None

    return TerminalSession(
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
    )
