"""The channel-layer contract: names and messages, and calls that survive the layer's faults.

The layer is a :class:`FakeLayer` that can be told to fail (Redis down); sleeps are fakes that
record their durations, and for the watchers' notices one the test wakes by hand.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from typing import Any

import pytest
from channels.consumer import get_handler_name
from channels.layers import BaseChannelLayer
from django.utils.module_loading import import_string

from terminals.live import (
    RETRY_FIRST,
    RETRY_MAX,
    Groups,
    ResilientReceiver,
    WatcherNotices,
    attempt,
    progress_message,
    snapshot_message,
    snapshot_request,
    terminal_group,
    terminate_message,
    unwatch_message,
    watchers_group,
    watching_message,
)

SESSION_ID = uuid.UUID("0b4c7c39-5ad4-4d0c-9a8e-2f6f3f0f8a11")
CHANNEL = "specific.abc!def"


async def run_ready_tasks(turns: int = 10) -> None:
    """Let every task that can run do so; no time passes (each turn is one loop iteration).

    Used only to show that something has *not* happened: there is no event to await for that.
    """
    for _ in range(turns):
        await asyncio.sleep(0)


class FakeLayer:
    """A channel layer that records every call and fails them all while ``failing``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.failing = False
        self.receive_failures = 0  # receive() fails this many times, then answers
        self.receives = 0
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def _fail_if_down(self) -> None:
        if self.failing:
            raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    async def group_add(self, group: str, channel: str) -> None:
        self.calls.append(("group_add", group, channel))
        self._fail_if_down()

    async def group_discard(self, group: str, channel: str) -> None:
        self.calls.append(("group_discard", group, channel))
        self._fail_if_down()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.calls.append(("group_send", group, message))
        self._fail_if_down()

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self.calls.append(("send", channel, message))
        self._fail_if_down()

    async def receive(self, channel: str) -> dict[str, Any]:
        self.receives += 1
        if self.receive_failures:
            self.receive_failures -= 1
            raise ConnectionError("Connection closed by server.")
        return await self.inbox.get()


class RecordingSleep:
    """A sleep that returns at once and records how long it was asked for."""

    def __init__(self) -> None:
        self.naps: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.naps.append(seconds)


class HeldSleep:
    """A sleep that records its duration and lasts until the test calls :meth:`wake`."""

    def __init__(self) -> None:
        self.naps: list[float] = []
        self.napping = asyncio.Event()
        self._wake: asyncio.Future[None] | None = None

    async def __call__(self, seconds: float) -> None:
        self.naps.append(seconds)
        self._wake = asyncio.get_running_loop().create_future()
        self.napping.set()
        await self._wake

    def wake(self) -> None:
        assert self._wake is not None
        self.napping.clear()
        self._wake.set_result(None)


async def until(condition: Any) -> None:
    """Let the loop run until ``condition()`` holds (scheduling steps, not time)."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 (a scheduling step, not a wait for time)
            await asyncio.sleep(0)


async def never() -> None:
    await asyncio.get_running_loop().create_future()


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# Names and messages


def test_group_names_name_the_session():
    assert terminal_group(SESSION_ID) == f"terminals.session.{SESSION_ID}"
    assert watchers_group(SESSION_ID) == f"terminals.watchers.{SESSION_ID}"
    assert terminal_group(str(SESSION_ID)) == terminal_group(SESSION_ID)


def test_group_names_are_valid_for_every_channel_layer():
    layer = BaseChannelLayer()
    assert layer.require_valid_group_name(terminal_group(SESSION_ID))
    assert layer.require_valid_group_name(watchers_group(SESSION_ID))


def test_messages_have_their_exact_shapes():
    assert terminate_message(7, "auditor", "policy breach") == {
        "type": "terminal.terminate",
        "user_id": 7,
        "username": "auditor",
        "reason": "policy breach",
    }
    assert snapshot_request(CHANNEL, "audrey") == {
        "type": "terminal.snapshot",
        "reply_to": CHANNEL,
        "watcher": "audrey",
    }
    assert watching_message(CHANNEL, "audrey") == {
        "type": "terminal.watching",
        "channel": CHANNEL,
        "watcher": "audrey",
    }
    assert unwatch_message(CHANNEL) == {"type": "terminal.unwatch", "channel": CHANNEL}
    assert snapshot_message(b"$ ", 80, 24, 12) == {
        "type": "watch.snapshot",
        "screen": b"$ ",
        "cols": 80,
        "rows": 24,
        "seq": 12,
    }
    assert progress_message(12) == {"type": "watch.progress", "seq": 12}
    assert progress_message(12, final=True) == {"type": "watch.ended", "seq": 12}


# attempt


async def test_attempt_is_true_when_the_call_succeeds():
    layer = FakeLayer()

    assert await attempt("joining g", layer.group_add("g", CHANNEL)) is True
    assert layer.calls == [("group_add", "g", CHANNEL)]


async def test_attempt_is_false_and_logs_when_the_call_fails(caplog):
    layer = FakeLayer()
    layer.failing = True

    with caplog.at_level(logging.WARNING, logger="terminals.live"):
        assert await attempt("joining g", layer.group_add("g", CHANNEL)) is False

    assert "joining g failed" in caplog.text
    assert "Connection refused" in caplog.text


async def test_attempt_is_false_when_the_call_does_not_answer_in_time():
    assert await attempt("notifying watchers", never(), timeout=0.01) is False


async def test_attempt_lets_the_callers_cancellation_through():
    attempting = asyncio.create_task(attempt("joining g", never(), timeout=3600))
    await run_ready_tasks()

    attempting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await attempting
    assert attempting.cancelled()


async def test_attempt_reraises_a_cancellation_from_the_call():
    async def cancelled_call() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await attempt("joining g", cancelled_call())


# ResilientReceiver


async def test_the_receiver_retries_with_doubling_back_off_capped_and_recovers_once():
    layer = FakeLayer()
    layer.receive_failures = 6
    sleep = RecordingSleep()
    recovered: list[int] = []

    async def on_recovered() -> None:
        recovered.append(layer.receives)

    receiver = ResilientReceiver(functools.partial(layer.receive, CHANNEL), on_recovered, sleep)
    layer.inbox.put_nowait({"type": "terminal.terminate", "user_id": 1, "username": "a"})

    message = await receiver()

    assert message == {"type": "terminal.terminate", "user_id": 1, "username": "a"}
    assert sleep.naps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert (RETRY_FIRST, RETRY_MAX) == (0.5, 5.0)
    assert recovered == [7], "groups are joined again once, after the receive that worked"
    assert not receiver.failing

    layer.inbox.put_nowait({"type": "terminal.snapshot", "reply_to": CHANNEL})
    assert await receiver() == {"type": "terminal.snapshot", "reply_to": CHANNEL}
    assert recovered == [7], "no rejoin without a failure before"


async def test_the_back_off_starts_again_after_a_recovery():
    layer = FakeLayer()
    sleep = RecordingSleep()
    recovered: list[int] = []

    async def on_recovered() -> None:
        recovered.append(layer.receives)

    receiver = ResilientReceiver(functools.partial(layer.receive, CHANNEL), on_recovered, sleep)
    for _ in range(2):
        layer.receive_failures = 3
        layer.inbox.put_nowait({"type": "terminal.terminate"})
        await receiver()

    assert sleep.naps == [0.5, 1.0, 2.0, 0.5, 1.0, 2.0]
    assert recovered == [4, 8]


async def test_a_run_of_receive_failures_logs_one_warning(caplog):
    layer = FakeLayer()
    layer.receive_failures = 5
    layer.inbox.put_nowait({"type": "terminal.terminate"})

    async def on_recovered() -> None:
        pass

    receiver = ResilientReceiver(
        functools.partial(layer.receive, CHANNEL), on_recovered, RecordingSleep()
    )
    with caplog.at_level(logging.WARNING, logger="terminals.live"):
        await receiver()

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "receive failed" in warnings[0].getMessage()


async def test_the_receiver_lets_cancellation_through_without_retrying():
    layer = FakeLayer()
    sleep = RecordingSleep()

    async def on_recovered() -> None:
        raise AssertionError("not recovered from anything")

    receiver = ResilientReceiver(functools.partial(layer.receive, CHANNEL), on_recovered, sleep)
    receiving = asyncio.create_task(receiver())
    await run_ready_tasks()

    receiving.cancel()

    with pytest.raises(asyncio.CancelledError):
        await receiving
    assert sleep.naps == []


# Groups


async def test_a_group_joined_while_the_layer_fails_is_joined_again_on_recovery():
    layer = FakeLayer()
    groups = Groups(layer, CHANNEL, sleep=HeldSleep())
    layer.failing = True

    assert await groups.join("terminals.session.x") is False

    layer.failing = False
    layer.calls.clear()
    await groups.rejoin()
    assert layer.calls == [("group_add", "terminals.session.x", CHANNEL)]
    await groups.leave_all()


async def test_a_failed_join_is_retried_in_the_background_until_the_layer_takes_it():
    """A Redis that comes back empty never wakes a consumer blocked in receive(): the groups
    must be joined again without waiting for a message."""
    layer, sleep = FakeLayer(), HeldSleep()
    groups = Groups(layer, CHANNEL, sleep=sleep)
    layer.failing = True
    assert await groups.join("terminals.session.x") is False
    assert groups.repairing

    await sleep.napping.wait()
    sleep.wake()  # still down: it tries, fails and backs off
    await sleep.napping.wait()
    assert sleep.naps == [RETRY_FIRST, RETRY_FIRST * 2]
    assert groups.repairing

    layer.failing = False  # Redis is back (and empty)
    layer.calls.clear()
    sleep.wake()
    await until(lambda: not groups.repairing)
    assert layer.calls == [("group_add", "terminals.session.x", CHANNEL)]


async def test_a_receive_failure_starts_the_repair_even_if_no_message_ever_comes():
    layer, sleep = FakeLayer(), HeldSleep()
    groups = Groups(layer, CHANNEL, sleep=sleep)
    assert await groups.join("terminals.session.x")
    layer.receive_failures = 1  # Redis went away under the blocking receive
    receiver = ResilientReceiver(
        lambda: layer.receive(CHANNEL),
        groups.rejoin,
        sleep=RecordingSleep(),
        on_failed=groups.repair,
    )
    receiving = asyncio.ensure_future(receiver())
    await until(lambda: groups.repairing)
    layer.calls.clear()
    await sleep.napping.wait()
    sleep.wake()
    await until(lambda: not groups.repairing)
    assert layer.calls == [("group_add", "terminals.session.x", CHANNEL)]
    await stop(receiving)


async def test_leaving_stops_the_repair():
    layer, sleep = FakeLayer(), HeldSleep()
    groups = Groups(layer, CHANNEL, sleep=sleep)
    layer.failing = True
    await groups.join("terminals.session.x")
    await groups.leave_all()
    await until(lambda: not groups.repairing)


async def test_rejoin_adds_every_remembered_group_again():
    layer = FakeLayer()
    groups = Groups(layer, CHANNEL)
    assert await groups.join("terminals.watchers.x") is True
    assert await groups.join("terminals.session.x") is True
    layer.calls.clear()

    await groups.rejoin()

    assert sorted(layer.calls) == [
        ("group_add", "terminals.session.x", CHANNEL),
        ("group_add", "terminals.watchers.x", CHANNEL),
    ]


async def test_rejoin_with_the_layer_still_down_does_not_raise():
    layer = FakeLayer()
    groups = Groups(layer, CHANNEL)
    await groups.join("terminals.session.x")
    layer.failing = True

    await groups.rejoin()

    assert layer.calls[-1] == ("group_add", "terminals.session.x", CHANNEL)


@pytest.mark.parametrize("failing", [False, True], ids=["layer-up", "layer-down"])
async def test_leave_all_discards_every_group_and_forgets_them(failing):
    layer = FakeLayer()
    groups = Groups(layer, CHANNEL)
    await groups.join("terminals.session.x")
    await groups.join("terminals.watchers.x")
    layer.calls.clear()
    layer.failing = failing

    await groups.leave_all()

    assert sorted(layer.calls) == [
        ("group_discard", "terminals.session.x", CHANNEL),
        ("group_discard", "terminals.watchers.x", CHANNEL),
    ]
    layer.calls.clear()
    layer.failing = False
    await groups.rejoin()
    assert layer.calls == [], "a consumer that left must not join again on recovery"


# WatcherNotices


def notice(seq: int) -> tuple[Any, ...]:
    return ("group_send", watchers_group(SESSION_ID), {"type": "watch.progress", "seq": seq})


async def test_many_progress_calls_make_one_notice_per_interval_with_the_latest_seq():
    layer, sleep = FakeLayer(), HeldSleep()
    notices = WatcherNotices(layer, SESSION_ID, interval=0.25, sleep=sleep)
    notices.watched()
    for seq in range(1, 6):
        notices.progress(seq)
    running = asyncio.create_task(notices.run())

    await sleep.napping.wait()
    assert layer.calls == [notice(5)]

    for seq in range(6, 40):
        notices.progress(seq)
    await run_ready_tasks()
    assert layer.calls == [notice(5)], "nothing more is sent within the interval"

    sleep.wake()
    await sleep.napping.wait()
    assert layer.calls == [notice(5), notice(39)]

    sleep.wake()
    await run_ready_tasks()
    assert layer.calls == [notice(5), notice(39)], "no progress, no notice"
    assert sleep.naps == [0.25, 0.25]

    notices.progress(40)
    await sleep.napping.wait()
    assert layer.calls[-1] == notice(40)
    await stop(running)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_session_nobody_watches_sends_no_notices():
    layer, sleep = FakeLayer(), HeldSleep()
    notices = WatcherNotices(layer, SESSION_ID, interval=0.25, sleep=sleep)
    running = asyncio.create_task(notices.run())
    for seq in range(1, 100):
        notices.progress(seq)
    await run_ready_tasks()
    assert layer.calls == []
    await stop(running)


async def test_notices_flow_for_the_lease_after_a_watcher_says_it_is_there():
    layer, sleep, clock = FakeLayer(), HeldSleep(), Clock()
    notices = WatcherNotices(layer, SESSION_ID, interval=0.25, sleep=sleep, clock=clock, lease=30)
    running = asyncio.create_task(notices.run())
    notices.progress(1)
    notices.watched()  # the snapshot request: the watcher learns where the output stands
    await sleep.napping.wait()
    assert layer.calls == [notice(1)]
    clock.now += 29
    notices.progress(2)
    sleep.wake()
    await sleep.napping.wait()
    assert layer.calls == [notice(1), notice(2)]
    clock.now += 2  # the lease ran out: the watcher has gone without a word
    notices.progress(3)
    sleep.wake()
    await run_ready_tasks()
    assert layer.calls == [notice(1), notice(2)]
    notices.watched()  # a renewal
    await sleep.napping.wait()
    assert layer.calls[-1] == notice(3)
    await stop(running)


async def test_a_failing_layer_never_ends_the_notices():
    layer, sleep = FakeLayer(), HeldSleep()
    notices = WatcherNotices(layer, SESSION_ID, interval=0.25, sleep=sleep)
    notices.watched()
    layer.failing = True
    notices.progress(1)
    running = asyncio.create_task(notices.run())

    await sleep.napping.wait()
    assert layer.calls == [notice(1)]
    assert not running.done()

    layer.failing = False
    notices.progress(2)
    sleep.wake()
    await sleep.napping.wait()

    assert layer.calls == [notice(1), notice(2)]
    assert not running.done()
    await stop(running)


async def test_without_a_layer_the_notices_run_quietly():
    sleep = HeldSleep()
    notices = WatcherNotices(None, SESSION_ID, interval=0.25, sleep=sleep)
    notices.watched()
    notices.progress(1)
    running = asyncio.create_task(notices.run())

    await sleep.napping.wait()

    assert not running.done()
    await notices.ended(1)
    await stop(running)


async def test_ended_tells_the_watchers_the_last_seq():
    layer = FakeLayer()
    notices = WatcherNotices(layer, SESSION_ID)

    await notices.ended(9)

    assert layer.calls == [
        ("group_send", f"terminals.watchers.{SESSION_ID}", {"type": "watch.ended", "seq": 9})
    ]


async def test_ended_with_the_layer_down_does_not_raise():
    layer = FakeLayer()
    layer.failing = True
    notices = WatcherNotices(layer, SESSION_ID)

    await notices.ended(9)

    assert layer.calls[0][2] == {"type": "watch.ended", "seq": 9}


@pytest.mark.parametrize(
    ("message", "consumer"),
    [
        (terminate_message(7, "auditor"), "terminals.consumers.TerminalConsumer"),
        (snapshot_request(CHANNEL), "terminals.consumers.TerminalConsumer"),
        (watching_message(), "terminals.consumers.TerminalConsumer"),
        (unwatch_message(CHANNEL), "terminals.consumers.TerminalConsumer"),
        (snapshot_message(b"", 80, 24, 0), "terminals.watch.WatchConsumer"),
        (progress_message(0), "terminals.watch.WatchConsumer"),
        (progress_message(0, final=True), "terminals.watch.WatchConsumer"),
    ],
    ids=lambda value: value["type"] if isinstance(value, dict) else value.rsplit(".", 1)[-1],
)
def test_every_message_has_a_handler_on_the_consumer_it_is_sent_to(message, consumer):
    # Channels maps "a.b" to the method a_b(); a renamed type would be dropped with an error.
    handler = get_handler_name(message)
    assert callable(getattr(import_string(consumer), handler, None)), f"{consumer} lacks {handler}"


async def test_wake_cuts_the_back_off_short_and_restarts_it():
    """Once the groups are joined again the layer is back: the receiver retries at once."""
    layer, sleep = FakeLayer(), HeldSleep()
    layer.receive_failures = 2
    receiver = ResilientReceiver(lambda: layer.receive(CHANNEL), never, sleep=sleep)
    receiving = asyncio.ensure_future(receiver())
    await sleep.napping.wait()
    sleep.napping.clear()
    receiver.wake()  # no sleep.wake(): the nap is cut short, not finished
    await until(lambda: layer.receives == 2)
    await sleep.napping.wait()
    assert sleep.naps == [RETRY_FIRST, RETRY_FIRST]  # the back-off started over
    receiver.wake()
    layer.inbox.put_nowait({"type": "terminal.snapshot"})
    await stop(receiving)


async def test_notices_start_and_close_without_the_session_awaiting_the_layer():
    """close() returns at once even while a layer call hangs; the last notice goes out later."""
    layer = FakeLayer()
    hold = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def slow_group_send(group: str, message: dict[str, Any]) -> None:
        await hold.wait()
        sent.append(message)

    layer.group_send = slow_group_send  # type: ignore[method-assign]
    notices = WatcherNotices(layer, uuid.UUID(int=1), sleep=RecordingSleep())
    notices.watched()
    notices.start()
    notices.progress(3)
    await asyncio.sleep(0)
    notices.close(4)  # must not wait for the hung call
    hold.set()
    await until(lambda: {"type": "watch.ended", "seq": 4} in sent)


async def test_a_receive_that_turns_its_cancellation_into_an_error_is_not_retried():
    """redis-py can answer a cancellation with an error of its own: the receiver ends."""
    entered = asyncio.Event()

    async def swallowing_receive() -> dict[str, Any]:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionError("Connection closed by server.") from None
        raise AssertionError("unreachable")

    receiver = ResilientReceiver(swallowing_receive, never)
    receiving = asyncio.ensure_future(receiver())
    await entered.wait()
    receiving.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await receiving
    assert not receiver.failing
