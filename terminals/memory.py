"""Handing memory freed by ended sessions back to the system.

A session that streamed or was attacked leaves freed buffers behind. Python frees them, but
glibc's ``malloc`` keeps the pages of freed heap memory for later allocations (they stay in
the process's RSS), so a Daphne that served a burst kept its peak size for good: the hostile-
client benchmark measured 46 MiB kept after the clients had gone. ``malloc_trim(0)`` returns
the free pages of every arena to the system. The server registry calls :func:`give_back` once
per heartbeat round after sessions have ended (``terminals.servers``), on its own thread: the
call takes a few milliseconds for a large heap and releases the GIL.

Elsewhere than glibc (musl, macOS) there is nothing to call, and nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from functools import cache

logger = logging.getLogger(__name__)


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


def give_back() -> bool:
    """Return free heap pages to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
