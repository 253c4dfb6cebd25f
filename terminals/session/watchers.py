"""Who watches a terminal, for the person at it (``TERMINALS["SHOW_WATCHERS"]``).

Each watcher (one watch page: its channel-layer channel) names its user when it asks for the
screen and with each renewal, and says when it leaves; one that neither renews nor says
goodbye (its process died) drops out when its lease (:data:`terminals.live.WATCH_LEASE`)
lapses. :class:`Watchers` keeps that set, pure, with the clock passed in; :class:`WatchersShown`
tells the browser ``{"type":"watchers","watchers":[…]}`` whenever the names change, from a
send of its own, so a slow or failed send never holds up or ends the terminal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..live import WATCH_LEASE

logger = logging.getLogger(__name__)

# A frame lists at most this many names; the watch page is for auditors, so this only bounds
# what one socket is sent if something went very wrong.
MAX_NAMES = 50


def watchers_frame(names: list[str]) -> str:
    """The browser protocol's ``watchers`` frame (text)."""
    return json.dumps({"type": "watchers", "watchers": names})


class Watchers:
    """The current watchers, each with the moment its lease lapses; no I/O, no timers."""

    def __init__(
        self, lease: float = WATCH_LEASE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lease = lease
        self._clock = clock
        self._until: dict[str, tuple[float, str]] = {}  # watcher -> (lease ends, username)

    def seen(self, watcher: str, name: str) -> None:
        """``watcher`` (one watch page) of user ``name`` is there: its lease starts again."""
        self._until[watcher] = (self._clock() + self._lease, name)

    def left(self, watcher: str) -> None:
        """``watcher`` has gone (its page closed)."""
        self._until.pop(watcher, None)

    def names(self) -> list[str]:
        """The users watching now, sorted, each once; lapsed leases are dropped."""
        now = self._clock()
        self._until = {w: entry for w, entry in self._until.items() if entry[0] > now}
        return sorted({name for _, name in self._until.values()})[:MAX_NAMES]

    def next_lapse(self) -> float | None:
        """Seconds until the next lease lapses (None when nobody watches)."""
        if not self._until:
            return None
        return max(0.0, min(until for until, _ in self._until.values()) - self._clock())


class Timer(Protocol):
    def cancel(self) -> None: ...


class WatchersShown:
    """Sends the browser the names of its watchers whenever they change.

    ``send`` is the session's browser port (``send_text``); ``live`` says whether the browser
    may be sent frames now (after ``ready``, before the end). A change that cannot be shown yet
    (before ``ready``) is shown with the next one, or at the next renewal. ``call_later``
    schedules the check at the next lapse (the event loop's by default).
    """

    def __init__(
        self,
        watchers: Watchers,
        send: Callable[[str], Awaitable[None]],
        live: Callable[[], bool],
        call_later: Callable[[float, Callable[[], None]], Timer] | None = None,
        name: str = "",
    ) -> None:
        self.watchers = watchers
        self._send = send
        self._live = live
        self._call_later = call_later
        self._name = name
        self._shown: list[str] | None = []  # what the browser was last sent (None: unsure)
        self._timer: Timer | None = None
        self._sender: asyncio.Future[None] | None = None

    def seen(self, watcher: str, name: str) -> None:
        """A watcher arrived or renewed its lease."""
        self.watchers.seen(watcher, name)
        self.update()

    def left(self, watcher: str) -> None:
        """A watcher left."""
        self.watchers.left(watcher)
        self.update()

    def resend(self) -> None:
        """Send the names again, changed or not (a browser that has just come back)."""
        self._shown = None
        self._sender_start()

    def close(self) -> None:
        """Stop: no more checks at lapses (the session ended)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def update(self) -> None:
        """Show the names if they changed; check again when the next lease lapses."""
        self._sender_start()
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        delay = self.watchers.next_lapse()
        if delay is None or not self._live():
            return
        call_later = self._call_later or asyncio.get_running_loop().call_later
        # A hair past the lapse, so that names() finds the lease over.
        self._timer = call_later(delay + 0.01, self.update)

    def _sender_start(self) -> None:
        if self._sender is not None and not self._sender.done():
            return  # the running sender shows the latest names before it stops
        if self._live() and self.watchers.names() != self._shown:
            self._sender = asyncio.ensure_future(self._show())

    async def _show(self) -> None:
        """Send until what the browser was last sent is the current set (one send at a time,
        so frames go out in order)."""
        while self._live() and (names := self.watchers.names()) != self._shown:
            try:
                await self._send(watchers_frame(names))
            except Exception as exc:  # the browser is going; the terminal is none the worse
                logger.info("Session %s: could not show its watchers: %r", self._name, exc)
                return
            self._shown = names

    def __repr__(self) -> str:
        return f"<WatchersShown {self._name} {self._shown!r}>"
