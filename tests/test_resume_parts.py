"""The parts of resuming, each on its own: tokens and requests, reading output from byte N of
the store, the relay's port on the holding process, and the mailbox of a detached session."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from terminals import live
from terminals.models import Frame, Session
from terminals.session import resume
from terminals.session.resume import (
    NotResumable,
    RemoteBrowser,
    ResumeRequest,
    StoredOutput,
    new_token,
    resume_request,
    token_digest,
)


def test_tokens_are_long_random_and_stored_as_a_digest():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(token) >= 32 for token in tokens)  # 192 bits of URL-safe base64
    token = next(iter(tokens))
    assert token_digest(token) == hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", None),
        (b"container=main", None),
        (b"resume=abc&offset=12", ResumeRequest("abc", 12)),
        (b"resume=abc", ResumeRequest("abc", 0)),
    ],
)
def test_resume_requests_are_read_from_the_query(query, expected):
    assert resume_request({"query_string": query}) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (b"resume=&offset=0", "token"),
        (b"resume=" + b"a" * 101, "token"),
        (b"resume=abc&offset=-1", "whole number"),
        (b"resume=abc&offset=1e3", "whole number"),
        (b"resume=abc&offset=" + b"9" * 19, "whole number"),
    ],
)
def test_bad_resume_requests_say_why(query, message):
    with pytest.raises(NotResumable, match=message):
        resume_request({"query_string": query})


# Reading the output from byte N: rows of several sizes, stdin and resizes between them.


@pytest.fixture
def session_with_output(db: Any) -> Session:
    session = Session.objects.create(username="sam", cluster="c", namespace="n", pod="p")
    rows = [
        ("r", b"80x24"),
        ("o", b"0123"),
        ("i", b"ls"),
        ("o", b"45"),
        ("o", b""),
        ("o", b"6789AB"),
    ]
    for seq, (direction, data) in enumerate(rows):
        Frame.objects.create(
            session=session, seq=seq, offset_us=seq, direction=direction, data=data, digest=""
        )
    return session


STREAM = b"0123456789AB"


@pytest.mark.parametrize("start", range(len(STREAM) + 1))
def test_output_is_read_from_any_byte_exactly(session_with_output, start):
    reader = StoredOutput(session_with_output.pk, start)
    assert reader.read(len(STREAM)) == STREAM[start:]
    assert reader.read(len(STREAM)) == b""


def test_reads_stop_at_the_end_asked_and_at_the_limit(session_with_output):
    reader = StoredOutput(session_with_output.pk, 2)
    assert reader.read(7, limit=3) == b"234"
    assert reader.read(7) == b"56"
    assert reader.read(9) == b"78"
    assert reader.position == 9


def test_a_read_past_the_store_returns_what_is_there(session_with_output):
    reader = StoredOutput(session_with_output.pk, 10)
    assert reader.read(100) == b"AB"
    Frame.objects.create(
        session=session_with_output, seq=6, offset_us=6, direction="o", data=b"CD", digest=""
    )
    assert reader.read(100) == b"CD"  # committed since: read on


# The holder's port for a relayed browser.


class RecordingLayer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.more = asyncio.Event()

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self.more.set()


async def test_the_relay_port_sends_in_order_and_merges_output_notices():
    layer = RecordingLayer()
    browser = RemoteBrowser(layer, "reply", "a1")
    await browser.send_text('{"type": "ready"}')
    await browser.replay(5, 10)
    await browser.send_bytes(b"xyz")
    await browser.send_bytes(b"!")
    await browser.send_text('{"type": "exit", "code": 0}')
    await browser.close_with(1000)
    await asyncio.wait_for(browser._task, 5)  # it stops after the close
    assert [(m["type"], m.get("upto"), m.get("code")) for m in layer.sent] == [
        (resume.RELAY_TEXT, None, None),
        (resume.RELAY_OUTPUT, 14, None),
        (resume.RELAY_TEXT, None, None),
        (resume.RELAY_CLOSE, None, 1000),
    ]
    assert all(m["attach"] == "a1" for m in layer.sent)


async def test_a_silent_relay_is_taken_as_gone_once():
    silent = asyncio.Event()
    calls: list[int] = []

    def on_silent() -> None:
        calls.append(1)
        silent.set()

    browser = RemoteBrowser(RecordingLayer(), "reply", "a1", on_silent=on_silent, lease=0.01)
    await asyncio.wait_for(silent.wait(), 5)
    assert calls == [1]
    browser.stop()


async def test_a_stopped_relay_port_is_never_taken_as_silent():
    called: list[int] = []
    browser = RemoteBrowser(RecordingLayer(), "r", "a", on_silent=lambda: called.append(1), lease=0)
    browser.stop()
    await asyncio.wait_for(browser._task, 5)
    await asyncio.sleep(0)  # a timer due now would run in this turn
    assert called == []


# The mailbox: a detached session's messages reach the handlers of its old consumer.


async def test_a_mailbox_hands_the_sessions_group_messages_to_dispatch_until_stopped():
    layer = InMemoryChannelLayer()
    group = live.terminal_group("0b6f5a4e-0000-4000-8000-000000000001")
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    mailbox = resume.Mailbox(layer, group, got.put)
    mailbox.start()
    await asyncio.wait_for(mailbox.joined.wait(), 5)
    for name in ("first", "second"):
        await layer.group_send(group, live.terminate_message(1, name))
    names = [(await asyncio.wait_for(got.get(), 5))["username"] for _ in range(2)]
    assert names == ["first", "second"]
    mailbox.stop()
    # Stopped, it leaves the group (in the background).
    await asyncio.wait_for(asyncio.gather(*live._BACKGROUND), 5)
    assert not layer.groups.get(group)


# The consumer of a socket that another one took the session from ignores what it still sends.


async def test_a_replaced_socket_can_no_longer_type():
    from terminals.consumers import TerminalConsumer

    handled: list[Any] = []

    class Session:
        browser: Any = None

        async def handle(self, message: Any) -> None:
            handled.append(message)

    consumer = TerminalConsumer()
    session = consumer.session = Session()  # type: ignore[assignment]
    session.browser = consumer
    await consumer.receive(bytes_data=b"mine\r")
    session.browser = object()  # resumed by another socket
    await consumer.receive(bytes_data=b"late\r")
    assert [m.data for m in handled] == [b"mine\r"]
