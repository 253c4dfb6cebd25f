"""The Redis channel layer as configured: an idle consumer must not die of a read timeout."""

import asyncio
import contextlib
import os
import threading
import time
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer as UpstreamRedisChannelLayer

from terminals.layers import ChannelLayerReadFailed, RedisChannelLayer

from .fixtures.redis_server import RedisServer


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (REDIS_URL)")
async def test_an_idle_receive_outlives_the_redis_block_timeout():
    # channels-redis blocks for up to 5 s per poll; with redis-py 8's default 5 s read timeout
    # that poll raises TimeoutError and ends the consumer (a terminal idle for 5 s would die).
    layer = get_channel_layer()
    channel = await layer.new_channel()
    receiving = asyncio.ensure_future(layer.receive(channel))
    done, _ = await asyncio.wait({receiving}, timeout=12)  # two and more polls of 5 s
    assert not done, f"receive ended on its own: {receiving.exception()!r}"
    await layer.send(channel, {"type": "still.listening"})
    assert (await asyncio.wait_for(receiving, 10))["type"] == "still.listening"


# The layer webshell configures (terminals.layers), against the one it replaces; each test on
# a redis-server of its own.

PING = {"type": "ping"}


def a_layer(server: RedisServer, kind: type = RedisChannelLayer, **config: Any) -> Any:
    hosts = [{"address": server.url, "socket_timeout": 30}]
    return kind(hosts=hosts, **config)


def blocked_in_pop(server: RedisServer) -> bool:
    client = server.client()
    try:
        return any(c["cmd"] == "bzpopmin" for c in client.client_list())
    finally:
        client.close()


async def until_blocked_in_pop(server: RedisServer) -> None:
    """Wait until a receive blocks in Redis (Redis says so only when asked: polled)."""
    async with asyncio.timeout(10):
        while not blocked_in_pop(server):  # noqa: ASYNC110 (Redis has no event to await)
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(RedisChannelLayer, id="terminals"),
        pytest.param(
            UpstreamRedisChannelLayer,
            id="channels_redis",
            marks=pytest.mark.xfail(strict=True, reason="channels_redis 4.3 loses the message"),
        ),
    ],
)
async def test_a_receive_cancelled_as_a_message_arrives_loses_no_other_channels_message(
    redis_server, kind
):
    layer = a_layer(redis_server, kind)
    ending, staying = await layer.new_channel(), await layer.new_channel()
    ending_receive = asyncio.ensure_future(layer.receive(ending))
    staying_receive = asyncio.ensure_future(layer.receive(staying))
    await until_blocked_in_pop(redis_server)
    # Another process sends while this one's loop is busy (a thread with a layer of its own
    # stands for it); Redis hands the message to the blocked pop, and the receive that made
    # it is cancelled before the loop reads the reply: a consumer ending at that moment.
    sender = a_layer(redis_server, kind)
    thread = threading.Thread(target=asyncio.run, args=(sender.send(staying, PING),))
    thread.start()
    thread.join()
    waiting = layer.prefix + layer.non_local_name(staying)
    client = redis_server.client()
    deadline = time.monotonic() + 10
    while client.zcard(waiting) and time.monotonic() < deadline:
        pass  # the loop stays busy
    assert not client.zcard(waiting), "nothing popped the message"
    client.close()
    ending_receive.cancel()
    done, _ = await asyncio.wait({staying_receive}, timeout=5)
    staying_receive.cancel()
    assert done and staying_receive.result() == PING


async def test_a_message_waits_for_its_channels_first_receive(redis_server):
    layer = a_layer(redis_server)
    early, late = await layer.new_channel(), await layer.new_channel()
    listening = asyncio.ensure_future(layer.receive(early))
    await until_blocked_in_pop(redis_server)
    await layer.send(late, PING)  # popped by the process's reader before `late` receives
    await layer.send(early, {"type": "after"})
    assert (await asyncio.wait_for(listening, 10))["type"] == "after"
    assert await asyncio.wait_for(layer.receive(late), 10) == PING


async def test_a_group_message_reaches_each_channel_of_the_process_in_it(redis_server):
    layer = a_layer(redis_server)
    first, second = await layer.new_channel(), await layer.new_channel()
    for channel in (first, second):
        await layer.group_add("both", channel)
    receives = [asyncio.ensure_future(layer.receive(c)) for c in (first, second)]
    await until_blocked_in_pop(redis_server)
    await a_layer(redis_server).group_send("both", PING)
    assert await asyncio.wait_for(asyncio.gather(*receives), 10) == [PING, PING]


async def test_a_failed_read_reaches_every_receive_and_a_later_receive_reads_again(
    redis_server,
):
    layer = a_layer(redis_server)
    channels = [await layer.new_channel() for _ in range(2)]
    receives = [asyncio.ensure_future(layer.receive(c)) for c in channels]
    await until_blocked_in_pop(redis_server)
    redis_server.kill()
    done, _ = await asyncio.wait(receives, timeout=30)
    assert len(done) == 2
    for receive in receives:
        with pytest.raises(ChannelLayerReadFailed, match="reading the layer failed"):
            receive.result()
    redis_server.start()
    again = asyncio.ensure_future(layer.receive(channels[0]))
    await a_layer(redis_server).send(channels[0], PING)
    assert await asyncio.wait_for(again, 10) == PING


async def test_no_connection_idle_through_an_outage_is_used_after_it(redis_server):
    """A connection left idle in the pool while Redis restarts is dead; redis-py's pool finds
    it so (a read that would not block) before handing it out, so a group join after the
    restart (a watcher's, in the product) connects anew. The product relies on that."""
    layer = a_layer(redis_server)
    channel = await layer.new_channel()
    await layer.group_add("before", channel)  # its connection goes back to the pool, idle
    receive = asyncio.ensure_future(layer.receive(channel))
    await until_blocked_in_pop(redis_server)
    redis_server.kill()
    await asyncio.wait([receive], timeout=30)
    with pytest.raises(ChannelLayerReadFailed):
        receive.result()
    redis_server.start()
    await layer.group_add("after", channel)
    await layer.group_send("after", PING)
    assert await asyncio.wait_for(layer.receive(channel), 10) == PING


async def test_messages_nobody_receives_go_after_the_expiry(redis_server):
    now = [1000.0]
    layer = a_layer(redis_server, expiry=60)
    layer.clock = lambda: now[0]
    gone, alive = await layer.new_channel(), await layer.new_channel()
    sender = a_layer(redis_server)
    listening = asyncio.ensure_future(layer.receive(alive))
    await until_blocked_in_pop(redis_server)
    await sender.send(gone, PING)  # a consumer that ended: nobody receives it
    await sender.send(alive, PING)
    assert await asyncio.wait_for(listening, 10) == PING
    assert not layer.receive_buffer[gone].empty()
    now[0] += 61
    listening = asyncio.ensure_future(layer.receive(alive))
    await sender.send(alive, PING)  # the next message filed sweeps
    assert await asyncio.wait_for(listening, 10) == PING
    assert gone not in layer.receive_buffer


async def test_a_reader_whose_pop_swallowed_its_cancellation_stops_at_its_next_pop(monkeypatch):
    popping = asyncio.Event()

    async def swallowing_pop(self, index, channel, timeout):
        # A fake of the pop, as redis-py can behave: a cancellation taken for a read timeout
        # of its own, and nothing popped.
        popping.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return None

    monkeypatch.setattr(UpstreamRedisChannelLayer, "_brpop_with_clean", swallowing_pop)
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"])  # never connected to
    receive = asyncio.ensure_future(layer.receive(await layer.new_channel()))
    await popping.wait()
    reader = layer._reader
    receive.cancel()
    reader.cancel()
    await asyncio.wait_for(asyncio.wait({reader, receive}), 5)
    assert reader.cancelled() and receive.cancelled()
