"""The keyed chain: any frame changed, removed, inserted or reordered is caught and named."""

import dataclasses
import hashlib
import uuid

from terminals.audit.chain import ChainFrame, Kind, frame_digest, genesis, verify
from terminals.audit.keyring import UNKEYED, AuditKey

SESSION = uuid.UUID("12345678-1234-5678-1234-567812345678")
KEY = AuditKey(b"the-audit-key-of-these-tests-0123456789")


def chain(payloads, key=KEY):
    frames, previous = [], genesis(SESSION, key)
    for seq, (direction, data) in enumerate(payloads):
        digest = frame_digest(previous, seq, seq * 1000, direction, data, key)
        frames.append(ChainFrame(seq, seq * 1000, direction, data, digest.hex()))
        previous = digest
    return frames, previous.hex()


FRAMES, HEAD = chain([("r", b"80x24"), ("i", b"ls\r"), ("o", b"a b c\r\n$ "), ("i", b"exit\r")])


def test_an_intact_chain_verifies():
    verdict = verify(SESSION, FRAMES, HEAD, KEY)
    assert verdict.ok and verdict.frames == 4
    assert str(verdict) == "intact (4 frames)"


def test_an_edited_frame_is_named():
    frames = list(FRAMES)
    frames[2] = dataclasses.replace(frames[2], data=b"nothing to see\r\n$ ")
    verdict = verify(SESSION, frames, HEAD, KEY)
    assert not verdict.ok and verdict.first_bad_seq == 2
    assert "frame 2 does not match its digest" in verdict.problem


def test_a_changed_time_or_direction_is_caught():
    for change in ({"offset_us": 1}, {"direction": "o"}):
        frames = list(FRAMES)
        frames[1] = dataclasses.replace(frames[1], **change)
        assert verify(SESSION, frames, HEAD, KEY).first_bad_seq == 1


def test_a_deleted_frame_is_named():
    verdict = verify(SESSION, FRAMES[:1] + FRAMES[2:], HEAD, KEY)
    assert verdict.first_bad_seq == 1
    assert "frame 1 is missing" in verdict.problem


def test_swapped_frames_are_caught():
    frames = list(FRAMES)
    # Swap the contents of frames 1 and 2 but keep the sequence numbers in order.
    frames[1], frames[2] = (
        dataclasses.replace(FRAMES[2], seq=1),
        dataclasses.replace(FRAMES[1], seq=2),
    )
    verdict = verify(SESSION, frames, HEAD, KEY)
    assert verdict.first_bad_seq == 1


def test_a_cut_off_end_is_caught_by_the_head():
    verdict = verify(SESSION, FRAMES[:3], HEAD, KEY)
    assert not verdict.ok and "head digest does not match" in verdict.problem


def test_an_inserted_frame_is_caught():
    extra = ChainFrame(2, 1500, "i", b"rm -rf /\r", FRAMES[2].digest)
    shifted = [dataclasses.replace(f, seq=f.seq + 1) for f in FRAMES[2:]]
    assert verify(SESSION, [*FRAMES[:2], extra, *shifted], HEAD, KEY).first_bad_seq == 2


def test_frames_of_another_session_do_not_verify():
    assert verify(uuid.uuid4(), FRAMES, HEAD, KEY).first_bad_seq == 0


def test_an_empty_session_verifies_against_its_genesis():
    assert verify(SESSION, [], "", KEY).ok


def test_kinds_are_named():
    frames = list(FRAMES)
    frames[2] = dataclasses.replace(frames[2], data=b"nothing")
    assert verify(SESSION, frames, HEAD, KEY).kind == Kind.FRAME_CHANGED
    assert verify(SESSION, FRAMES[:1] + FRAMES[2:], HEAD, KEY).kind == Kind.FRAME_REMOVED
    swapped = [
        FRAMES[0],
        dataclasses.replace(FRAMES[2], seq=1),
        dataclasses.replace(FRAMES[1], seq=2),
        FRAMES[3],
    ]
    verdict = verify(SESSION, swapped, HEAD, KEY)
    assert verdict.kind == Kind.FRAMES_REORDERED and "frames 1 and 2 were swapped" in str(verdict)
    cut = verify(SESSION, FRAMES[:3], HEAD, KEY)
    assert cut.kind == Kind.CUT_SHORT and (cut.frames, cut.end) == (3, 3)


def test_an_inserted_frame_is_named_as_inserted():
    extra = ChainFrame(2, 1500, "i", b"rm -rf /\r", FRAMES[2].digest)
    shifted = [dataclasses.replace(f, seq=f.seq + 1) for f in FRAMES[2:]]
    verdict = verify(SESSION, [*FRAMES[:2], extra, *shifted], HEAD, KEY)
    assert verdict.kind == Kind.FRAME_INSERTED and "it was inserted" in verdict.problem
    assert (verdict.frames, verdict.end) == (5, 5)
    appended = ChainFrame(4, 9000, "i", b"reboot\r", "00" * 32)
    verdict = verify(SESSION, [*FRAMES, appended], HEAD, KEY)
    assert verdict.kind == Kind.FRAME_INSERTED and "added after the head" in verdict.problem


def test_a_chain_verifies_only_under_its_own_key():
    other = AuditKey(b"some-other-audit-key-0123456789-abcdef")
    assert KEY.id != other.id and len(KEY.id) == 16
    verdict = verify(SESSION, FRAMES, HEAD, other)
    assert not verdict.ok and verdict.first_bad_seq == 0


def test_recomputing_the_digests_without_the_key_does_not_verify():
    """What someone with write access to the database could do before keys: rewrite and rehash."""
    forged, forged_head = chain([("r", b"80x24"), ("i", b"true\r")], UNKEYED)
    assert verify(SESSION, forged, forged_head, UNKEYED).ok  # anyone can make unkeyed chains
    assert verify(SESSION, forged, forged_head, KEY).first_bad_seq == 0


def test_unkeyed_chains_are_those_recorded_before_keys():
    """Sessions from before audit keys keep verifying: SHA-256, as the chain was then."""
    previous = hashlib.sha256(b"webshell-session:" + SESSION.bytes).digest()
    assert genesis(SESSION, UNKEYED) == previous
    digest = hashlib.sha256(previous)
    digest.update(bytes.fromhex("00000000000000000000000000000000690000000000000003"))
    digest.update(b"ls\r")
    assert frame_digest(previous, 0, 0, "i", b"ls\r", UNKEYED) == digest.digest()


def test_the_key_defaults_to_the_configured_one():
    from terminals.audit.keyring import current_key

    assert genesis(SESSION) == genesis(SESSION, current_key())
    assert current_key().id != UNKEYED.id


def test_a_keyed_chain_that_goes_on_past_the_head_verifies():
    """A live session's frames committed after its head was read: only the key makes them."""
    assert verify(SESSION, FRAMES, FRAMES[1].digest, KEY).ok
    unkeyed, _ = chain([("r", b"80x24"), ("i", b"ls\r")], UNKEYED)
    assert not verify(SESSION, unkeyed, unkeyed[0].digest, UNKEYED).ok  # anyone could extend it
