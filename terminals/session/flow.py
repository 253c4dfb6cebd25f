"""The flow-control window: output sent to the browser and not yet acknowledged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..flag import Flag


class FlowWindow:
    """Lets output through while fewer than ``size`` bytes are unacknowledged.

    The browser acks the bytes it has drawn; a browser that stops acking receives ``size``
    bytes (plus the message in flight) and then nothing more, which stops the output pump.

    The window is the client's word, so it is not the only bound: :meth:`deliver` also waits
    for the send itself, which under Daphne waits while the socket's write buffer is full
    (:mod:`terminals.daphne`). A client that acks what it never read keeps the window open
    and still gets no more than its socket takes.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = 0
        self.acked = 0
        self._open = Flag()
        self._open.set()
        self._closed = False

    @property
    def unacknowledged(self) -> int:
        """Bytes sent and not yet acknowledged."""
        return self.sent - self.acked

    async def wait(self) -> None:
        """Return once more may be sent (or the window is closed)."""
        while not self._closed and self.unacknowledged >= self.size:
            self._open.clear()
            await self._open.wait()

    async def deliver(self, send: Callable[[bytes], Awaitable[None]], data: bytes) -> None:
        """Send ``data`` once the window has room; return once ``send`` has returned."""
        await self.wait()
        self.sending(len(data))
        await send(data)

    def sending(self, count: int) -> None:
        """Count ``count`` bytes as sent."""
        self.sent += count

    def ack(self, count: int) -> None:
        """The browser has processed ``count`` more bytes (never more than were sent)."""
        self.acked = min(self.sent, self.acked + count)
        if self.unacknowledged < self.size:
            self._open.set()

    def reset(self) -> None:
        """Start counting afresh (another browser is attached, or none): nothing is
        unacknowledged, and a delivery waiting for acks moves on."""
        self.sent = self.acked = 0
        self._open.set()

    def close(self) -> None:
        """Release every waiter for good (the session is ending)."""
        self._closed = True
        self._open.set()
