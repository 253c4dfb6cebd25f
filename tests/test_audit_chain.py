"""The hash chain: any frame changed, removed, inserted or reordered is caught and named."""

import dataclasses
import uuid

from terminals.audit.chain import ChainFrame, frame_digest, genesis, verify

SESSION = uuid.UUID("12345678-1234-5678-1234-567812345678")


def chain(payloads):
    frames, previous = [], genesis(SESSION)
    for seq, (direction, data) in enumerate(payloads):
        digest = frame_digest(previous, seq, seq * 1000, direction, data)
        frames.append(ChainFrame(seq, seq * 1000, direction, data, digest.hex()))
        previous = digest
    return frames, previous.hex()


FRAMES, HEAD = chain([("r", b"80x24"), ("i", b"ls\r"), ("o", b"a b c\r\n$ "), ("i", b"exit\r")])


def test_an_intact_chain_verifies():
    verdict = verify(SESSION, FRAMES, HEAD)
    assert verdict.ok and verdict.frames == 4
    assert str(verdict) == "intact (4 frames)"


def test_an_edited_frame_is_named():
    frames = list(FRAMES)
    frames[2] = dataclasses.replace(frames[2], data=b"nothing to see\r\n$ ")
    verdict = verify(SESSION, frames, HEAD)
    assert not verdict.ok and verdict.first_bad_seq == 2
    assert "frame 2 does not match its digest" in verdict.problem


def test_a_changed_time_or_direction_is_caught():
    for change in ({"offset_us": 1}, {"direction": "o"}):
        frames = list(FRAMES)
        frames[1] = dataclasses.replace(frames[1], **change)
        assert verify(SESSION, frames, HEAD).first_bad_seq == 1


def test_a_deleted_frame_is_named():
    verdict = verify(SESSION, FRAMES[:1] + FRAMES[2:], HEAD)
    assert verdict.first_bad_seq == 1
    assert "frame 1 is missing" in verdict.problem


def test_swapped_frames_are_caught():
    frames = list(FRAMES)
    # Swap the contents of frames 1 and 2 but keep the sequence numbers in order.
    frames[1], frames[2] = (
        dataclasses.replace(FRAMES[2], seq=1),
        dataclasses.replace(FRAMES[1], seq=2),
    )
    verdict = verify(SESSION, frames, HEAD)
    assert verdict.first_bad_seq == 1


def test_a_cut_off_end_is_caught_by_the_head():
    verdict = verify(SESSION, FRAMES[:3], HEAD)
    assert not verdict.ok and "head digest does not match" in verdict.problem


def test_an_inserted_frame_is_caught():
    extra = ChainFrame(2, 1500, "i", b"rm -rf /\r", FRAMES[2].digest)
    shifted = [dataclasses.replace(f, seq=f.seq + 1) for f in FRAMES[2:]]
    assert verify(SESSION, [*FRAMES[:2], extra, *shifted], HEAD).first_bad_seq == 2


def test_frames_of_another_session_do_not_verify():
    assert verify(uuid.uuid4(), FRAMES, HEAD).first_bad_seq == 0


def test_an_empty_session_verifies_against_its_genesis():
    assert verify(SESSION, [], "").ok
