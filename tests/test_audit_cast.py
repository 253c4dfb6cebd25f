"""asciicast v2: events are valid UTF-8, never splitting a character; resizes and markers."""

import json

from terminals.audit.cast import CastFrame, events, header, parse_size


def test_a_character_split_across_frames_is_whole_in_one_event():
    lines = [json.loads(line) for line in events(
        [CastFrame(0, "o", b"A\xc3"), CastFrame(10, "o", b"\xa9B"), CastFrame(20, "i", b"\xe4\xb8"),
         CastFrame(30, "i", b"\xad\r")]
    )]  # fmt: skip
    assert lines == [[0.0, "o", "A"], [1e-05, "o", "éB"], [3e-05, "i", "中\r"]]


def test_resizes_and_markers():
    lines = [json.loads(line) for line in events(
        [CastFrame(1_500_000, "r", b"120x40"), CastFrame(2_000_000, "m", b"ls -la")]
    )]  # fmt: skip
    assert lines == [[1.5, "r", "120x40"], [2.0, "m", "ls -la"]]
    assert parse_size(b"120x40") == (120, 40)
    assert parse_size(b"junk") is None


def test_the_header():
    assert header((100, 30), 1732579200, "t", "/bin/sh", 12.5, 2.0) == {
        "version": 2, "width": 100, "height": 30, "timestamp": 1732579200, "title": "t",
        "command": "/bin/sh", "env": {"TERM": "xterm-256color"}, "duration": 12.5,
        "idle_time_limit": 2.0,
    }  # fmt: skip
