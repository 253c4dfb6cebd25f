"""FlowWindow: output stops once the browser has ``size`` bytes it has not acknowledged."""

from __future__ import annotations

import asyncio

from terminals.session.flow import FlowWindow


async def run_ready_tasks(turns: int = 10) -> None:
    """Let every task that can run do so; no time passes (each turn is one loop iteration).

    Used only to show that something has *not* happened: there is no event to await for that.
    """
    for _ in range(turns):
        await asyncio.sleep(0)


async def holds_back(window: FlowWindow) -> bool:
    """True if ``window.wait()`` is still waiting once every ready task has run."""
    waiting = asyncio.create_task(window.wait())
    await run_ready_tasks()
    held = not waiting.done()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    return held


async def test_output_goes_through_until_size_bytes_are_unacknowledged():
    window = FlowWindow(size=10)

    window.sending(9)
    assert not await holds_back(window), "9 of 10 bytes unacknowledged: more may go"

    window.sending(1)
    assert window.unacknowledged == 10
    assert await holds_back(window), "the browser has a full window: output must wait"


async def test_an_ack_reopens_the_window_for_a_waiting_sender():
    window = FlowWindow(size=10)
    window.sending(10)
    sender = asyncio.create_task(window.wait())
    await run_ready_tasks()
    assert not sender.done()

    window.ack(1)
    await run_ready_tasks()

    assert sender.done(), "the browser drew a byte, so output may go on"


async def test_an_ack_that_leaves_the_window_full_keeps_the_sender_waiting():
    window = FlowWindow(size=10)
    window.sending(20)  # the message in flight may overshoot the window
    sender = asyncio.create_task(window.wait())

    window.ack(5)
    await run_ready_tasks()
    assert not sender.done(), "15 bytes still unacknowledged: output must wait"

    window.ack(6)
    await run_ready_tasks()
    assert sender.done()


async def test_of_two_waiting_senders_woken_by_one_ack_the_second_waits_again_when_full():
    window = FlowWindow(size=10)
    window.sending(10)
    sent: list[str] = []

    async def send(name: str) -> None:
        await window.wait()
        window.sending(10)
        sent.append(name)

    senders = [asyncio.create_task(send("first")), asyncio.create_task(send("second"))]
    await run_ready_tasks()

    window.ack(10)
    await run_ready_tasks()

    assert sent == ["first"], "the first sender filled the window again: the second must wait"
    assert window.unacknowledged == 10
    window.close()
    await asyncio.gather(*senders)


async def test_an_ack_beyond_what_was_sent_does_not_open_the_window_in_advance():
    window = FlowWindow(size=10)
    window.sending(4)

    window.ack(1_000_000)  # a client acking bytes it has not received

    assert window.unacknowledged == 0
    window.sending(10)
    assert await holds_back(window), "the early ack must not let more than a window through"


async def test_close_releases_every_waiter_for_good():
    window = FlowWindow(size=10)
    window.sending(10)
    senders = [asyncio.create_task(window.wait()) for _ in range(3)]
    await run_ready_tasks()
    assert not any(sender.done() for sender in senders)

    window.close()
    await run_ready_tasks()

    assert all(sender.done() for sender in senders), "a closing session must not hang a sender"
    window.sending(1_000)
    assert not await holds_back(window), "after close nothing waits on the browser any more"


class FullSocket:
    """A send that waits while more than ``bound`` bytes are held for a client that does not
    read, as Daphne's send does with terminals.daphne."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.held = 0
        self._room = asyncio.Event()
        self._room.set()

    async def send(self, data: bytes) -> None:
        while self.held > self.bound:
            self._room.clear()
            await self._room.wait()
        self.held += len(data)

    def client_reads(self, count: int) -> None:
        self.held -= count
        if self.held <= self.bound:
            self._room.set()


async def test_acks_for_output_never_read_let_no_more_through_than_the_socket_takes():
    window = FlowWindow(size=1024 * 1024)
    socket = FullSocket(bound=64 * 1024)
    delivered = 0

    async def pump() -> None:
        nonlocal delivered
        for _ in range(100):
            await window.deliver(socket.send, b"x" * 64 * 1024)
            delivered += 1
            window.ack(2**30)  # the client acks 1 GiB for every message, reading none

    pumping = asyncio.create_task(pump())
    await run_ready_tasks(100)

    assert window.unacknowledged < window.size, "the acks keep the window open"
    assert socket.held <= 64 * 1024 + 64 * 1024, "the socket's bound holds all the same"
    assert delivered == 2
    socket.client_reads(64 * 1024)
    await run_ready_tasks(100)
    assert delivered == 3, "output goes on as the client reads"
    pumping.cancel()
    await asyncio.gather(pumping, return_exceptions=True)


async def test_deliver_waits_for_the_window_before_it_sends():
    window = FlowWindow(size=10)
    window.sending(10)
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    delivering = asyncio.create_task(window.deliver(send, b"more"))
    await run_ready_tasks()
    assert sent == [], "the browser has a full window: nothing may be sent"

    window.ack(10)
    await delivering
    assert sent == [b"more"]
    assert window.unacknowledged == 4
