"""Detaching and resuming, in process: the session's own rules, with the fakes of
tests/test_session_core.py (a fake browser, exec, recorder and store) and no sleeps."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from terminals.kube.exec import ExecStatus, Output
from terminals.models import Session
from terminals.protocol import Ack, Resize, Stdin
from terminals.session.core import State
from terminals.session.resume import NotResumable
from tests.test_session_core import FakeBrowser, Parts, until

EndReason = Session.EndReason
READY = json.dumps({"type": "ready", "resumed": True})


@pytest.fixture
def parts() -> Parts:
    return Parts(resume_grace=60)


async def output(parts: Parts, data: bytes) -> None:
    """The pod prints ``data``; return once it is committed (and delivered, if it can be)."""
    committed = len(parts.recorder.frames)
    parts.stream.events.put_nowait(Output(data))
    await until(lambda: len(parts.recorder.frames) > committed)


def stored_output(parts: Parts) -> bytes:
    return b"".join(data for direction, data in parts.recorder.frames if direction == "o")


async def test_ready_carries_a_token_whose_digest_alone_is_stored(parts):
    await parts.started()
    token = parts.browser.texts[0]["resume"]
    assert len(token) >= 22  # at least 128 bits, URL-safe base64
    assert parts.records.digests == [hashlib.sha256(token.encode()).hexdigest()]


async def test_without_a_grace_there_is_no_token_and_a_lost_browser_ends_it():
    parts = Parts(resume_grace=0)
    session = await parts.started()
    assert "resume" not in parts.browser.texts[0]
    assert parts.records.digests == [""]
    assert not session.detach(parts.browser)
    assert session.state is State.RUNNING  # the consumer ends it (browser_closed)


async def test_a_detached_session_commits_output_and_delivers_none(parts):
    session = await parts.started()
    await output(parts, b"before\r\n")
    await until(lambda: parts.browser.output == b"before\r\n")
    assert session.detach(parts.browser)
    assert parts.records.detaching == [True]
    await output(parts, b"while away\r\n")
    assert stored_output(parts) == b"before\r\nwhile away\r\n"
    assert parts.browser.output == b"before\r\n"
    assert session.state is State.RUNNING
    assert session.sent_bytes == len(b"before\r\n")


async def test_a_resumed_browser_gets_ready_then_the_missed_bytes_once_then_live_output(parts):
    session = await parts.started()
    await output(parts, b"0123456789")
    await until(lambda: session.sent_bytes == 10)
    assert session.detach(parts.browser)
    await output(parts, b"ABC")
    # The page drew only 6 of the 10 bytes sent before its socket went.
    resumed = FakeBrowser()
    resumed.stored = stored_output(parts)
    await session.attach(resumed, 6, READY)
    assert resumed.texts == [{"type": "ready", "resumed": True, "input": 0}]
    await until(lambda: bytes(resumed.output) == b"6789ABC")
    await output(parts, b"live")
    await until(lambda: bytes(resumed.output) == b"6789ABClive")
    assert parts.records.detaching == [True, False]
    assert session.sent_bytes == len(b"0123456789ABClive")


async def test_input_from_the_resumed_browser_reaches_the_pod(parts):
    session = await parts.started()
    assert session.detach(parts.browser)
    resumed = FakeBrowser()
    await session.attach(resumed, 0, READY)
    await session.handle(Stdin(b"ls\r"))
    assert parts.stream.stdin == [b"ls\r"]


async def test_every_ready_says_how_many_stdin_bytes_the_session_has_taken(parts):
    session = await parts.started()
    assert parts.browser.texts[0]["input"] == 0
    await session.handle(Stdin(b"ls\r"))
    await session.handle(Stdin("é".encode()))
    await session.handle(Resize(100, 30))  # not input
    await session.handle(Ack(10))
    assert session.detach(parts.browser)
    resumed = FakeBrowser()
    await session.attach(resumed, 0, READY)
    assert resumed.texts[0]["input"] == 5
    await session.handle(Stdin(b"x"))
    assert session.detach(resumed)
    again = FakeBrowser()
    await session.attach(again, 0, READY)
    assert again.texts[0]["input"] == 6


async def test_input_whose_commit_runs_when_the_page_resumes_counts_as_taken_and_goes_once():
    parts = Parts(resume_grace=60)
    session = await parts.started()
    parts.recorder.stdin_gate = gate = asyncio.Event()
    typing = asyncio.create_task(session.handle(Stdin(b"abc")))
    await until(lambda: session.input_bytes == 3)
    assert session.detach(parts.browser)  # the socket dropped while the commit ran
    resumed = FakeBrowser()
    await session.attach(resumed, 0, READY)
    # The page sent 3 bytes and hears that all 3 were taken: it sends nothing again.
    assert resumed.texts[0]["input"] == 3
    gate.set()
    await typing
    assert parts.stream.stdin == [b"abc"]


async def test_the_grace_running_out_ends_the_session_as_browser_gone():
    parts = Parts(resume_grace=0.01)
    session = await parts.started()
    assert session.detach(parts.browser)
    await session.wait_ended()
    ending = parts.assert_ended_once(EndReason.BROWSER_GONE)
    assert not ending.tell_browser
    assert parts.browser.closed is None  # nobody to tell


async def test_a_resume_before_the_grace_runs_out_keeps_the_session():
    parts = Parts(resume_grace=0.05)
    session = await parts.started()
    assert session.detach(parts.browser)
    await session.attach(FakeBrowser(), 0, READY)
    # Twice the grace passes (nothing to await: the point is that nothing happens).
    loop = asyncio.get_running_loop()
    passed = loop.create_future()
    loop.call_later(0.1, passed.set_result, None)
    await passed
    assert session.state is State.RUNNING


async def test_an_ended_session_cannot_be_resumed(parts):
    session = await parts.started()
    parts.stream.events.put_nowait(ExecStatus(0, "", ""))
    await session.wait_ended()
    with pytest.raises(NotResumable, match="ended"):
        await session.attach(FakeBrowser(), 0, READY)


async def test_an_offset_past_what_was_sent_is_refused(parts):
    session = await parts.started()
    await output(parts, b"abc")
    await until(lambda: session.sent_bytes == 3)
    assert session.detach(parts.browser)
    with pytest.raises(NotResumable, match="3"):
        await session.attach(FakeBrowser(), 4, READY)
    assert session.state is State.RUNNING  # still waiting for a right one


async def test_resuming_while_the_old_browser_is_attached_takes_it_over(parts):
    # A half-open socket: the server has not noticed the old page went.
    session = await parts.started()
    old = parts.browser
    new = FakeBrowser()
    await session.attach(new, 0, READY)
    await until(lambda: old.closed == 4411)
    assert old.texts[-1]["code"] == "resumed_elsewhere"
    assert not session.detach(old)  # its late disconnect changes nothing
    await output(parts, b"for the new page")
    await until(lambda: bytes(new.output) == b"for the new page")
    assert b"for the new page" not in old.output


async def test_only_the_attached_browser_can_detach(parts):
    session = await parts.started()
    assert not session.detach(FakeBrowser())
    assert session.browser is parts.browser


async def test_an_end_while_detached_is_recorded_and_tells_nobody(parts):
    session = await parts.started()
    assert session.detach(parts.browser)
    parts.stream.events.put_nowait(ExecStatus(0, "", ""))
    await session.wait_ended()
    parts.assert_ended_once(EndReason.EXIT)
    assert parts.browser.closed is None


async def test_output_during_a_takeover_waits_for_the_new_browser_and_never_spins(parts):
    # The old socket is still attached (the server has not seen it go) and the pod prints
    # while the new one resumes: the delivery must wait for the new browser, not spin.
    session = await parts.started()
    await output(parts, b"before")
    await until(lambda: session.sent_bytes == 6)

    class SlowBrowser(FakeBrowser):
        """Its replay takes a while: the pod's output arrives meanwhile."""

        def __init__(self) -> None:
            super().__init__()
            self.replaying = asyncio.Event()
            self.go_on = asyncio.Event()

        async def replay(self, start: int, end: int) -> None:
            self.replaying.set()
            await self.go_on.wait()
            await super().replay(start, end)

    new = SlowBrowser()
    new.stored = b"before"
    attaching = asyncio.ensure_future(session.attach(new, 0, READY))
    await new.replaying.wait()
    committed = len(parts.recorder.frames)
    parts.stream.events.put_nowait(Output(b"during"))
    await until(lambda: len(parts.recorder.frames) > committed)  # (a spin would hang here)
    new.go_on.set()
    await attaching
    await until(lambda: bytes(new.output) == b"beforeduring")
    assert b"during" not in parts.browser.output


async def test_a_failed_resume_leaves_the_session_detached_with_its_grace_running():
    parts = Parts(resume_grace=0.05)
    session = await parts.started()

    class Broken(FakeBrowser):
        async def send_text(self, text: str) -> None:
            raise ConnectionError("the new socket went too")

    with pytest.raises(ConnectionError):
        await session.attach(Broken(), 0, READY)  # taking over the attached browser
    assert session.browser is None
    await session.wait_ended()  # the grace ran out: nobody came
    parts.assert_ended_once(EndReason.BROWSER_GONE)
