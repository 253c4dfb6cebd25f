"""TerminalSession: one terminal, from the browser's first frame to its recorded end.

Its life is an explicit :class:`State`: STARTING (waiting for the browser's size, opening the
exec), RUNNING (``ready`` sent), ENDING, ENDED. One supervisor runs its tasks together (the
shell with its output pump, and the watchdog; the watchers' notices run apart); the first to
finish or fail decides how the session ends and the others are cancelled. Every cause, from
inside (exit, idle, a failed store or cluster, a bug) or outside (the browser's frames or its
leaving, an auditor, the server stopping), goes through :meth:`TerminalSession.end`, which
runs once:

1. cancel the tasks (no more reading from the pod), 2. hang up the exec, 3. commit what the
recorder holds, 4. record the end (owed to the server registry if the store is down),
5. tell the watchers (in the background), 6. tell the browser why, then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from django.utils.translation import gettext as _

from .. import protocol
from ..audit.commands import CommandExtractor, CommandLine
from ..audit.recorder import RESIZE, STDIN, AuditUnavailable, Stored
from ..flag import Flag
from ..kube.exec import ExecStatus, Output
from ..protocol import Ack, ClientMessage, CloseCode, Resize, Stdin
from .ending import (
    Ending,
    EndSession,
    audit_unavailable,
    browser_gone,
    exited,
    internal_error,
)
from .flow import FlowWindow
from .launcher import ExecPort, Launched
from .pump import OutputPump
from .resume import new_token, token_digest
from .screen import ScreenWorker
from .tasks import first_of
from .watchdog import Watchdog
from .watchers import Watchers, WatchersShown

logger = logging.getLogger(__name__)

# How long to wait for the browser's size before starting the shell without it.
SIZE_WAIT = 2.0
# Ends started from a callback (a resume grace running out), kept referenced until done.
_ENDING: set[asyncio.Future[None]] = set()


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    ENDING = "ending"
    ENDED = "ended"


class Browser(Protocol):
    """The browser's socket (or, for a session resumed through another process, the relay)."""

    async def send_text(self, text: str) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def close_with(self, code: int) -> None: ...
    async def replay(self, start: int, end: int) -> None:
        """Send committed output bytes ``start`` to ``end`` again (to a resumed browser)."""


class Shell(Protocol):
    """The exec side: start the shell, hang it up."""

    async def launch(self, size: Callable[[], tuple[int, int] | None]) -> Launched: ...
    async def close(self) -> None: ...


class Recorder(Protocol):
    """The audit recorder (``terminals.audit.recorder.Recorder``)."""

    async def submit(self, direction: str, data: bytes) -> asyncio.Future[Stored]: ...
    async def record(self, direction: str, data: bytes) -> Stored: ...
    def offset_us(self) -> int: ...
    def add_commands(self, commands: list[CommandLine]) -> None: ...
    async def close(self) -> None: ...
    def abandon(self) -> None: ...


class Records(Protocol):
    """The session's row in the store."""

    async def mark_running(
        self, container: str, command: list[str], resume_digest: str = ""
    ) -> None: ...
    async def end(self, ending: Ending) -> None: ...
    def detached(self, detached: bool) -> None: ...


class Notices(Protocol):
    """The watchers' notices (throttled; never the output itself; never awaited)."""

    def start(self) -> None: ...
    def watched(self) -> None: ...
    def progress(self, seq: int) -> None: ...
    def close(self, seq: int) -> None: ...


class TerminalSession:
    """One terminal; see the module docstring."""

    def __init__(
        self,
        session_id: uuid.UUID,
        *,
        browser: Browser,
        shell: Shell,
        recorder: Recorder,
        records: Records,
        notices: Notices,
        watchdog: Watchdog,
        window: FlowWindow,
        max_early_input: int,
        flush_timeout: float,
        size_wait: float = SIZE_WAIT,
        resume_grace: float = 0,
        on_ended: Callable[[], None] | None = None,
    ) -> None:
        self.id = session_id
        self.state = State.STARTING
        self.ending: Ending | None = None
        self._browser: Browser | None = browser
        self._shell = shell
        self._recorder = recorder
        self._records = records
        self._notices = notices
        self.watchdog = watchdog
        self.window = window
        self._max_early_input = max_early_input
        self._flush_timeout = flush_timeout
        self._size_wait = size_wait
        self.size: tuple[int, int] | None = None
        self._sized = Flag()
        self._stream: ExecPort | None = None
        self._exec_up = False
        self._early_input: deque[bytes] = deque()
        self._early_bytes = 0
        # The screen model and command extraction, in budgeted steps off the hot path.
        self.screen = ScreenWorker(CommandExtractor(), self._add_commands, name=str(session_id))
        self.delivered_seq = -1  # the last output frame delivered (and given to the screen)
        self._supervisor: asyncio.Task[None] | None = None
        self._ended = Flag()
        self._on_ended = on_ended  # told once the end is complete (the revoker forgets it)
        self._container: str | None = None
        self.containers: list[str] = []  # the pod's, once launched
        # Resuming: output bytes handed to a browser so far, whether one is attached, and the
        # grace a detached session waits for one (0: a session ends with its socket).
        self.sent_bytes = 0
        # Stdin bytes taken from browsers so far (each committed, or the session ends): every
        # ready says it, so that a page resuming sends again what it sent and was lost.
        self.input_bytes = 0
        self.resume_grace = resume_grace
        self._attached = Flag()
        self._attached.set()
        self._port = asyncio.Lock()  # one sender at a time: output, or a resume's replay
        self._grace: asyncio.TimerHandle | None = None

    # Starting and ending.

    def start(self) -> None:
        """Start the supervisor; the session runs until :meth:`end`."""
        self._notices.start()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"terminal {self.id}")

    async def end(self, ending: Ending) -> None:
        """The one end path; later calls wait for the first to finish."""
        if self.state in (State.ENDING, State.ENDED):
            await self._ended.wait()
            return
        self.state = State.ENDING
        self.ending = ending
        logger.info("Terminal session %s ends: %d %s", self.id, int(ending.code), ending.message)
        try:
            supervisor = self._supervisor
            if supervisor is not None and supervisor is not asyncio.current_task():
                supervisor.cancel()
                await asyncio.gather(supervisor, return_exceptions=True)
            self.window.close()
            self._attached.set()  # a delivery waiting for a browser gives up (state ENDING)
            if self._grace is not None:
                self._grace.cancel()
            await self._quietly("hanging up the exec", self._shell.close())
            self._extract(self.screen.close)  # the last Enter's line goes into the last commit
            await self._flush()
            await self._records.end(ending)
            self._notices.close(self.delivered_seq)
            if ending.tell_browser:
                await self._tell_browser(ending)
        finally:
            self.state = State.ENDED
            # The session and its consumer refer to each other, and its tasks to their
            # exceptions: let go of the socket, the exec and the tasks, so that what they
            # hold is freed now rather than at Python's next full collection.
            self._browser = None
            self._stream = None
            self._supervisor = None
            self._ended.set()
            if self._on_ended is not None:
                try:
                    self._on_ended()
                except Exception:
                    logger.exception("Session %s: a callback on its end failed", self.id)

    async def wait_ended(self) -> None:
        """Return once the session has ended."""
        await self._ended.wait()

    # Detaching and resuming.

    @property
    def browser(self) -> Browser | None:
        """The attached browser, None while detached."""
        return self._browser

    @property
    def detachable(self) -> bool:
        """True if losing the browser now detaches the session rather than ending it: it is
        running (the browser has its resume token) and resuming is on."""
        return self.state is State.RUNNING and self.resume_grace > 0

    def detach(self, browser: Browser) -> bool:
        """``browser``'s socket went away: wait ``resume_grace`` seconds for another. False
        (nothing changes) if it is not the attached browser or the session cannot detach."""
        if self._browser is not browser or not self.detachable:
            return False
        self._lose_browser()
        logger.info("Terminal session %s is detached", self.id)
        return True

    def _lose_browser(self) -> None:
        """No browser is attached from now on: output waits, and the grace runs."""
        self._browser = None
        self._attached.clear()  # a delivery waits for the next browser (and never spins)
        self.window.reset()  # a delivery waiting for the lost browser's acks moves on
        if self._grace is None:
            self._grace = asyncio.get_running_loop().call_later(self.resume_grace, self._grace_over)
        self._records.detached(True)

    async def attach(self, browser: Browser, offset: int, ready: str) -> None:
        """Take ``browser`` as the session's browser: send it ``ready``, the output after byte
        ``offset`` that it has not received, then live output. A browser still attached (a
        socket the server has not seen go) is told it was taken over and closed at once.
        Raises :class:`NotResumable`; the session then waits for another browser."""
        from .resume import NotResumable, taken_over_message

        if self.state is not State.RUNNING:
            raise NotResumable(_("The session has ended."))
        previous = self._browser
        if previous is not None and previous is not browser:
            # Told before the port is taken: a send to it may be waiting on its dead socket.
            code = int(CloseCode.RESUMED_ELSEWHERE)
            _background(_tell(previous, taken_over_message(), code, "it was taken over"))
            self._lose_browser()
        if self._grace is not None:  # it must not run out in the middle of the resume
            self._grace.cancel()
            self._grace = None
        try:
            async with self._port:
                if self.state is not State.RUNNING:
                    raise NotResumable(_("The session has ended."))
                if offset > self.sent_bytes:
                    raise NotResumable(
                        _("The page has %(offset)s output bytes; the session sent %(sent)s.")
                        % {"offset": offset, "sent": self.sent_bytes}
                    )
                # The input count is taken here, the browser before lost: what its socket
                # still hands over is no longer taken (the consumer and relay check).
                await browser.send_text(protocol.with_input(ready, self.input_bytes))
                self.window.reset()
                self.window.sending(self.sent_bytes - offset)
                await browser.replay(offset, self.sent_bytes)
                if self.state is not State.RUNNING:
                    raise NotResumable(_("The session has ended."))
                self._browser = browser
                self._records.detached(False)
                self._attached.set()
        except BaseException:
            if self._browser is None and self.state is State.RUNNING:
                self._lose_browser()  # still detached: the grace runs again
            raise
        if "watchers" in self.__dict__:  # made once a watcher came: tell the new page
            self.watchers.resend()
        logger.info("Terminal session %s is resumed", self.id)
        self.watchdog.touch()

    def _grace_over(self) -> None:
        self._grace = None
        if self._browser is None and self.state is State.RUNNING:
            _background(self.end(browser_gone()))

    @property
    def container(self) -> str | None:
        """The container the shell runs in, once launched (None before)."""
        return self._container

    # Frames from the browser, in order.

    async def handle(self, message: ClientMessage) -> None:
        """Act on one decoded browser frame; input is committed before it goes on."""
        if self.state not in (State.STARTING, State.RUNNING):
            return
        if isinstance(message, Ack):
            self.window.ack(message.bytes)
            return
        self.watchdog.touch()
        if isinstance(message, Resize):
            await self._resize(message.cols, message.rows)
        elif isinstance(message, Stdin):
            await self._stdin(message.data)

    async def _resize(self, cols: int, rows: int) -> None:
        if not await self._commit(RESIZE, f"{cols}x{rows}".encode()):
            return
        self.size = (cols, rows)
        self._sized.set()
        self._extract(functools.partial(self._resize_screen, cols, rows))
        if self._exec_up and self._stream is not None:
            await self._to_pod(self._stream.send_resize(cols, rows))

    async def _stdin(self, data: bytes) -> None:
        # Counted as it is taken, before the commit's wait: a resume that comes meanwhile
        # counts it too, and the frame goes on (or the session ends) as every other.
        self.input_bytes += len(data)
        offset = self._recorder.offset_us()
        if not await self._commit(STDIN, data):
            return
        self._extract(lambda: self.screen.stdin(data, offset))
        if self._exec_up and self._stream is not None:
            await self._to_pod(self._stream.send_stdin(data))
            return
        # Typed before the shell is up: hold it, within reason.
        self._early_bytes += len(data)
        if self._early_bytes > self._max_early_input:
            await self.end(
                Ending.of(
                    CloseCode.FRAME_TOO_LARGE, _("Too much input before the terminal was ready.")
                )
            )
            return
        self._early_input.append(data)

    async def _commit(self, direction: str, data: bytes) -> bool:
        """Commit a browser frame; False (and the session ends) if it cannot be."""
        try:
            await self._recorder.record(direction, data)
        except AuditUnavailable:
            await self.end(audit_unavailable())
            return False
        # The session may have ended while the commit ran: then nothing goes on.
        return self.state in (State.STARTING, State.RUNNING)

    def _resize_screen(self, cols: int, rows: int) -> None:
        self.screen.resize(cols, rows)

    # For watchers.

    def watched(self, watcher: str = "", name: str = "") -> None:
        """A watcher is there (or still there): its notices are sent for a while. One that
        says who it is (``watcher``, its channel, and ``name``, its user) is shown to the
        browser (``{"type":"watchers",…}``) until it leaves or its lease lapses."""
        self._notices.watched()
        if watcher:
            self.watchers.seen(watcher, name)

    def unwatched(self, watcher: str) -> None:
        """The watcher at channel ``watcher`` has left: the browser is shown the others."""
        if watcher:
            self.watchers.left(watcher)

    @functools.cached_property
    def watchers(self) -> WatchersShown:
        """Who watches, shown to the browser while the session runs (a failed send is logged
        and ends nothing); made when a watcher first says who it is."""
        return WatchersShown(
            Watchers(), self._send_watchers, lambda: self.state is State.RUNNING, name=str(self.id)
        )

    async def _send_watchers(self, text: str) -> None:
        if self._browser is not None:  # a resumed browser is sent the list again
            await self._browser.send_text(text)

    def snapshot(self) -> dict[str, Any]:
        """The screen as far as the screen model has taken the output, and that frame's seq.

        The model is at most 240x80 (``terminals.audit.commands``): on a larger terminal the
        snapshot draws it at the bottom of the terminal's size, and the watcher then replays
        the frames after ``seq`` from the store, drawn at the terminal's real size.
        """
        cols, rows = self.size or self.screen.extractor.screen.size
        snapshot = self.screen.snapshot(rows)
        return {"screen": snapshot.screen, "cols": cols, "rows": rows, "seq": snapshot.seq}

    async def fresh_snapshot(self) -> dict[str, Any]:
        """As :meth:`snapshot`, with the output delivered so far fed to the screen model first
        (on demand, within the session's screen budget): what a watcher is sent."""
        cols, rows = self.size or self.screen.extractor.screen.size
        snapshot = await self.screen.fresh_snapshot(rows)
        return {"screen": snapshot.screen, "cols": cols, "rows": rows, "seq": snapshot.seq}

    # The supervised work.

    async def _supervise(self) -> None:
        try:
            ending = await first_of(self._run(), self.watchdog.run())
        except EndSession as end:
            ending = end.ending
        except Exception:
            logger.exception("Terminal session %s failed", self.id)
            ending = internal_error()
        await self.end(ending)

    async def _run(self) -> Ending:
        """Start the shell, pump its output until it exits; the ending that gives."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._size_wait):
                await self._sized.wait()  # a client that sends no size gets the default
        launched = await self._shell.launch(lambda: self.size)
        stream = self._stream = launched.stream
        self._container = launched.container
        self.containers = launched.containers
        token = new_token() if self.resume_grace > 0 else None
        await self._records.mark_running(
            launched.container, launched.command, token_digest(token) if token else ""
        )
        self.state = State.RUNNING
        assert self._browser is not None  # it can only detach once RUNNING
        await self._browser.send_text(
            protocol.ready_message(
                str(self.id),
                launched.container,
                launched.command,
                resume=token,
                containers=launched.containers,
                input_bytes=self.input_bytes,
            )
        )
        if self.size and self.size != launched.size:
            await stream.send_resize(*self.size)
        while self._early_input:
            await stream.send_stdin(self._early_input.popleft())
        self._exec_up = True  # no await since the queue was found empty: nothing is lost
        pump = OutputPump(stream.receive, self._recorder, self._deliver, self._delivered)
        status = await pump.run(launched.first)
        return self._ending_for(status)

    @staticmethod
    def _ending_for(status: ExecStatus) -> Ending:
        if status.code is None:
            message = status.message or _("The connection to the cluster was lost.")
            return Ending.of(CloseCode.UPSTREAM_FAILED, message)
        return exited(status.code)

    async def _deliver(self, data: bytes) -> None:
        """Send committed output, holding back while the browser has too much unprocessed
        and while its socket is full (under Daphne the send waits then), and while no browser
        is attached (a detached session reads ahead, then stops reading the pod)."""
        while True:
            browser = self._browser
            if browser is None:
                await self._attached.wait()
                if self.state is not State.RUNNING:
                    return
                continue
            await self.window.wait()
            async with self._port:
                if self._browser is not browser:
                    continue  # detached or taken over meanwhile: the next browser gets it
                self.window.sending(len(data))
                self.sent_bytes += len(data)
                await browser.send_bytes(data)
            break
        self.watchdog.touch()  # output went out; a send held by a full socket is no activity

    def _delivered(self, data: bytes, stored: Stored) -> None:
        # A watcher's snapshot covers whole rows only; rows of merged output end later.
        self.delivered_seq = stored.seq if stored.last_in_row else stored.seq - 1
        self._extract(functools.partial(self.screen.output, data, self.delivered_seq))
        self._notices.progress(self.delivered_seq)

    # Helpers.

    async def _to_pod(self, sending: Any) -> None:
        try:
            await sending
        except (ConnectionError, OSError, RuntimeError) as exc:
            # The exec is going away; the pump sees its end and ends the session.
            logger.debug("Write to the exec of session %s failed: %r", self.id, exc)
        except Exception as exc:  # aiohttp.ClientError and kin: the same
            logger.debug("Write to the exec of session %s failed: %r", self.id, exc)

    def _extract(self, take: Callable[[], None]) -> None:
        """Hand a frame to the screen worker; its failure never harms the terminal."""
        try:
            take()
        except Exception:
            logger.exception("Command extraction failed in session %s", self.id)

    def _add_commands(self, commands: list[CommandLine]) -> None:
        self._recorder.add_commands(commands)

    async def _flush(self) -> None:
        """Commit what the recorder holds (frames read but not delivered are kept), bounded."""
        try:
            async with asyncio.timeout(self._flush_timeout):
                await self._recorder.close()
        except TimeoutError:
            logger.error("Session %s: the last frames could not be committed in time", self.id)
            self._recorder.abandon()
        except Exception as exc:
            logger.error("Session %s: the last commit failed: %r", self.id, exc)

    async def _tell_browser(self, ending: Ending) -> None:
        browser = self._browser
        if browser is None:
            return  # detached: nobody to tell
        if ending.code == CloseCode.NORMAL:
            text = protocol.exit_message(ending.exit_code)
        else:
            text = protocol.error_message(ending.code, ending.message, ending.word)
        # The browser may be gone; the record above still counts.
        await _tell(browser, text, int(ending.code), f"why session {self.id} ended")

    async def _quietly(self, what: str, awaitable: Any) -> None:
        try:
            async with asyncio.timeout(self._flush_timeout):
                await awaitable
        except Exception as exc:
            logger.warning("Session %s: %s failed: %r", self.id, what, exc)


async def _tell(browser: Browser, text: str, code: int, what: str) -> None:
    """Send ``text``, then close with ``code``; a browser already gone is only logged."""
    try:
        await browser.send_text(text)
        await browser.close_with(code)
    except Exception as exc:
        logger.info("Could not tell the browser %s: %r", what, exc)


def _background(work: Any) -> None:
    """Run ``work`` (an end, a notice) from a callback; kept referenced until done."""
    task = asyncio.ensure_future(work)
    _ENDING.add(task)
    task.add_done_callback(_ENDING.discard)


# Output events the session's stream yields, re-exported for fakes in tests.
__all__ = ["Browser", "ExecStatus", "Output", "Records", "State", "TerminalSession"]
