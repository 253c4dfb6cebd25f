"""The Redis channel layer as configured: an idle consumer must not die of a read timeout."""

import asyncio
import os

import pytest
from channels.layers import get_channel_layer


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
