"""A small asyncio event for the objects every session keeps.

:class:`asyncio.Event` makes a :class:`collections.deque` for its waiters as it is built, and a
deque holds a block of 64 slots from the start: about 0.8 KiB per event, waited on or not. An
idle session keeps a dozen (its recorder's, output pump's, flow window's, socket's...), about
10 KiB. :class:`Flag` does all they use of an event (:meth:`~Flag.set`, :meth:`~Flag.clear`,
:meth:`~Flag.is_set`, :meth:`~Flag.wait`), the same way, in about 60 bytes, and keeps a list of
its waiters only while there are some.
"""

from __future__ import annotations

import asyncio

__all__ = ["Flag"]


class Flag:
    """:class:`asyncio.Event`, lighter: set, clear, is_set and wait, with the same meaning.

    :meth:`set` wakes every waiter; a waiter woken returns even if the flag is cleared again
    before it runs. Used from one event loop at a time, as asyncio's.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def __repr__(self) -> str:
        waiters = len(self._waiters or ())
        return f"<Flag {'set' if self._set else 'unset'}, waiters:{waiters}>"

    def is_set(self) -> bool:
        """True if the flag is set."""
        return self._set

    def set(self) -> None:
        """Set the flag and wake every task waiting for it."""
        if not self._set:
            self._set = True
            for waiter in self._waiters or ():
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        """Unset the flag: :meth:`wait` blocks again until :meth:`set`."""
        self._set = False

    async def wait(self) -> bool:
        """Return True at once if the flag is set; otherwise once it is set."""
        if self._set:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            waiters.remove(waiter)
            if not waiters and self._waiters is waiters:
                self._waiters = None  # no list kept while nobody waits
