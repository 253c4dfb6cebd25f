"""Who watches a terminal: the leases (a fake clock, no sleeps) and what the browser is sent."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import pytest

from terminals.live import WATCH_LEASE
from terminals.session.watchers import MAX_NAMES, Watchers, WatchersShown, watchers_frame


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Timers:
    """A fake ``call_later``: the checks it was asked for, run by hand."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> Timers.Handle:
        entry = (delay, callback)
        self.pending.append(entry)
        return Timers.Handle(self, entry)

    class Handle:
        def __init__(self, timers: Timers, entry: tuple[float, Callable[[], None]]) -> None:
            self.timers, self.entry = timers, entry

        def cancel(self) -> None:
            if self.entry in self.timers.pending:
                self.timers.pending.remove(self.entry)

    def fire(self) -> float:
        """Run the one pending check; return the delay it was scheduled with."""
        assert len(self.pending) == 1, self.pending
        delay, callback = self.pending.pop()
        callback()
        return delay


class Browser:
    def __init__(self) -> None:
        self.frames: list[list[str]] = []
        self.fail = False

    async def send_text(self, text: str) -> None:
        if self.fail:
            raise ConnectionResetError("the socket went away")
        message = json.loads(text)
        assert message["type"] == "watchers"
        self.frames.append(message["watchers"])


async def settled() -> None:
    """Let the sender task run to its end (it only awaits the fake browser)."""
    for _ in range(5):
        await asyncio.sleep(0)


# Watchers: the set and its leases.


def test_a_watcher_is_listed_until_its_lease_lapses_and_a_renewal_extends_it():
    clock = Clock()
    watchers = Watchers(lease=30, clock=clock)
    assert watchers.names() == [] and watchers.next_lapse() is None

    watchers.seen("chan-a", "alice")
    assert watchers.names() == ["alice"]
    assert watchers.next_lapse() == 30

    clock.now += 20
    watchers.seen("chan-a", "alice")  # the renewal
    clock.now += 20
    assert watchers.names() == ["alice"]
    assert watchers.next_lapse() == 10

    clock.now += 10
    assert watchers.names() == []  # the lease is over at its end, not after
    assert watchers.next_lapse() is None


def test_names_are_sorted_and_each_user_is_listed_once_whatever_their_pages():
    watchers = Watchers(clock=Clock())
    watchers.seen("chan-3", "carol")
    watchers.seen("chan-1", "alice")
    watchers.seen("chan-2", "alice")  # a second tab of alice's
    assert watchers.names() == ["alice", "carol"]

    watchers.left("chan-1")
    assert watchers.names() == ["alice", "carol"]  # alice's other tab still watches
    watchers.left("chan-2")
    watchers.left("chan-unknown")  # a watcher never seen (or gone already): nothing happens
    assert watchers.names() == ["carol"]


def test_the_next_lapse_is_the_earliest_lease():
    clock = Clock()
    watchers = Watchers(lease=30, clock=clock)
    watchers.seen("a", "alice")
    clock.now += 12
    watchers.seen("b", "bob")
    assert watchers.next_lapse() == 18
    clock.now += 18
    assert watchers.names() == ["bob"]
    assert watchers.next_lapse() == 12


def test_the_default_lease_is_the_watch_lease_of_the_channel_layer_contract():
    clock = Clock()
    watchers = Watchers(clock=clock)
    watchers.seen("a", "alice")
    assert watchers.next_lapse() == WATCH_LEASE


def test_a_frame_lists_a_bounded_number_of_names():
    watchers = Watchers(clock=Clock())
    for n in range(MAX_NAMES + 10):
        watchers.seen(f"chan-{n}", f"user{n:03}")
    assert len(watchers.names()) == MAX_NAMES


def test_the_frame_is_the_browser_protocols():
    assert json.loads(watchers_frame(["alice", "bob"])) == {
        "type": "watchers",
        "watchers": ["alice", "bob"],
    }


# WatchersShown: what the browser is sent, and when.


def shown(live: Callable[[], bool] = lambda: True) -> tuple[WatchersShown, Clock, Timers, Browser]:
    clock, timers, browser = Clock(), Timers(), Browser()
    board = WatchersShown(Watchers(lease=30, clock=clock), browser.send_text, live, timers)
    return board, clock, timers, browser


async def test_arrivals_and_departures_are_sent_and_renewals_are_not():
    board, _, _, browser = shown()
    board.seen("chan-a", "alice")
    await settled()
    board.seen("chan-b", "bob")
    await settled()
    board.seen("chan-a", "alice")  # a renewal: nothing changed, nothing is sent
    await settled()
    board.left("chan-a")
    await settled()
    board.left("chan-b")
    await settled()
    assert browser.frames == [["alice"], ["alice", "bob"], ["bob"], []]


async def test_a_lapsed_lease_is_sent_when_it_lapses():
    board, clock, timers, browser = shown()
    board.seen("chan-a", "alice")
    await settled()
    clock.now += 10
    board.seen("chan-b", "bob")
    await settled()
    assert browser.frames == [["alice"], ["alice", "bob"]]

    clock.now += 20  # alice's lease (30 s from her arrival) is over, bob's has 10 s left
    assert timers.fire() == pytest.approx(20, abs=0.1)
    await settled()
    assert browser.frames[-1] == ["bob"]
    clock.now += 10
    assert timers.fire() == pytest.approx(10, abs=0.1)
    await settled()
    assert browser.frames[-1] == []
    assert timers.pending == []  # nobody watches: no check is pending


async def test_changes_made_while_a_send_is_in_flight_are_sent_after_it_in_order():
    gate = asyncio.Event()
    sent: list[list[str]] = []

    async def slow_send(text: str) -> None:
        await gate.wait()
        sent.append(json.loads(text)["watchers"])

    board = WatchersShown(Watchers(clock=Clock()), slow_send, lambda: True, Timers())
    board.seen("a", "alice")
    await settled()
    board.seen("b", "bob")
    board.seen("c", "carol")
    gate.set()
    await settled()
    assert sent == [["alice"], ["alice", "bob", "carol"]]


async def test_a_failed_send_is_logged_and_the_next_change_is_tried_again(caplog):
    caplog.set_level(logging.INFO, logger="terminals.session.watchers")
    board, _, _, browser = shown()
    browser.fail = True
    board.seen("a", "alice")
    await settled()
    assert "could not show its watchers" in caplog.text
    browser.fail = False
    board.seen("b", "bob")
    await settled()
    assert browser.frames == [["alice", "bob"]]


async def test_nothing_is_sent_before_the_terminal_is_ready_or_after_it_ended():
    running = False
    board, clock, timers, browser = shown(lambda: running)
    board.seen("a", "alice")  # while the shell starts
    await settled()
    assert browser.frames == [] and timers.pending == []

    running = True
    board.seen("a", "alice")  # the next renewal shows it
    await settled()
    assert browser.frames == [["alice"]]

    running = False  # the session ended
    clock.now += 30
    timers.fire()
    await settled()
    board.left("a")
    await settled()
    assert browser.frames == [["alice"]]
    assert timers.pending == []


async def test_resend_sends_the_names_again_to_a_browser_that_came_back():
    board, _, _, browser = shown()
    board.seen("a", "alice")
    await settled()
    board.resend()
    await settled()
    assert browser.frames == [["alice"], ["alice"]]


async def test_close_cancels_the_pending_check():
    board, _, timers, _ = shown()
    board.seen("a", "alice")
    await settled()
    assert len(timers.pending) == 1
    board.close()
    assert timers.pending == []
