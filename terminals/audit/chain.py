"""The hash chain over a session's frames. Pure functions, no I/O.

Each frame's digest is SHA-256 over the previous digest, the sequence number, the time offset,
the direction and the bytes. The chain starts from a digest of the session id, so frames cannot
be moved between sessions, and the session keeps the last digest (the head), so frames cannot be
cut off the end unnoticed. Any frame changed, removed, inserted or reordered breaks the chain.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

_HEADER = struct.Struct(">QqcQ")  # seq, offset in µs, direction, length of the data


def genesis(session_id: uuid.UUID | str) -> bytes:
    """The digest the chain of ``session_id`` starts from."""
    return hashlib.sha256(b"webshell-session:" + uuid.UUID(str(session_id)).bytes).digest()


def frame_digest(previous: bytes, seq: int, offset_us: int, direction: str, data: bytes) -> bytes:
    """The digest of one frame, chained to ``previous``."""
    digest = hashlib.sha256(previous)
    digest.update(_HEADER.pack(seq, offset_us, direction.encode("ascii"), len(data)))
    digest.update(data)
    return digest.digest()


@dataclass(frozen=True)
class ChainFrame:
    """What verification needs of a stored frame."""

    seq: int
    offset_us: int
    direction: str
    data: bytes
    digest: str  # hex


@dataclass(frozen=True)
class Verdict:
    """The result of checking a session's chain."""

    ok: bool
    frames: int
    first_bad_seq: int | None = None
    problem: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"intact ({self.frames} frames)"
        return self.problem


def verify(session_id: uuid.UUID | str, frames: Iterable[ChainFrame], head: str) -> Verdict:
    """Check stored frames (in seq order) against the chain and the session's head digest."""
    previous = genesis(session_id)
    expected_seq = 0
    count = 0
    for frame in frames:
        count += 1
        if frame.seq != expected_seq:
            if frame.seq > expected_seq:
                problem = f"frame {expected_seq} is missing (the next stored frame is {frame.seq})"
            else:
                problem = f"frame {frame.seq} appears again after frame {expected_seq - 1}"
            return Verdict(False, count, expected_seq, problem)
        computed = frame_digest(previous, frame.seq, frame.offset_us, frame.direction, frame.data)
        if computed.hex() != frame.digest:
            return Verdict(
                False,
                count,
                frame.seq,
                f"frame {frame.seq} does not match its digest: changed, or moved from elsewhere",
            )
        previous = computed
        expected_seq += 1
    if previous.hex() != (head or genesis(session_id).hex()):
        return Verdict(
            False,
            count,
            expected_seq,
            f"the session's head digest does not match after frame {expected_seq - 1}: "
            "frames are missing from the end, or the head was changed",
        )
    return Verdict(True, count)
