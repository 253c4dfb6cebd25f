"""The browser protocol codec."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terminals.protocol import (
    Ack,
    CloseCode,
    ProtocolError,
    Resize,
    Stdin,
    decode_client_frame,
    error_message,
    exit_message,
    ready_message,
    with_input,
)

LIMIT = 1024


def decode(text=None, data=None):
    return decode_client_frame(text, data, LIMIT)


def test_binary_frames_are_stdin_bytes_as_they_are():
    assert decode(data=b"\xff\x00ls\r") == Stdin(b"\xff\x00ls\r")


def test_json_stdin_is_encoded_as_utf8():
    assert decode('{"type":"stdin","data":"héllo\\r"}') == Stdin("héllo\r".encode())


def test_resize_and_ack():
    assert decode('{"type":"resize","cols":120,"rows":40}') == Resize(120, 40)
    assert decode('{"type":"ack","bytes":65536}') == Ack(65536)


@pytest.mark.parametrize(
    ("text", "code", "words"),
    [
        ("not json", CloseCode.BAD_REQUEST, "must be JSON objects"),
        ("[1, 2]", CloseCode.BAD_REQUEST, "must be JSON objects"),
        ('{"type":"launch"}', CloseCode.BAD_REQUEST, "Unknown message type 'launch'"),
        ('{"type":"stdin","data":5}', CloseCode.BAD_REQUEST, 'string "data"'),
        ('{"type":"resize","cols":"80","rows":24}', CloseCode.BAD_REQUEST, "whole numbers"),
        ('{"type":"resize","cols":true,"rows":24}', CloseCode.BAD_REQUEST, "whole numbers"),
        ('{"type":"resize","cols":80.5,"rows":24}', CloseCode.BAD_REQUEST, "whole numbers"),
        ('{"type":"resize","cols":0,"rows":24}', CloseCode.BAD_REQUEST, "out of range"),
        ('{"type":"resize","cols":100000,"rows":24}', CloseCode.BAD_REQUEST, "out of range"),
        ('{"type":"ack","bytes":-1}', CloseCode.BAD_REQUEST, 'whole "bytes"'),
    ],
)
def test_bad_text_frames_get_a_clear_error(text, code, words):
    with pytest.raises(ProtocolError) as caught:
        decode(text)
    assert caught.value.code == code
    assert words in caught.value.message


def test_oversized_frames_are_refused_with_4413():
    with pytest.raises(ProtocolError) as caught:
        decode(data=b"x" * (LIMIT + 1))
    assert caught.value.code == CloseCode.FRAME_TOO_LARGE
    assert "1025 bytes exceeds the limit of 1024" in caught.value.message
    with pytest.raises(ProtocolError) as caught:
        decode(json.dumps({"type": "stdin", "data": "é" * 600}))
    assert caught.value.code == CloseCode.FRAME_TOO_LARGE


@given(st.text())
def test_no_text_frame_crashes_the_decoder(text):
    try:
        decode(text)
    except ProtocolError as error:
        assert error.code in (CloseCode.BAD_REQUEST, CloseCode.FRAME_TOO_LARGE)


@given(st.binary(max_size=LIMIT))
def test_every_binary_frame_within_the_limit_is_stdin(data):
    assert decode(data=data) == Stdin(data)


def test_server_messages():
    assert json.loads(ready_message("abc", "main", ["/bin/sh"])) == {
        "type": "ready",
        "session": "abc",
        "container": "main",
        "command": ["/bin/sh"],
    }
    ready = ready_message("abc", "main", ["/bin/sh"], resume="t", resumed=True, input_bytes=7)
    assert json.loads(ready)["input"] == 7
    assert json.loads(with_input(ready, 9)) == {**json.loads(ready), "input": 9}
    assert json.loads(exit_message(3)) == {"type": "exit", "code": 3}
    assert json.loads(error_message(CloseCode.IDLE, "Idle.")) == {
        "type": "error",
        "code": "idle",
        "message": "Idle.",
    }
