"""The pure channel-protocol codec: subprotocols, frames, resize stream, booleans, Status."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubesim import frames
from kubesim.frames import Channel, Close, Data, ProtocolError, Subprotocol, TerminalSize

# Subprotocols -----------------------------------------------------------------------------


def test_offers_are_split_on_commas_across_headers() -> None:
    offered = frames.parse_subprotocols(["v5.channel.k8s.io, v4.channel.k8s.io", " channel.k8s.io"])
    assert offered == ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]


def test_no_header_means_no_subprotocol() -> None:
    assert frames.parse_subprotocols([]) is None
    assert frames.select_subprotocol(None) is Subprotocol.NONE


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["v5.channel.k8s.io"], Subprotocol.V5),
        (["v5.channel.k8s.io", "v4.channel.k8s.io"], Subprotocol.V5),
        (["v4.channel.k8s.io", "v5.channel.k8s.io"], Subprotocol.V4),  # the client's order
        (["v9.channel.k8s.io", "base64.channel.k8s.io"], Subprotocol.V1_BASE64),
        (["channel.k8s.io"], Subprotocol.V1),
        (["v4.base64.channel.k8s.io"], Subprotocol.V4_BASE64),
        (["v9.channel.k8s.io"], None),
        ([], None),
    ],
)
def test_first_supported_offer_wins(offered: list[str], chosen: Subprotocol | None) -> None:
    assert frames.select_subprotocol(offered) is chosen


# Frames -----------------------------------------------------------------------------------


def test_binary_protocols_prefix_the_channel_byte() -> None:
    assert frames.encode(Subprotocol.V5, Channel.STDOUT, b"hello\n") == b"\x01hello\n"
    assert frames.encode(Subprotocol.V4, Channel.ERROR, b"{}") == b"\x03{}"
    assert frames.encode(Subprotocol.V5, Channel.STDOUT, b"") == b"\x01"


def test_base64_protocols_send_text() -> None:
    assert frames.encode(Subprotocol.V1_BASE64, Channel.STDOUT, b"hello\n") == "1aGVsbG8K"
    assert frames.encode(Subprotocol.V4_BASE64, Channel.STDOUT, b"") == "1"
    assert frames.decode(Subprotocol.V1_BASE64, "0bHMNCg==") == Data(0, b"ls\r\n")


def test_close_is_never_sent_downstream() -> None:
    with pytest.raises(ValueError):
        frames.encode(Subprotocol.V5, Channel.CLOSE, b"\x00")


def test_decode_accepts_binary_and_text_alike() -> None:
    assert frames.decode(Subprotocol.V5, b"\x00ls\r") == Data(0, b"ls\r")
    assert frames.decode(Subprotocol.V5, '\x04{"Width":1}') == Data(4, b'{"Width":1}')
    assert frames.decode(Subprotocol.V5, b"") is None


def test_v5_close_signal_is_strict() -> None:
    assert frames.decode(Subprotocol.V5, b"\xff\x00") == Close(0)
    for bad in (b"\xff", b"\xff\x00\x00", b"\xff\x09"):
        with pytest.raises(ProtocolError):
            frames.decode(Subprotocol.V5, bad)


def test_close_is_only_a_v5_signal() -> None:
    # Before v5, 0xFF is just an unknown channel, which the server ignores.
    assert frames.decode(Subprotocol.V4, b"\xff\x00") == Data(255, b"\x00")


def test_bad_base64_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        frames.decode(Subprotocol.V4_BASE64, "0not base64!")


@given(st.binary(max_size=5 * 1024), st.integers(min_value=1, max_value=2048))
def test_chunks_reassemble_and_respect_the_limit(data: bytes, size: int) -> None:
    parts = list(frames.chunks(data, size))
    assert b"".join(parts) == data
    assert all(0 < len(p) <= size for p in parts)


# Resize stream ----------------------------------------------------------------------------

sizes = st.lists(
    st.builds(TerminalSize, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)), max_size=8
)


def _encode(size: TerminalSize, style: int) -> bytes:
    obj = {"Width": size.width, "Height": size.height}
    if style == 0:
        return frames.encode_resize(size.width, size.height)  # Go's json.Encoder, with "\n"
    if style == 1:
        return json.dumps(obj).encode()  # spaces, no newline
    return json.dumps({"height": size.height, "width": size.width}, indent=1).encode() + b"\r\n"


@given(sizes, st.lists(st.integers(0, 2), min_size=8, max_size=8), st.data())
def test_resize_stream_survives_any_split(
    expected: list[TerminalSize], styles: list[int], data: st.DataObject
) -> None:
    stream = b"".join(_encode(s, style) for s, style in zip(expected, styles, strict=False))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    decoder = frames.ResizeDecoder()
    got = [size for piece in pieces for size in decoder.feed(piece)]
    assert got == expected


def test_resize_several_objects_in_one_frame() -> None:
    decoder = frames.ResizeDecoder()
    assert decoder.feed(b'{"Width":100,"Height":30}\n{"Width":120,"Height":40}\n') == [
        TerminalSize(100, 30),
        TerminalSize(120, 40),
    ]


@pytest.mark.parametrize(
    "bad",
    [b"[1, 2]", b'{"Width": -1}', b'{"Width": 70000}', b'{"Width": "80"}', b"{]", b"\xff\xfe"],
)
def test_malformed_resize_is_a_protocol_error(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        frames.ResizeDecoder().feed(bad)


def test_an_endless_resize_object_is_refused() -> None:
    decoder = frames.ResizeDecoder()
    with pytest.raises(ProtocolError, match="too long"):
        decoder.feed(b'{"Width":' + b" " * 5000)


# Booleans ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], False),
        (["false"], False),
        (["FALSE"], False),
        (["0"], False),
        (["true"], True),
        ([""], True),  # an empty value is true
        (["1"], True),
        (["no"], True),
        (["false", "true"], False),  # only the first value counts
    ],
)
def test_kubernetes_booleans(values: list[str], expected: bool) -> None:
    assert frames.parse_bool(values) is expected


@given(st.lists(st.text(max_size=8), min_size=1, max_size=3))
def test_every_value_but_0_and_false_is_true(values: list[str]) -> None:
    assert frames.parse_bool(values) is (values[0] != "0" and values[0].lower() != "false")


# Status -----------------------------------------------------------------------------------


def test_success_status_bytes() -> None:
    assert frames.dumps(frames.success_status()) == b'{"metadata":{},"status":"Success"}'


def test_exit_status_wording_per_protocol() -> None:
    v5 = frames.exit_status(3, ["sh", "-c", "exit 3"], Subprotocol.V5)
    v4 = frames.exit_status(3, ["sh", "-c", "exit 3"], Subprotocol.V4)
    assert v5["message"] == (
        "command terminated with non-zero exit code: command terminated with exit code 3"
    )
    assert v4["message"] == (
        "command terminated with non-zero exit code: error executing command "
        "[sh -c exit 3], exit code 3"
    )
    assert list(v5) == ["metadata", "status", "message", "reason", "details"]
    assert v5["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}


def test_internal_error_status() -> None:
    status = frames.internal_error_status("boom")
    assert frames.dumps(status) == (
        b'{"metadata":{},"status":"Failure","message":"Internal error occurred: boom",'
        b'"reason":"InternalError","details":{"causes":[{"message":"boom"}]},"code":500}'
    )


def test_pre_v4_protocols_carry_text_and_only_on_failure() -> None:
    assert frames.status_payload(frames.success_status(), Subprotocol.V1) is None
    failure = frames.exit_status(2, ["false"], Subprotocol.V1)
    assert frames.status_payload(failure, Subprotocol.V1) == failure["message"].encode()
    assert json.loads(frames.status_payload(failure, Subprotocol.V4) or b"") == failure


def test_api_status_field_order() -> None:
    status = frames.api_status(404, "NotFound", 'pods "x" not found', {"name": "x", "kind": "pods"})
    assert frames.dumps(status) == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"pods \\"x\\" not found","reason":"NotFound",'
        b'"details":{"name":"x","kind":"pods"},"code":404}'
    )
