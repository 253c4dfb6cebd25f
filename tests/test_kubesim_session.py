"""Exec sessions: older channel protocols, stream selection, odd client frames, transcript."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import aiohttp
import pytest

from kubesim.frames import Subprotocol
from kubesim.rbac import Identity
from kubesim.session import ExecRequest, Transcript, _containerd_error, _first_channel
from tests.fixtures.kubesim import Kubesim, exec_path, open_exec, read_exec


@pytest.fixture
def http(kubesim_http: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """The plugin's aiohttp session, under a short name."""
    return kubesim_http


# Older protocols --------------------------------------------------------------------------


@pytest.mark.parametrize("protocols", [("channel.k8s.io",), ()], ids=["v1", "no-subprotocol"])
async def test_v1_sends_no_status_on_success_and_text_on_failure(
    http: aiohttp.ClientSession, kubesim: Kubesim, protocols: tuple[str, ...]
) -> None:
    ws = await open_exec(http, kubesim, exec_path("web", ["echo", "ok"], stdout=True), protocols)
    assert ws.protocol == (protocols[0] if protocols else None)
    out = await read_exec(ws)
    assert out.stdout == b"ok\n"
    assert out.channel(3) == b""  # success is silence before v4
    assert out.close_code == 1000

    ws = await open_exec(
        http, kubesim, exec_path("web", ["sh", "-c", "exit 2"], stdout=True), protocols
    )
    out = await read_exec(ws)
    assert out.channel(3) == (
        b"command terminated with non-zero exit code: error executing command "
        b"[sh -c exit 2], exit code 2"
    )


async def test_base64_protocol_uses_text_frames_both_ways(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    path = exec_path("web", ["sh", "-c", "cat; exit 1"], stdin=True, stdout=True)
    ws = await open_exec(http, kubesim, path, ("v4.base64.channel.k8s.io",))
    await ws.send_str("0" + base64.b64encode(b"h\xc3\xa9\n").decode())
    texts = []
    async for msg in ws:
        assert msg.type is aiohttp.WSMsgType.TEXT
        texts.append(msg.data)
        if msg.data.startswith("1") and len(msg.data) > 1:
            await ws.close()  # v4 has no half-close: the client can only hang up
            break
    assert texts[0] == "1"  # the empty "connection established" frame
    assert base64.b64decode(texts[1][1:]) == b"h\xc3\xa9\n"

    ws = await open_exec(
        http,
        kubesim,
        exec_path("web", ["sh", "-c", "exit 1"], stdout=True),
        ("base64.channel.k8s.io",),
    )
    out = await read_exec(ws)
    assert out.text_messages[0] == "1"
    assert out.text_messages[-1][0] == "3"
    assert base64.b64decode(out.text_messages[-1][1:]).endswith(b"exit code 1")


# Streams ----------------------------------------------------------------------------------


async def test_stderr_only_starts_on_channel_2_and_drops_stdout(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    command = ["sh", "-c", "echo out; echo err >&2"]
    out = await read_exec(await open_exec(http, kubesim, exec_path("web", command, stderr=True)))
    assert out.messages[0] == (2, b"")
    assert (out.stdout, out.stderr) == (b"", b"err\n")


async def test_tty_merges_stderr_into_stdout(http: aiohttp.ClientSession, kubesim: Kubesim) -> None:
    path = exec_path("web", ["sh", "-c", "echo err >&2"], stdout=True, stderr=True, tty=True)
    ws = await open_exec(http, kubesim, path)
    await ws.send_bytes(b'\x04{"Width":80,"Height":24}')
    out = await read_exec(ws)
    assert (out.stdout, out.stderr) == (b"err\r\n", b"")


async def test_stdin_that_was_not_requested_is_ignored(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    ws = await open_exec(http, kubesim, exec_path("web", ["cat"], stdout=True))
    await ws.send_bytes(b"\x00never read\n")
    out = await read_exec(ws)  # cat reads /dev/null and ends
    assert out.stdout == b""
    assert out.status()["status"] == "Success"


async def test_unknown_channels_and_bad_frames_are_ignored(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    ws = await open_exec(http, kubesim, exec_path("web", ["cat"], stdin=True, stdout=True))
    for junk in (b"\x07junk", b"\x02not stderr", b"\x03not status", b"\xff", b"\xff\x00\x01"):
        await ws.send_bytes(junk)
    await ws.send_bytes(b"\x00still works\n")
    await ws.send_bytes(b"\xff\x00")
    out = await read_exec(ws)
    assert out.stdout == b"still works\n"
    assert out.status()["status"] == "Success"


async def test_tty_ignores_close_and_a_malformed_resize_stream(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    ws = await open_exec(http, kubesim, exec_path("web", ["sh"], stdin=True, stdout=True, tty=True))
    await ws.send_bytes(b'\x04{"Width":80,"Height":24}\n')
    await ws.send_bytes(b"\xff\x00")  # a TTY ends with ^D or exit, not CLOSE
    await ws.send_bytes(b"\x04[not a size]")  # from here on resizes are ignored
    await ws.send_bytes(b'\x04{"Width":100,"Height":50}\n')
    await ws.send_bytes(b"\x00stty size; exit 3\r")
    out = await read_exec(ws)
    assert out.stdout.rstrip().endswith(b"24 80")  # the typed line echoes before the prompt
    assert out.status()["details"]["causes"][0]["message"] == "3"


async def test_exec_failure_has_one_exit_event(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    command = ["no-such-tool", "--session-test"]
    out = await read_exec(await open_exec(http, kubesim, exec_path("web", command, stdout=True)))
    assert out.status()["reason"] == "InternalError"
    start = await kubesim.event(lambda e: e["event"] == "start" and e["command"] == command)
    events = [e for e in kubesim.transcript_events() if e["exec"] == start["exec"]]
    assert [e["event"] for e in events] == ["start", "exit"]
    assert events[1]["code"] is None
    assert 'exec: "no-such-tool": executable file not found in $PATH' in events[1]["error"]


# Pure helpers -----------------------------------------------------------------------------


def request(**changes: object) -> ExecRequest:
    """An ExecRequest with defaults."""
    fields: dict[str, object] = dict(
        exec_id="e1",
        identity=Identity("alice", ("system:authenticated",), "webshell"),
        namespace="dev",
        pod="api",
        container="main",
        command=("sh",),
        stdin=True,
        stdout=True,
        stderr=False,
        tty=True,
        protocol=Subprotocol.V5,
    )
    fields.update(changes)
    return ExecRequest(**fields)  # type: ignore[arg-type]


def test_transcript_writes_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    transcript = Transcript(path)
    transcript.record(request().start_event())
    transcript.record({"event": "exit", "exec": "e1", "code": 0})
    transcript.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {
        "event": "start",
        "exec": "e1",
        "user": "alice",
        "groups": ["system:authenticated"],
        "impersonated_by": "webshell",
        "namespace": "dev",
        "pod": "api",
        "container": "main",
        "command": ["sh"],
        "tty": True,
        "protocol": "v5.channel.k8s.io",
    }
    assert lines[1]["code"] == 0
    Transcript(None).record({"event": "ignored"})  # no file, no error


@pytest.mark.parametrize(
    ("streams", "channel"),
    [({}, 1), ({"stdout": False, "stderr": True}, 2), ({"stdout": False, "stderr": False}, 3)],
)
def test_first_frame_goes_to_the_lowest_writable_channel(streams: dict, channel: int) -> None:
    assert _first_channel(request(**streams)) == channel


def test_containerd_wording() -> None:
    assert _containerd_error("abc", 'exec: "x": executable file not found in $PATH') == (
        "error executing command in container: failed to exec in container: failed to start "
        'exec "abc": OCI runtime exec failed: exec failed: unable to start container process: '
        'exec: "x": executable file not found in $PATH: unknown'
    )
