"""Handing memory freed by ended sessions back to the system.

Two things kept what a session had used after it ended (the hostile-client benchmark: 31 MiB
still kept, of 34 grown, a heartbeat round after the clients had gone):

- **Reference cycles.** A session's parts refer to each other (its consumer and itself,
  callbacks bound to it, its tasks and their exceptions), so what an ended session held waits
  for Python's cyclic collector, and a process that is idle after a burst may not run a full
  collection for a long time. The output pump lets its read-ahead go (up to 4 MiB) as it stops
  and an ended session lets go of its socket and exec, so the bulk is freed at once;
  :func:`collect` frees the rest. A full collection holds the event loop for as long as it
  takes, which grows with the objects alive: run blindly after every burst of ends it cost
  the bench's typists a p99 of 85 ms. So the objects of the process's start (Django, the
  modules: most of what there is) are frozen out of collections as Daphne starts
  (:func:`freeze_startup`), and the registry collects only while the process serves few
  sessions (a quiet process: a few milliseconds); a busy process leaves it to Python's own
  collector, which its allocations run often.
- **glibc's heap.** Python frees, but ``malloc`` keeps the pages of freed heap memory for later
  allocations (they stay in the process's RSS). ``malloc_trim(0)`` (:func:`give_back`) returns
  the free pages of every arena to the system.

The server registry runs both once per heartbeat round after sessions have ended
(``terminals.servers``): the collection on the event loop, the trim on its own thread (a few
milliseconds for a large heap, without the GIL). Elsewhere than glibc (musl, macOS) there is
nothing to trim, and nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable
from functools import cache

logger = logging.getLogger(__name__)

SLOW_COLLECTION = 0.02  # seconds a collection may hold the loop before it is logged


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def freeze_startup() -> None:
    """Keep what exists now (the process's start) out of later collections (``gc.freeze``)."""
    gc.collect()
    gc.freeze()


def collect() -> int:
    """Free the reference cycles that ended sessions left; returns the objects found.

    Run it on the event loop's thread: finalizers of what it frees may touch loop objects.
    """
    began = time.perf_counter()
    found = gc.collect()
    took = time.perf_counter() - began
    log = logger.info if took > SLOW_COLLECTION else logger.debug
    log("Collected %d unreachable objects in %.1f ms", found, 1000 * took)
    return found


def give_back() -> bool:
    """Return free heap pages to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
