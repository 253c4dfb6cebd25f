"""The write-ahead recorder of one session: every frame is committed before it is delivered.

``submit()`` queues a frame and waits only while too much is in flight, which is how a slow
store makes the upstream read wait. The recorder's writer task takes everything queued so far,
chains it (``chain.py``, under the audit key the session's record names) and hands it to the
process's group writer (``writer.py``) as one batch, which commits it with the batches of other
sessions: frames that arrive meanwhile go into the next batch, so a keystroke waits for about one
commit. A session has one batch in flight at a time, so its frames land in order. Consecutive
output frames of a batch are stored as one row of up to ``MAX_ROW`` bytes (a PTY hands out
about 4 KiB per read; rows that small cost most of the time). The caller awaits the frame's
future and only then forwards the frame. If a batch fails (the store fails or times out, or
refuses an ended session: see the writer), every waiting and later frame fails with
:class:`AuditUnavailable` and nothing more is forwarded.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

from ..flag import Flag
from .chain import frame_digest, genesis
from .commands import CommandLine
from .keyring import AuditKey, current_key
from .store import PendingFrame
from .writer import GroupWriter, group_writer
from .writes import SessionBatch

logger = logging.getLogger(__name__)

STDIN, STDOUT, RESIZE = "i", "o", "r"
MAX_ROW = 64 * 1024  # bytes of output merged into one stored row at most
# Bytes of one session's batch at most (at least one frame): alone, and while the process's
# writer is shared with other sessions (GroupWriter.shared). A streaming session keeps the
# writer busy commit after commit, so others' keystrokes wait for one of its commits, twice (in
# and out): the smaller its batches, the shorter that wait. Beside 20 typists at 5 keys/s
# (bench.load, 2026-12-07) their p99 moved 9x with the whole read-ahead in one commit, 2.5x
# with 64 KiB (SQLite; the stream at 23 MiB/s), and 1.9x (SQLite) / 1.6x (PostgreSQL) with
# 16 KiB, the stream at 10 and 6 MiB/s while they type; 8 KiB gave 1.3x for 5 MiB/s.
MAX_BATCH = 512 * 1024
SHARED_BATCH = 16 * 1024


class AuditUnavailable(Exception):
    """The audit store cannot be written; the session must end without forwarding more."""


@dataclass(frozen=True)
class Stored:
    """Where a committed frame went: its row, and whether it ends that row."""

    seq: int
    last_in_row: bool


@dataclass
class _Queued:
    direction: str
    data: bytes
    offset_us: int
    done: asyncio.Future[Stored]


@dataclass
class _Row:
    direction: str
    offset_us: int
    parts: list[_Queued] = field(default_factory=list)
    size: int = 0


class Recorder:
    """The hash-chained, write-ahead audit of one session.

    ``writer`` defaults to the running loop's group writer and ``key`` to the current audit key.
    """

    def __init__(
        self,
        session_id: uuid.UUID,
        max_in_flight_bytes: int = 4 * 1024 * 1024,
        max_in_flight_frames: int = 1024,
        *,
        writer: GroupWriter | None = None,
        key: AuditKey | None = None,
    ) -> None:
        self.session_id = session_id
        self.key = key or current_key()
        self._group = writer if writer is not None else group_writer()
        self.started = time.monotonic()
        self.head = genesis(session_id, self.key)
        self.seq = 0
        self.max_bytes = max_in_flight_bytes
        self.max_frames = max_in_flight_frames
        self.in_flight_bytes = 0
        self.in_flight_frames = 0
        self.failure: BaseException | None = None
        self._queue: list[_Queued] = []
        self._commands: list[CommandLine] = []
        self._wakeup = Flag()
        self._space = Flag()
        self._space.set()
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name=f"recorder {session_id}")

    def offset_us(self) -> int:
        """Microseconds since the session started (monotonic)."""
        return int((time.monotonic() - self.started) * 1_000_000)

    async def submit(self, direction: str, data: bytes) -> asyncio.Future[Stored]:
        """Queue a frame; the returned future resolves once it is committed."""
        while (
            self.in_flight_bytes >= self.max_bytes or self.in_flight_frames >= self.max_frames
        ) and self.failure is None:
            self._space.clear()
            await self._space.wait()
        if self.failure is not None or self._closing:
            raise AuditUnavailable("The audit store cannot be written.")
        done: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(direction, data, self.offset_us(), done))
        self.in_flight_bytes += len(data)
        self.in_flight_frames += 1
        self._wakeup.set()
        return done

    async def record(self, direction: str, data: bytes) -> Stored:
        """Submit a frame and wait until it is committed."""
        return await (await self.submit(direction, data))

    def add_commands(self, commands: list[CommandLine]) -> None:
        """Command lines go into the next commit (they are not part of the chain)."""
        if commands:
            self._commands += commands
            self._wakeup.set()

    async def close(self) -> None:
        """Commit what is queued, then stop the writer (bounded: each commit is)."""
        self._closing = True
        self._wakeup.set()
        try:
            await self._writer
        except asyncio.CancelledError:
            pass

    def abandon(self) -> None:
        """Stop at once (the session is being torn down); queued frames fail."""
        self._writer.cancel()
        self._fail(AuditUnavailable("The session ended."))

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch = self._next_batch()
            if self._queue:
                self._wakeup.set()  # the rest is the next batch
            commands, self._commands = self._commands, []
            if batch or commands:
                rows = _rows(batch)
                frames, head, seq = self._chain(rows)
                try:
                    await self._group.commit(SessionBatch(self.session_id, frames, commands))
                except TimeoutError:
                    logger.error(
                        "Audit store did not commit within %s s for session %s.",
                        self._group.commit_timeout,
                        self.session_id,
                    )
                    self._fail(AuditUnavailable("The audit store timed out."), batch)
                    return
                except Exception as exc:
                    logger.error("Audit store failed for session %s: %r", self.session_id, exc)
                    self._fail(exc, batch)
                    return
                self.head, self.seq = head, seq
                for row, frame in zip(rows, frames, strict=True):
                    for number, queued in enumerate(row.parts, start=1):
                        if not queued.done.done():
                            queued.done.set_result(Stored(frame.seq, number == len(row.parts)))
                self.in_flight_bytes -= sum(len(queued.data) for queued in batch)
                self.in_flight_frames -= len(batch)
                self._space.set()
            if self._closing and not self._queue and not self._commands:
                return

    def _next_batch(self) -> list[_Queued]:
        """The oldest queued frames, up to :data:`MAX_BATCH` (:data:`SHARED_BATCH` while the
        writer is shared) bytes, at least one."""
        limit = SHARED_BATCH if self._group.shared() else MAX_BATCH
        size, count = 0, 0
        for queued in self._queue:
            if count and size + len(queued.data) > limit:
                break
            size += len(queued.data)
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    def _chain(self, rows: list[_Row]) -> tuple[list[PendingFrame], bytes, int]:
        """Sequence numbers and digests for the rows, continuing the committed chain."""
        frames, head, seq = [], self.head, self.seq
        for row in rows:
            data = b"".join(queued.data for queued in row.parts)
            head = frame_digest(head, seq, row.offset_us, row.direction, data, self.key)
            frames.append(PendingFrame(seq, row.offset_us, row.direction, data, head.hex()))
            seq += 1
        return frames, head, seq

    def _fail(self, exc: BaseException, batch: list[_Queued] | None = None) -> None:
        self.failure = exc
        for queued in [*(batch or []), *self._queue]:
            if not queued.done.done():
                queued.done.set_exception(AuditUnavailable("The audit store cannot be written."))
                # Nobody may be waiting on it any more; do not warn about it.
                queued.done.exception()
        self._queue = []
        self._space.set()


def _rows(batch: list[_Queued]) -> list[_Row]:
    """Group a batch into rows: consecutive output frames merge, up to ``MAX_ROW`` bytes."""
    rows: list[_Row] = []
    for queued in batch:
        last = rows[-1] if rows else None
        if (
            last is not None
            and queued.direction == STDOUT == last.direction
            and last.size + len(queued.data) <= MAX_ROW
        ):
            last.parts.append(queued)
            last.size += len(queued.data)
        else:
            rows.append(_Row(queued.direction, queued.offset_us, [queued], len(queued.data)))
    return rows
