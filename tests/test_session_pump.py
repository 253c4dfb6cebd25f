"""OutputPump: output is committed before the browser sees it, in order, merged, bounded.

The pod is a :class:`FakeExec` (a queue of Output and ExecStatus), the audit store a
:class:`FakeRecorder` whose commits the test resolves by hand, the browser a
:class:`FakeBrowser` whose deliveries the test can hold back.
"""

from __future__ import annotations

import asyncio

import pytest

from terminals.audit.recorder import STDOUT, AuditUnavailable, Stored
from terminals.kube.exec import ExecStatus, Output
from terminals.protocol import CloseCode
from terminals.session.ending import AUDIT_DOWN, EndSession
from terminals.session.pump import OutputPump

EXITED = ExecStatus(code=0, reason="Success", message="")


async def run_ready_tasks(turns: int = 10) -> None:
    """Let every task that can run do so; no time passes (each turn is one loop iteration).

    Used only to show that something has *not* happened: there is no event to await for that.
    """
    for _ in range(turns):
        await asyncio.sleep(0)


class FakeExec:
    """The pod's side: what the test queues comes out of ``receive()``, which counts calls."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Output | ExecStatus] = asyncio.Queue()
        self.reads = 0

    async def receive(self) -> Output | ExecStatus:
        self.reads += 1
        return await self.queue.get()

    def prints(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.queue.put_nowait(Output(piece))

    def exits(self, status: ExecStatus = EXITED) -> None:
        self.queue.put_nowait(status)


class FakeRecorder:
    """The audit store: each submission's commit waits for the test (unless ``auto_commit``)."""

    def __init__(self, *, auto_commit: bool = False, refuse: bool = False) -> None:
        self.auto_commit = auto_commit
        self.refuse = refuse
        self.submitted: list[tuple[str, bytes, asyncio.Future[Stored]]] = []
        self._arrived = asyncio.Event()

    async def submit(self, direction: str, data: bytes) -> asyncio.Future[Stored]:
        if self.refuse:
            raise AuditUnavailable("The audit store cannot be written.")
        done: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self.submitted.append((direction, data, done))
        self._arrived.set()
        if self.auto_commit:
            self.commit(len(self.submitted) - 1)
        return done

    async def wait_for(self, count: int) -> None:
        """Return once ``count`` pieces have been submitted."""
        while len(self.submitted) < count:
            self._arrived.clear()
            await self._arrived.wait()

    def commit(self, index: int, last_in_row: bool = True) -> Stored:
        stored = Stored(seq=index + 1, last_in_row=last_in_row)
        self.submitted[index][2].set_result(stored)
        return stored

    def fail(self, index: int) -> None:
        self.submitted[index][2].set_exception(AuditUnavailable("commit failed"))


class FakeBrowser:
    """``deliver()`` records what the browser got; with ``held``, each waits for ``allow()``."""

    def __init__(self, *, held: bool = False) -> None:
        self.got: list[bytes] = []
        self.delivered: list[tuple[bytes, Stored]] = []
        self._allowed = asyncio.Semaphore(0)
        self.held = held
        self.waiting = asyncio.Event()

    async def deliver(self, data: bytes) -> None:
        if self.held:
            self.waiting.set()
            await self._allowed.acquire()
            self.waiting.clear()
        self.got.append(data)

    def on_delivered(self, data: bytes, stored: Stored) -> None:
        self.delivered.append((data, stored))

    def allow(self, count: int = 1) -> None:
        for _ in range(count):
            self._allowed.release()

    def release(self) -> None:
        self.held = False
        self.allow(1_000)


def make_pump(pod: FakeExec, store: FakeRecorder, browser: FakeBrowser, **kwargs) -> OutputPump:
    return OutputPump(pod.receive, store, browser.deliver, delivered=browser.on_delivered, **kwargs)


async def test_output_reaches_the_browser_only_after_its_commit():
    pod, store, browser = FakeExec(), FakeRecorder(), FakeBrowser()
    pod.prints(b"secret")
    pumping = asyncio.create_task(make_pump(pod, store, browser).run())
    await store.wait_for(1)
    await run_ready_tasks()
    assert browser.got == [], "output shown before the audit store holds it"

    store.commit(0)
    await run_ready_tasks()

    assert browser.got == [b"secret"]
    assert store.submitted[0][:2] == (STDOUT, b"secret")
    pod.exits()
    assert await pumping == EXITED


async def test_order_is_kept_when_later_commits_finish_first():
    pod, store, browser = FakeExec(), FakeRecorder(), FakeBrowser()
    pod.prints(b"one ", b"two ", b"six ")
    pumping = asyncio.create_task(make_pump(pod, store, browser, chunk=4).run())
    await store.wait_for(3)

    store.commit(2)
    store.commit(1)
    await run_ready_tasks()
    assert browser.got == [], "later output may not overtake output still being committed"

    store.commit(0)
    pod.exits()
    await pumping

    assert browser.got == [b"one ", b"two ", b"six "]


async def test_committed_consecutive_pieces_are_merged_up_to_chunk_bytes_and_not_beyond():
    pod, store, browser = FakeExec(), FakeRecorder(), FakeBrowser()
    pod.prints(b"aaaa", b"bbbb", b"cc", b"d")
    pumping = asyncio.create_task(make_pump(pod, store, browser, chunk=10).run())
    await store.wait_for(4)

    for index in range(4):
        store.commit(index)
    pod.exits()
    await pumping

    assert browser.got == [b"aaaabbbbcc", b"d"], "one message of exactly 10 bytes, then the rest"


async def test_a_piece_still_being_committed_is_not_merged():
    pod, store, browser = FakeExec(), FakeRecorder(), FakeBrowser()
    pod.prints(b"one ", b"two ", b"six ")
    pumping = asyncio.create_task(make_pump(pod, store, browser).run())
    await store.wait_for(3)

    store.commit(0)
    store.commit(2)
    await run_ready_tasks()
    assert browser.got == [b"one "]

    store.commit(1)
    pod.exits()
    await pumping
    assert browser.got == [b"one ", b"two six "]


async def test_reading_stops_while_more_than_read_ahead_is_undelivered_and_resumes_after():
    pod, store, browser = FakeExec(), FakeRecorder(auto_commit=True), FakeBrowser(held=True)
    pieces = [bytes([ord("a") + n]) * 4 for n in range(8)]
    pod.prints(*pieces)
    pod.exits()
    pump = make_pump(pod, store, browser, read_ahead=8)
    pumping = asyncio.create_task(pump.run())

    await browser.waiting.wait()
    await run_ready_tasks()
    # 4 and 8 bytes are within the bound; the third piece puts 12 over it: no fourth read.
    assert pod.reads == 3
    assert pump.undelivered == 12

    browser.allow(1)
    await run_ready_tasks()
    assert pod.reads > 3, "a delivery made room, so reading goes on"
    assert pump.undelivered == 12, "and stops again one piece past the bound"

    browser.release()
    assert await pumping == EXITED
    assert b"".join(browser.got) == b"".join(pieces)
    assert pod.reads == len(pieces) + 1


async def test_the_exit_status_comes_only_after_all_output_before_it_was_delivered():
    pod, store, browser = FakeExec(), FakeRecorder(), FakeBrowser()
    pod.prints(b"last ", b"words")
    pod.exits(ExecStatus(code=3, reason="NonZeroExitCode", message=""))
    pumping = asyncio.create_task(make_pump(pod, store, browser).run())
    await store.wait_for(2)
    await run_ready_tasks()
    assert not pumping.done(), "the exit would be shown before the last output"

    store.commit(0)
    store.commit(1)
    status = await pumping

    assert status.code == 3
    assert b"".join(browser.got) == b"last words"


async def test_the_first_read_in_flight_is_pumped_before_reading_again():
    pod, store, browser = FakeExec(), FakeRecorder(auto_commit=True), FakeBrowser()
    first: asyncio.Future[Output | ExecStatus] = asyncio.get_running_loop().create_future()
    first.set_result(Output(b"$ "))
    pod.prints(b"ls\r\n")
    pod.exits()

    await make_pump(pod, store, browser).run(first)

    assert b"".join(browser.got) == b"$ ls\r\n"
    assert pod.reads == 2, "the launcher's read is not repeated"


async def test_a_failed_commit_ends_the_session_with_4503_and_shows_nothing_more():
    pod, store, browser = FakeExec(), FakeRecorder(), FakeBrowser()
    pod.prints(b"shown", b"never shown")
    pumping = asyncio.create_task(make_pump(pod, store, browser).run())
    await store.wait_for(2)
    store.commit(0)
    await run_ready_tasks()
    assert browser.got == [b"shown"]

    store.fail(1)

    with pytest.raises(EndSession) as raised:
        await pumping
    assert raised.value.ending.code == CloseCode.AUDIT_UNAVAILABLE == 4503
    assert raised.value.ending.message == AUDIT_DOWN
    assert browser.got == [b"shown"]


async def test_a_store_that_refuses_the_submission_ends_the_session_with_4503():
    pod, store, browser = FakeExec(), FakeRecorder(refuse=True), FakeBrowser()
    pod.prints(b"never shown", b"never read")

    with pytest.raises(EndSession) as raised:
        await make_pump(pod, store, browser).run()

    assert raised.value.ending.code == CloseCode.AUDIT_UNAVAILABLE
    assert browser.got == []
    assert pod.reads == 1, "no more is read from the pod once the store is down"


async def test_delivered_gets_each_payload_with_where_it_was_stored():
    pod, store, browser = FakeExec(), FakeRecorder(), FakeBrowser()
    pod.prints(b"one ", b"two ", b"six ")
    pumping = asyncio.create_task(make_pump(pod, store, browser).run())
    await store.wait_for(3)

    first = store.commit(0)
    await run_ready_tasks()
    store.commit(1)
    last = store.commit(2, last_in_row=False)
    pod.exits()
    await pumping

    # A merged payload reports its last piece: the watchers' seq covers all of it.
    assert browser.delivered == [(b"one ", first), (b"two six ", last)]
    assert last == Stored(seq=3, last_in_row=False)


async def test_a_pump_cancelled_with_output_waiting_lets_it_go_at_once():
    pod, store, browser = FakeExec(), FakeRecorder(), FakeBrowser()
    pod.prints(b"a" * 1000, b"b" * 1000)
    pump = make_pump(pod, store, browser)
    pumping = asyncio.create_task(pump.run())
    await store.wait_for(2)  # read, and waiting for commits that never come
    assert pump.undelivered == 2000
    pumping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pumping
    # The read-ahead is not left to a reference cycle's collection.
    assert pump.undelivered == 0 and not pump._outbox
