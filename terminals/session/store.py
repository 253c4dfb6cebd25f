"""The session's own row, written from the event loop: bounded, and never lost.

Writes run on threads of their own (not Channels' single database thread, which every
consumer shares, nor the loop's default pool) and each is bounded by ``AUDIT_COMMIT_TIMEOUT``
once it runs. The wait for a thread is bounded apart, and longer: a thousand users leaving at
once queue their ends here, and a queue is not a store that fails to answer (the bench's
idle-memory run logged hundreds of late ends when the wait counted). An end that cannot be
written (the store is down) is handed to the server registry, which writes it once the store
is back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import close_old_connections
from django.utils.translation import gettext as _

from .. import records
from ..protocol import CloseCode
from .ending import AUDIT_DOWN, Ending, EndSession

logger = logging.getLogger(__name__)
_WRITES: set[asyncio.Future[None]] = set()  # background writes, referenced until done

#: The threads that write sessions' rows (start, detach, end).
EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="terminals-records")
#: Seconds a write may wait for one of them before it is taken as failed.
QUEUE_WAIT = 60.0


class SessionRecord:
    """Marks the record running and ends it (see the module docstring)."""

    def __init__(self, session_id: uuid.UUID, timeout: float, registry: Any) -> None:
        self.session_id = session_id
        self.timeout = timeout
        self._registry = registry

    async def mark_running(
        self, container: str, command: list[str], resume_digest: str = ""
    ) -> None:
        """Record the container and argv that really run (after shell fallback)."""
        try:
            await self._write(
                records.mark_running, self.session_id, container, command, resume_digest
            )
        except Exception as exc:
            logger.error("Session %s: could not record its start: %r", self.session_id, exc)
            raise EndSession(CloseCode.AUDIT_UNAVAILABLE, _(AUDIT_DOWN)) from exc

    async def end(self, ending: Ending) -> None:
        """Record the end; if the store cannot take it now, the registry retries it."""
        args = (ending.reason, ending.exit_code, ending.message, ending.ended_by)
        try:
            await self._write(records.close_session, self.session_id, *args)
        except Exception as exc:
            logger.error(
                "Session %s: could not record its end now (%r); it will be written once the "
                "store answers",
                self.session_id,
                exc,
            )
            self._registry.owe_end(self.session_id, *args)
        finally:
            self._registry.untrack(self.session_id)

    def detached(self, detached: bool) -> None:
        """Record, in the background, that the browser went away or came back; only the
        admin's display depends on it, so a failure is logged and nothing else."""
        write = self._write(records.mark_detached, self.session_id, detached)

        async def quietly() -> None:
            try:
                await write
            except Exception as exc:
                logger.warning("Session %s: could not record detaching: %r", self.session_id, exc)

        task = asyncio.ensure_future(quietly())
        _WRITES.add(task)
        task.add_done_callback(_WRITES.discard)

    async def _write(self, function: Any, *args: Any) -> None:
        """Run ``function(*args)`` on a records thread: its wait for the thread bounded by
        :data:`QUEUE_WAIT`, the write itself by the commit timeout."""
        loop = asyncio.get_running_loop()
        running = asyncio.Event()

        def run() -> None:
            loop.call_soon_threadsafe(running.set)
            close_old_connections()  # as database_sync_to_async does, before and after
            try:
                function(*args)
            finally:
                close_old_connections()

        queued = EXECUTOR.submit(run)
        done = asyncio.wrap_future(queued)
        try:
            async with asyncio.timeout(QUEUE_WAIT):
                await running.wait()
        except TimeoutError:
            queued.cancel()  # never started: it must not run later
            raise
        async with asyncio.timeout(self.timeout):
            await asyncio.shield(done)
