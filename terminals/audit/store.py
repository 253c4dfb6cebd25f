"""Synchronous ORM work of the audit trail: writing batches, verifying, exporting, pruning."""

from __future__ import annotations

import datetime as dt
import heapq
import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from django.db import close_old_connections, transaction
from django.db.models import F

from ..models import AuditPrune, Command, Frame, Session
from . import cast
from .chain import ChainFrame, Verdict, verify
from .commands import CommandLine


@dataclass(frozen=True)
class PendingFrame:
    seq: int
    offset_us: int
    direction: str
    data: bytes
    digest: str


def write_batch(
    session_id: uuid.UUID,
    frames: Sequence[PendingFrame],
    commands: Sequence[CommandLine],
    head: str,
) -> None:
    """Commit one group of frames, the commands found meanwhile and the new head, atomically."""
    _refresh_connection()
    try:
        _write(session_id, frames, commands, head)
    except Exception:
        _connection_checked.at = 0.0  # check (and drop) the connection before the next write
        raise


# The recorder's threads live long and are no request cycle: their connections are checked
# (closed if broken or past CONN_MAX_AGE) at most every CONNECTION_CHECK seconds and after an
# error, not before every commit, where a health check would cost a round trip per keystroke.
CONNECTION_CHECK = 30.0
_connection_checked = threading.local()


def _refresh_connection() -> None:
    now = time.monotonic()
    if now - getattr(_connection_checked, "at", 0.0) > CONNECTION_CHECK:
        close_old_connections()
        _connection_checked.at = now


def _write(
    session_id: uuid.UUID,
    frames: Sequence[PendingFrame],
    commands: Sequence[CommandLine],
    head: str,
) -> None:
    counts = {"i": [0, 0], "o": [0, 0]}
    for frame in frames:
        if frame.direction in counts:
            counts[frame.direction][0] += 1
            counts[frame.direction][1] += len(frame.data)
    with transaction.atomic():
        Frame.objects.bulk_create(
            Frame(
                session_id=session_id,
                seq=frame.seq,
                offset_us=frame.offset_us,
                direction=frame.direction,
                data=frame.data,
                digest=frame.digest,
            )
            for frame in frames
        )
        if commands:
            Command.objects.bulk_create(
                Command(session_id=session_id, offset_us=c.offset_us, line=c.line, text=c.text)
                for c in commands
            )
        updated = Session.objects.filter(pk=session_id).update(
            head_digest=head,
            frames_in=F("frames_in") + counts["i"][0],
            bytes_in=F("bytes_in") + counts["i"][1],
            frames_out=F("frames_out") + counts["o"][0],
            bytes_out=F("bytes_out") + counts["o"][1],
        )
        if updated != 1:
            raise RuntimeError(f"Session {session_id} is gone from the audit store.")


def chain_frames(session_id: uuid.UUID) -> Iterator[ChainFrame]:
    """The stored frames of a session in seq order, streamed."""
    rows = (
        Frame.objects.filter(session_id=session_id)
        .order_by("seq")
        .values_list("seq", "offset_us", "direction", "data", "digest")
    )
    for seq, offset_us, direction, data, digest in rows.iterator(chunk_size=500):
        yield ChainFrame(seq, offset_us, direction, bytes(data), digest)


def verify_session(session: Session) -> Verdict:
    """Check a session's frames against its hash chain."""
    return verify(session.pk, chain_frames(session.pk), session.head_digest)


def initial_size(session: Session) -> tuple[int, int]:
    """The terminal's size at the start: its first resize, else asciicast's 80x24."""
    first_resize = (
        Frame.objects.filter(session=session, direction=Frame.Direction.RESIZE)
        .order_by("seq")
        .values_list("data", flat=True)
        .first()
    )
    return (cast.parse_size(bytes(first_resize)) if first_resize else None) or cast.DEFAULT_SIZE


def export_cast(
    session: Session, idle_time_limit: float | None = None, markers: bool = False
) -> Iterator[str]:
    """The session as asciicast v2, line by line (each ending in a newline).

    With ``markers``, each command line is also an ``m`` event, for the replay page to jump to.
    """
    size = initial_size(session)
    frames: Iterator[cast.CastFrame] = (
        cast.CastFrame(f.offset_us, f.direction, f.data) for f in chain_frames(session.pk)
    )
    if markers:
        labels = [
            cast.CastFrame(offset, "m", text[:80].encode())
            for offset, text in session.commands.order_by("offset_us").values_list(
                "offset_us", "text"
            )
        ]
        frames = heapq.merge(frames, labels, key=lambda frame: frame.offset_us)
    duration = None
    if session.ended_at:
        duration = (session.ended_at - session.started_at).total_seconds()
    target = f"{session.cluster}/{session.namespace}/{session.pod}"
    if session.container:
        target += f" [{session.container}]"
    title = f"{session.username} on {target}"
    if session.exit_code is not None:
        title += f", exit {session.exit_code}"
    command = " ".join(session.command)
    yield (
        json.dumps(
            cast.header(
                size,
                int(session.started_at.timestamp()),
                title,
                command,
                duration,
                idle_time_limit,
            )
        )
        + "\n"
    )
    for line in cast.events(frames):
        yield line + "\n"


def prune(before: dt.datetime) -> AuditPrune:
    """Delete the sessions that ended before ``before``, and write down what went."""
    with transaction.atomic():
        sessions = Session.objects.filter(ended_at__lt=before)
        ids = [str(pk) for pk in sessions.values_list("pk", flat=True)]
        frames = Frame.objects.filter(session__in=sessions).count()
        sessions.delete()
        return AuditPrune.objects.create(
            before=before, sessions=len(ids), frames=frames, session_ids=ids
        )
