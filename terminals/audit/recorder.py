"""The write-ahead recorder: every frame is committed before it is delivered.

``submit()`` chains a frame (seq, time, digest) and queues it; it waits only while too much is
in flight, which is how a slow store makes the upstream read wait. One writer task per session
commits everything queued so far in one transaction (group commit): frames that arrive during a
commit go into the next one, so a keystroke waits for at most about one commit. The caller
awaits the frame's future and only then forwards it. If the store fails, every waiting and
later frame fails with :class:`AuditUnavailable` and nothing more is forwarded.

Commits run on an executor of the recorder's own, not on the single thread that
``database_sync_to_async`` shares across every consumer of the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .chain import frame_digest, genesis
from .commands import CommandLine
from .store import PendingFrame, write_batch

logger = logging.getLogger(__name__)

#: Shared by every recorder of the process; each thread keeps its own database connection.
EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="terminals-audit")

STDIN, STDOUT, RESIZE = "i", "o", "r"


class AuditUnavailable(Exception):
    """The audit store cannot be written; the session must end without forwarding more."""


@dataclass
class _Queued:
    frame: PendingFrame
    done: asyncio.Future[None]


class Recorder:
    """Hash-chained, group-committed audit writer for one session."""

    def __init__(
        self,
        session_id: uuid.UUID,
        max_in_flight_bytes: int = 4 * 1024 * 1024,
        max_in_flight_frames: int = 1024,
    ) -> None:
        self.session_id = session_id
        self.started = time.monotonic()
        self.head = genesis(session_id)
        self.seq = 0
        self.max_bytes = max_in_flight_bytes
        self.max_frames = max_in_flight_frames
        self.in_flight_bytes = 0
        self.in_flight_frames = 0
        self.failure: BaseException | None = None
        self._queue: list[_Queued] = []
        self._commands: list[CommandLine] = []
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name=f"recorder {session_id}")

    def offset_us(self) -> int:
        """Microseconds since the session started (monotonic)."""
        return int((time.monotonic() - self.started) * 1_000_000)

    async def submit(self, direction: str, data: bytes) -> asyncio.Future[None]:
        """Chain and queue a frame; the returned future resolves once it is committed."""
        while (
            self.in_flight_bytes >= self.max_bytes or self.in_flight_frames >= self.max_frames
        ) and self.failure is None:
            self._space.clear()
            await self._space.wait()
        if self.failure is not None or self._closing:
            raise AuditUnavailable("The audit store cannot be written.")
        offset = self.offset_us()
        digest = frame_digest(self.head, self.seq, offset, direction, data)
        frame = PendingFrame(self.seq, offset, direction, data, digest.hex())
        self.head = digest
        self.seq += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(frame, done))
        self.in_flight_bytes += len(data)
        self.in_flight_frames += 1
        self._wakeup.set()
        return done

    async def record(self, direction: str, data: bytes) -> None:
        """Submit a frame and wait until it is committed."""
        await (await self.submit(direction, data))

    def add_commands(self, commands: list[CommandLine]) -> None:
        """Command lines go into the next commit (they are not part of the chain)."""
        if commands:
            self._commands += commands
            self._wakeup.set()

    async def close(self) -> None:
        """Commit what is queued, then stop the writer."""
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
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            commands, self._commands = self._commands, []
            if batch or commands:
                head = batch[-1].frame.digest if batch else None
                try:
                    await loop.run_in_executor(
                        EXECUTOR,
                        write_batch,
                        self.session_id,
                        [queued.frame for queued in batch],
                        commands,
                        head if head is not None else self.head.hex(),
                    )
                except Exception as exc:
                    logger.error("Audit store failed for session %s: %r", self.session_id, exc)
                    self._fail(exc, batch)
                    return
                for queued in batch:
                    if not queued.done.done():
                        queued.done.set_result(None)
                self.in_flight_bytes -= sum(len(q.frame.data) for q in batch)
                self.in_flight_frames -= len(batch)
                self._space.set()
            if self._closing and not self._queue and not self._commands:
                return

    def _fail(self, exc: BaseException, batch: list[_Queued] | None = None) -> None:
        self.failure = exc
        for queued in [*(batch or []), *self._queue]:
            if not queued.done.done():
                queued.done.set_exception(AuditUnavailable("The audit store cannot be written."))
                # Nobody may be waiting on it any more; do not warn about it.
                queued.done.exception()
        self._queue = []
        self._space.set()
