"""The Redis channel layer to use with webshell: channels_redis's, with a receive that a
consumer's end cannot make lose another consumer's message.

In channels_redis 4.3 the first of a process's waiting receives pops the process's messages
from Redis for all of them. Cancel that receive (its consumer ended: a socket closed) while a
popped message's reply is on its way, and redis-py drops the connection with the reply unread:
the message, often another consumer's, is gone. A resumed terminal's keystrokes, relayed to the
process that holds it, vanished that way when the socket it took over ended at that moment
(tests/test_channel_layer.py makes it happen every time with the upstream layer).

Here one task of the process's own pops every message and files it under its channel; a receive
only waits for its channel's queue, so cancelling it loses nothing. Messages for a channel that
nobody has received for the layer's ``expiry`` are dropped, as Redis would have dropped them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from channels_redis.core import RedisChannelLayer as UpstreamRedisChannelLayer


class ChannelLayerReadFailed(ConnectionError):
    """The process's reader of the layer failed (Redis is down or slow); a receive that sees
    this may try again, and the next receive starts another reader."""


class RedisChannelLayer(UpstreamRedisChannelLayer):
    """``channels_redis.core.RedisChannelLayer`` with one reader of the process's messages
    that no consumer owns (see the module docstring). Configured as upstream's."""

    clock = staticmethod(time.monotonic)  # for the expiry of unreceived messages

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reader: asyncio.Task[None] | None = None
        self._receiving: dict[str, int] = {}  # channel: receives waiting on it now
        self._filed: dict[str, float] = {}  # channel: when a message was last filed for it
        self._next_sweep = 0.0

    async def receive(self, channel: str) -> dict[str, Any]:
        if "!" not in channel:
            return await super().receive(channel)  # type: ignore[no-any-return]
        assert self.require_valid_channel_name(channel)
        real_channel = self.non_local_name(channel)
        assert real_channel.endswith(self.client_prefix + "!"), "Wrong client prefix"
        buffer = self.receive_buffer[channel]
        while buffer.empty():
            reader = self._reader_of(real_channel)
            getting = asyncio.ensure_future(buffer.get())
            self._receiving[channel] = self._receiving.get(channel, 0) + 1
            try:
                await asyncio.wait((getting, reader), return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                getting.cancel()
                # As upstream: a receive is cancelled when its consumer ends, and its
                # channel's messages go with it.
                self._stop_receiving(channel)
                if channel not in self._receiving:
                    self._forget(channel)
                raise
            self._stop_receiving(channel)
            if getting.done():
                message: dict[str, Any] = getting.result()
                break
            getting.cancel()
            if not reader.cancelled():  # cancelled: its loop was closing; start another
                failure = reader.exception()
                raise ChannelLayerReadFailed(f"reading the layer failed: {failure!r}") from failure
        else:
            message = buffer.get_nowait()
        if buffer.empty() and channel not in self._receiving:
            self._forget(channel)  # no queue kept for a channel with nothing in it
        return message

    def _stop_receiving(self, channel: str) -> None:
        self._receiving[channel] -= 1
        if not self._receiving[channel]:
            del self._receiving[channel]

    def _reader_of(self, real_channel: str) -> asyncio.Task[None]:
        """The process's reader on this loop, started if there is none (or it failed)."""
        loop = asyncio.get_running_loop()
        reader = self._reader
        if reader is None or reader.done() or reader.get_loop() is not loop:
            reader = self._reader = loop.create_task(self._read(real_channel))
            # Retrieved here too: a failure nobody waited for is no "never retrieved" error.
            reader.add_done_callback(lambda task: task.cancelled() or task.exception())
        return reader

    async def _read(self, real_channel: str) -> None:
        while True:
            channels, message = await self.receive_single(real_channel)
            now = self.clock()
            if now >= self._next_sweep:
                self._sweep(now)
            # A group message for several channels of this process comes once, for them all.
            for channel in channels if isinstance(channels, list) else [channels]:
                self.receive_buffer[channel].put_nowait(message)
                self._filed[channel] = now
            self._stop_if_cancelled()

    async def _brpop_with_clean(self, index: int, channel: str, timeout: float) -> Any:
        """Upstream's blocking pop (``brpop_timeout`` seconds at most), stopping the reader if
        it was cancelled meanwhile."""
        popped = await super()._brpop_with_clean(index, channel, timeout)
        if popped is None:
            self._stop_if_cancelled()
        return popped

    @staticmethod
    def _stop_if_cancelled() -> None:
        """redis-py can take a cancellation for a read timeout of its own and send the pop
        again (seen when a loop closed: its reader never ended): a cancelled reader stops
        once its pop returns."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    def _sweep(self, now: float) -> None:
        """Drop the messages of channels nobody has received for ``expiry`` seconds (their
        consumers have ended): Redis would have let them expire."""
        self._next_sweep = now + self.expiry
        for channel, filed in list(self._filed.items()):
            if filed < now - self.expiry and channel not in self._receiving:
                self._forget(channel)

    def _forget(self, channel: str) -> None:
        self.receive_buffer.pop(channel, None)
        self._filed.pop(channel, None)
