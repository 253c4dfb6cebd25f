"""How many refused attempts are written down one by one: a token bucket per client and kind.

Every refused connect used to write a ``DeniedAttempt`` row, so anyone, without logging in,
could write rows as fast as they could open sockets. Now each process keeps a token bucket per
*client and kind* (the username, or for anonymous refusals the client address; and the refusal
code): the first ``DENIAL_BURST`` refusals are recorded one by one, then one per
``DENIAL_INTERVAL`` seconds. The refusals in between are counted, not dropped: the next row
written for that client and kind carries the count and the time span (``[+290 more …]`` at
the end of its reason). A count does not wait for that client's next refusal for long either:
any later refusal in the process also writes the counts whose bucket has refilled, as summary
rows, and :func:`~terminals.records.flush_denials` writes every pending count at once.

The buckets live in memory, per process, with at most ``MAX_CLIENTS`` of them (clients with a
full bucket and nothing counted are forgotten first; past that, new clients share one bucket).
So the rows stay bounded under a flood from one client or from many, and the store does no work
at all for a counted refusal.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Buckets kept at most; past this, new clients share the ``OVERFLOW`` bucket of their kind.
MAX_CLIENTS = 10_000
#: The "who" of the bucket shared by clients beyond ``MAX_CLIENTS``.
OVERFLOW = "\x00overflow"

Key = tuple[str, str]  # (who, code)


@dataclass
class Tally:
    """Refusals counted and not written: how many, when, and the row fields of the last one."""

    count: int = 0
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def count_one(self, now: dt.datetime, fields: dict[str, Any]) -> None:
        """Count one more refusal, made at ``now``, with these row fields."""
        self.count += 1
        self.first = self.first or now
        self.last = now
        self.fields = fields

    def merge(self, older: Tally) -> None:
        """Take in ``older``'s refusals, all of which came before this tally's."""
        if not older.count:
            return
        self.count += older.count
        self.first = older.first
        self.last = self.last or older.last
        self.fields = self.fields or older.fields

    def note(self, *, late: bool = False) -> str:
        """The words a row carries for these refusals, or "" for none.

        A row written with its own refusal stands for itself and ``+count`` more; a ``late``
        row, written for counted refusals only, stands for ``count`` (the last one's fields).
        """
        if not self.count or self.first is None or self.last is None:
            return ""
        first = self.first.astimezone(dt.UTC)
        last = self.last.astimezone(dt.UTC)
        how_many = f"{self.count}" if late else f"+{self.count} more"
        return (
            f" [{how_many} like this from {first:%Y-%m-%d %H:%M:%S} to {last:%H:%M:%S} UTC, "
            f"counted but not recorded one by one{'; written later' if late else ''}]"
        )


@dataclass
class _Bucket:
    tokens: float
    updated: float
    tally: Tally = field(default_factory=Tally)


class DenialThrottle:
    """Token buckets per (who, code); thread-safe, since views and consumers' threads share it."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._clock = clock
        self._max_clients = max_clients
        self._lock = threading.Lock()
        self._buckets: dict[Key, _Bucket] = {}
        self._pending: set[Key] = set()  # keys whose tally has a count
        self._swept = -math.inf

    def admit(
        self, key: Key, burst: int, interval: float, now: dt.datetime, fields: dict[str, Any]
    ) -> Tally | None:
        """A tally to write with this refusal's row, or None when the refusal is only counted.

        The returned tally (often empty) now belongs to the caller: if its row cannot be
        written, hand it back with :meth:`give_back`.
        """
        with self._lock:
            key, bucket = self._bucket(key, burst, interval)
            self._refill(bucket, burst, interval)
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                self._pending.discard(key)
                tally, bucket.tally = bucket.tally, Tally()
                return tally
            bucket.tally.count_one(now, fields)
            self._pending.add(key)
            return None

    def due(self, burst: int, interval: float, everything: bool = False) -> list[Tally]:
        """Take the counts that may be written now (their bucket has a token), or all of them."""
        taken: list[Tally] = []
        with self._lock:
            # At most once a second, since every refusal asks: a flood from many clients would
            # otherwise walk every pending bucket each time.
            now = self._clock()
            if not everything and now - self._swept < 1:
                return taken
            self._swept = now
            for key in list(self._pending):
                bucket = self._buckets[key]
                self._refill(bucket, burst, interval)
                if bucket.tokens < 1 and not everything:
                    continue
                bucket.tokens = max(bucket.tokens - 1, 0.0)
                taken.append(bucket.tally)
                bucket.tally = Tally()
                self._pending.discard(key)
        return taken

    def give_back(self, key: Key, tally: Tally) -> None:
        """A tally whose row could not be written: count its refusals again."""
        if not tally.count:
            return
        with self._lock:
            key, bucket = self._bucket(key, 1, 1.0)
            bucket.tally.merge(tally)
            self._pending.add(key)

    def _bucket(self, key: Key, burst: int, interval: float) -> tuple[Key, _Bucket]:
        """The bucket of ``key``, made full if new; past the maximum, the shared one."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            return key, bucket
        if len(self._buckets) >= self._max_clients:
            self._forget_idle(burst, interval)
        if len(self._buckets) >= self._max_clients:
            key = (OVERFLOW, key[1])
        bucket = self._buckets.setdefault(key, _Bucket(float(burst), self._clock()))
        return key, bucket

    def _forget_idle(self, burst: int, interval: float) -> None:
        """Drop the buckets that have refilled and count nothing: forgetting them loses nothing."""
        now = self._clock()
        for key, bucket in list(self._buckets.items()):
            full = bucket.tokens + (now - bucket.updated) / interval >= burst
            if full and key not in self._pending:
                del self._buckets[key]

    def _refill(self, bucket: _Bucket, burst: int, interval: float) -> None:
        now = self._clock()
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) / interval)
        bucket.updated = now
