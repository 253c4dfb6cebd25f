"""The process's audit writer: one group commit for the batches of every session, a few in flight.

Each session's recorder (``recorder.py``) chains its frames and hands the writer one batch at a
time (a session never has two batches in flight, so its frames land in order and a failed batch
is never followed by a later one). The writer commits every batch queued meanwhile, whatever
its session, in one transaction, and keeps up to ``AUDIT_COMMITS_IN_FLIGHT`` such commits running
at once (one on SQLite, which serialises writers anyway). On PostgreSQL the commit runs on the
event loop itself (``loopwrites.py``); on SQLite, whose driver has no asynchronous side, on a
thread of the writer's (``writes.write_group``). So a keystroke waits for at most the commit
running when it arrives, and only if every slot is busy; under load a commit carries the frames
of many sessions, and the cost per frame falls as the load rises. A group holds at most
``MAX_GROUP_BYTES`` (at least one batch), so no commit grows without bound.

It fails closed per session, as each session's own commit did:

- a session that has ended (or is gone) has its batch refused: :class:`SessionRefused`;
- a commit that fails on a lost connection is retried once on a new one (on a thread),
  leaving out the batches that landed after all; a second failure fails every session of the
  group;
- any other error is the fault of one batch or of the store: each batch of the group is then
  committed alone, so only the sessions whose own batch fails are failed;
- a group that has not committed within ``AUDIT_COMMIT_TIMEOUT`` (retry included) fails every
  session in it with :class:`TimeoutError` at that moment, and its slot goes to the next group.
  Its commit is cancelled but not waited for: PostgreSQL's statement is cancelled on the server
  (psycopg waits for the server's answer, which a sick network or disk can delay) and its
  connection dropped; SQLite's thread stays busy until the store gives up too, and groups queued
  behind it time out in their turn, so nothing waits without bound.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Protocol

from django.db import connection

from ..conf import get_config
from .loopwrites import LoopWrites
from .store import is_connection_error
from .writes import SessionBatch, write_group

logger = logging.getLogger(__name__)

MAX_GROUP_BYTES = 4 * 1024 * 1024  # frame bytes in one transaction at most (at least one batch)
# Seconds for which the writer counts as shared after batches of two sessions followed each
# other (see GroupWriter.shared).
SHARED_WINDOW = 0.5


class SessionRefused(RuntimeError):
    """The store refused a session's batch: the session has ended or is gone."""


class GroupWrite(Protocol):
    """Commits one group synchronously (``writes.write_group``, or a test's fake)."""

    def __call__(
        self, batches: Sequence[SessionBatch], *, retry: bool = False
    ) -> dict[uuid.UUID, str]: ...


class LoopGroupWrite(Protocol):
    """Commits one group on the event loop (``LoopWrites.write``, or a test's fake)."""

    async def __call__(self, batches: Sequence[SessionBatch]) -> dict[uuid.UUID, str]: ...


@dataclass
class _Waiting:
    batch: SessionBatch
    done: asyncio.Future[None]


_executor: ThreadPoolExecutor | None = None


def executor() -> ThreadPoolExecutor:
    """The writer's threads, shared by every event loop of the process (each thread keeps its
    own database connection)."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=commits_in_flight(), thread_name_prefix="terminals-audit"
        )
    return _executor


def commits_in_flight() -> int:
    """``AUDIT_COMMITS_IN_FLIGHT``, or one where the database takes one writer at a time."""
    if connection.vendor == "sqlite":
        return 1
    return max(1, int(get_config()["AUDIT_COMMITS_IN_FLIGHT"]))


class GroupWriter:
    """Group commit for the sessions of one event loop. ``write``, ``in_flight``,
    ``commit_timeout`` and ``pool`` default to the store, the settings and :func:`executor`.

    ``loop_write``, if not None, makes every first attempt on the event loop, and ``write`` on
    ``pool`` does only the retries. ``"auto"``: ``loopwrites`` on PostgreSQL unless ``write`` is
    given, else None.
    """

    def __init__(
        self,
        write: GroupWrite | None = None,
        *,
        loop_write: LoopGroupWrite | Literal["auto"] | None = "auto",
        in_flight: int | None = None,
        commit_timeout: float | None = None,
        pool: Executor | None = None,
        max_group_bytes: int = MAX_GROUP_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if loop_write == "auto":
            on_postgresql = write is None and connection.vendor == "postgresql"
            loop_write = LoopWrites().write if on_postgresql else None
        self._loop_write = loop_write
        self._write: GroupWrite = write if write is not None else write_group
        self.in_flight = in_flight if in_flight is not None else commits_in_flight()
        if commit_timeout is None:
            commit_timeout = float(get_config()["AUDIT_COMMIT_TIMEOUT"])
        self.commit_timeout = commit_timeout
        self._pool = pool
        self.max_group_bytes = max_group_bytes
        self._pending: deque[_Waiting] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self.commits = 0  # groups committed (for tests and benchmarks)
        self._clock = clock
        self._last_session: uuid.UUID | None = None
        self._mixed_at = -SHARED_WINDOW

    def shared(self) -> bool:
        """Whether more than one session has committed lately (within :data:`SHARED_WINDOW`).

        A session streaming alone then writes large batches, which is fastest; beside others
        it writes small ones, so that their keystrokes never wait long behind its commits (on
        SQLite, behind the one commit in flight; on PostgreSQL, behind its WAL to flush).
        """
        return self._clock() - self._mixed_at < SHARED_WINDOW

    async def commit(self, batch: SessionBatch) -> None:
        """Commit one session's batch, with whatever else is queued; raise if it failed."""
        if batch.session_id != self._last_session:
            self._last_session = batch.session_id
            self._mixed_at = self._clock()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Waiting(batch, done))
        self._start_groups()
        await done

    def _start_groups(self) -> None:
        while self._pending and len(self._running) < self.in_flight:
            group: list[_Waiting] = []
            size = 0
            while self._pending:
                waiting = self._pending[0]
                if waiting.done.done():  # its session stopped waiting (torn down)
                    self._pending.popleft()
                    continue
                if group and size + waiting.batch.size > self.max_group_bytes:
                    break
                group.append(self._pending.popleft())
                size += waiting.batch.size
            if not group:
                return
            task = asyncio.get_running_loop().create_task(self._run(group), name="audit group")
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start_groups()

    async def _run(self, group: list[_Waiting]) -> None:
        batches = [waiting.batch for waiting in group]
        outcome: dict[uuid.UUID, BaseException | None]
        task = asyncio.current_task()
        assert task is not None
        deadline = asyncio.get_running_loop().call_later(
            self.commit_timeout, self._give_up, task, group
        )
        try:
            outcome = await self._commit(batches)
        except asyncio.CancelledError:  # given up on (settled already), or the loop is closing
            for waiting in group:
                waiting.done.cancel()
            raise
        except Exception as exc:  # the store's
            outcome = dict.fromkeys((batch.session_id for batch in batches), exc)
        else:
            self.commits += 1
        finally:
            deadline.cancel()
        _settle(group, outcome)

    def _give_up(self, task: asyncio.Task[None], group: list[_Waiting]) -> None:
        """The group has not committed in time: its sessions fail now and its slot is free.
        Its commit is cancelled, not waited for (a cancellation may take long to be heard)."""
        _settle(group, {waiting.batch.session_id: TimeoutError() for waiting in group})
        self._running.discard(task)
        task.cancel()
        self._start_groups()

    async def _commit(self, batches: list[SessionBatch]) -> dict[uuid.UUID, BaseException | None]:
        """Each session's outcome: None once committed, else why not."""
        try:
            refused = await self._call(batches)
        except Exception as exc:
            if is_connection_error(exc):
                logger.warning("Audit store connection lost (%r); retrying a group once.", exc)
                refused = await self._call(batches, retry=True)
            elif len(batches) > 1:
                logger.warning("An audit group failed (%r); committing its batches alone.", exc)
                return await self._alone(batches)
            else:
                raise
        return {
            batch.session_id: (
                SessionRefused(f"Session {batch.session_id}: {refused[batch.session_id]}.")
                if batch.session_id in refused
                else None
            )
            for batch in batches
        }

    async def _alone(self, batches: list[SessionBatch]) -> dict[uuid.UUID, BaseException | None]:
        outcome: dict[uuid.UUID, BaseException | None] = {}
        for batch in batches:
            try:
                outcome.update(await self._commit([batch]))
            except Exception as exc:
                outcome[batch.session_id] = exc
        return outcome

    async def _call(
        self, batches: list[SessionBatch], *, retry: bool = False
    ) -> dict[uuid.UUID, str]:
        if self._loop_write is not None and not retry:
            return await self._loop_write(batches)
        write = functools.partial(self._write, batches, retry=retry)
        pool = self._pool if self._pool is not None else executor()
        return await asyncio.get_running_loop().run_in_executor(pool, write)


def _settle(group: list[_Waiting], outcome: dict[uuid.UUID, BaseException | None]) -> None:
    for waiting in group:
        if waiting.done.done():
            continue
        error = outcome.get(waiting.batch.session_id)
        if error is None:
            waiting.done.set_result(None)
        else:
            waiting.done.set_exception(error)


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupWriter] = (
    weakref.WeakKeyDictionary()
)


def group_writer() -> GroupWriter:
    """The writer of the running event loop (one per process under Daphne)."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = GroupWriter()
    return writer
