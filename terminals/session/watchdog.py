"""The watchdog: a session ends when idle too long or open too long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from django.utils.translation import gettext as _

from ..protocol import CloseCode
from .ending import Ending

# Never wake more often than this, whatever the deadlines (a clock that does not move).
MIN_NAP = 0.05


class Watchdog:
    """Returns the :class:`Ending` due once a deadline passes; :meth:`touch` on activity."""

    def __init__(
        self,
        idle_limit: float,
        duration_limit: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.idle_limit = idle_limit
        self.duration_limit = duration_limit
        self._clock = clock
        self._sleep = sleep
        self.started = self.last_activity = clock()

    def touch(self) -> None:
        """Input or output happened now."""
        self.last_activity = self._clock()

    async def run(self) -> Ending:
        """Sleep until a deadline has passed, then say which."""
        while True:
            now = self._clock()
            if now - self.started >= self.duration_limit:
                return Ending.of(
                    CloseCode.MAX_DURATION,
                    _("The session reached its maximum of %(limit)s s.")
                    % {"limit": f"{self.duration_limit:g}"},
                )
            if now - self.last_activity >= self.idle_limit:
                return Ending.of(
                    CloseCode.IDLE,
                    _("No input or output for %(limit)s s.") % {"limit": f"{self.idle_limit:g}"},
                )
            wake = min(self.started + self.duration_limit, self.last_activity + self.idle_limit)
            await self._sleep(max(wake - now, MIN_NAP))
