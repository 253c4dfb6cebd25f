"""The keyed chain over a session's frames. Pure functions, no I/O.

Each frame's digest is HMAC-SHA256, under the audit key (``keyring.py``), over the previous
digest, the sequence number, the time offset, the direction and the bytes. The chain starts
from a digest of the session id, so frames cannot be moved between sessions, and the session
keeps the last digest (the head), sealed when the session ends (``seal.py``), so frames cannot
be cut off the end unnoticed. Any frame changed, removed, inserted or reordered breaks the chain,
and without the key nobody can compute a chain that verifies. Sessions recorded before audit
keys have plain SHA-256 chains (:data:`~.keyring.UNKEYED`), verified the same way.

``key`` defaults to the current ``AUDIT_KEY`` (:func:`~.keyring.current_key`); the recorder and
the verifier pass the session's own.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .keyring import AuditKey, current_key

_HEADER = struct.Struct(">QqcQ")  # seq, offset in µs, direction, length of the data


class Kind(enum.StrEnum):
    """What kind of tampering a verification found; ``audit verify`` prints it in brackets."""

    FRAME_CHANGED = "frame changed"
    FRAME_REMOVED = "frame removed"
    FRAME_INSERTED = "frame inserted"
    FRAMES_REORDERED = "frames reordered"
    CUT_SHORT = "session cut short"
    METADATA_CHANGED = "metadata changed"
    COMMANDS_CHANGED = "commands changed"
    SEAL_MISSING = "seal missing"
    NOT_IN_LEDGER = "session inserted"
    SESSION_REMOVED = "session removed"
    LEDGER_CHANGED = "ledger changed"
    PRUNE_CHANGED = "prune record changed"
    WRONG_KEY = "wrong key"


def genesis(session_id: uuid.UUID | str, key: AuditKey | None = None) -> bytes:
    """The digest the chain of ``session_id`` starts from."""
    key = key or current_key()
    return key.mac(b"webshell-session:", uuid.UUID(str(session_id)).bytes)


def frame_digest(
    previous: bytes,
    seq: int,
    offset_us: int,
    direction: str,
    data: bytes,
    key: AuditKey | None = None,
) -> bytes:
    """The digest of one frame, chained to ``previous``."""
    hasher = (key or current_key()).hasher()
    hasher.update(previous)
    hasher.update(_HEADER.pack(seq, offset_us, direction.encode("ascii"), len(data)))
    hasher.update(data)
    return hasher.digest()


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
    """The result of checking a session's chain.

    ``frames`` is how many are stored, ``end`` the length they claim (the highest sequence
    number plus one), which tells frames cut off the end from frames missing inside.
    """

    ok: bool
    frames: int
    first_bad_seq: int | None = None
    problem: str = ""
    kind: Kind | None = None
    end: int = 0

    def __str__(self) -> str:
        if self.ok:
            return f"intact ({self.frames} frames)"
        return self.problem


def verify(
    session_id: uuid.UUID | str,
    frames: Iterable[ChainFrame],
    head: str,
    key: AuditKey | None = None,
) -> Verdict:
    """Check stored frames (in seq order) against the chain and the session's head digest.

    The first break is named, with its kind: a frame changed in place, a gap in the numbers
    (removed), a frame that belongs elsewhere in the chain (reordered), one that belongs nowhere
    (inserted), or a chain that stops before the head (cut short). The rest is counted.

    A keyed chain that goes on past the head verifies: only the key's holder can extend it, and
    a live session's frames committed after its head was read are just that.
    """
    key = key or current_key()
    start = genesis(session_id, key)
    head = head or start.hex()  # a session without frames keeps no head
    previous = start
    reached_head = previous.hex() == head
    expected_seq = 0
    stream = _pairs(iter(frames))
    for frame, following in stream:
        if frame.seq != expected_seq:
            if frame.seq > expected_seq:
                problem = f"frame {expected_seq} is missing (the next stored frame is {frame.seq})"
                kind = Kind.FRAME_REMOVED
            else:  # the store's unique (session, seq) makes this unlikely; a fake store may not
                problem = f"frame {frame.seq} appears again after frame {expected_seq - 1}"
                kind = Kind.FRAME_INSERTED
            return _broken(expected_seq, problem, kind, expected_seq, frame, stream)
        computed = frame_digest(
            previous, frame.seq, frame.offset_us, frame.direction, frame.data, key
        )
        if computed.hex() != frame.digest:
            problem, kind = _diagnose(previous, frame, following, head, key)
            return _broken(frame.seq, problem, kind, expected_seq, frame, stream)
        previous = computed
        reached_head = reached_head or computed.hex() == head
        expected_seq += 1
    if previous.hex() != head and not (reached_head and key.keyed):
        return Verdict(
            False,
            expected_seq,
            expected_seq,
            f"the session's head digest does not match after frame {expected_seq - 1}: "
            "frames are missing from the end, or the head was changed",
            Kind.CUT_SHORT,
            expected_seq,
        )
    return Verdict(True, expected_seq, end=expected_seq)


def _diagnose(
    previous: bytes, frame: ChainFrame, following: ChainFrame | None, head: str, key: AuditKey
) -> tuple[str, Kind]:
    """Why ``frame`` does not chain from ``previous`` (every frame before it does).

    Stored digests cannot be forged without the key, so where the chain goes on tells: from
    this frame's own stored digest (its content was changed), from ``previous`` through the
    next frame (this one was inserted, or swapped with the next), or not at all.
    """
    seq = frame.seq
    prefix = f"frame {seq} does not match its digest"
    if previous.hex() == head:
        return f"{prefix}: frames from {seq} on were added after the head", Kind.FRAME_INSERTED
    stored = bytes.fromhex(frame.digest) if _is_hex(frame.digest) else b""
    if following is None:
        if frame.digest == head:
            return f"{prefix}: its content was changed", Kind.FRAME_CHANGED
    elif _chains(stored, following, following.seq, key):
        return f"{prefix}: its content was changed", Kind.FRAME_CHANGED
    if following is not None and _chains(previous, following, seq, key):
        if _chains(bytes.fromhex(following.digest), frame, seq + 1, key):
            return (
                f"{prefix}: frames {seq} and {seq + 1} were swapped",
                Kind.FRAMES_REORDERED,
            )
        return (
            f"{prefix}: it was inserted (the frames after it are renumbered)",
            Kind.FRAME_INSERTED,
        )
    return (
        f"{prefix}: changed, moved from elsewhere, or the frames after a removed one renumbered",
        Kind.FRAME_CHANGED,
    )


def _chains(previous: bytes, frame: ChainFrame, seq: int, key: AuditKey) -> bool:
    """Whether ``frame``'s stored digest is its content's at ``seq`` after ``previous``."""
    digest = frame_digest(previous, seq, frame.offset_us, frame.direction, frame.data, key)
    return digest.hex() == frame.digest


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _broken(
    seq: int,
    problem: str,
    kind: Kind,
    verified: int,
    frame: ChainFrame,
    rest: Iterator[tuple[ChainFrame, ChainFrame | None]],
) -> Verdict:
    """The verdict at the first break; the frames after it are only counted."""
    frames, end = verified + 1, frame.seq + 1
    for later, _ in rest:
        frames, end = frames + 1, max(end, later.seq + 1)
    return Verdict(False, frames, seq, problem, kind, end)


def _pairs(frames: Iterator[ChainFrame]) -> Iterator[tuple[ChainFrame, ChainFrame | None]]:
    """Each frame with the one after it (one frame of lookahead)."""
    current = next(frames, None)
    while current is not None:
        following = next(frames, None)
        yield current, following
        current = following
