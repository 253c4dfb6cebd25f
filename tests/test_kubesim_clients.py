"""kubesim against the official Python client and a plain aiohttp WebSocket client."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from kubernetes import client, config
from kubernetes.stream import stream

from tests.fixtures.kubesim import Kubesim, exec_path, open_exec, read_exec

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
T = TypeVar("T")


# The official client (blocking: it runs in a worker thread with a deadline) ----------------


def in_thread(fn: Callable[[], T], timeout: float = 30.0) -> T:
    """Run blocking client code with a deadline, so a hang fails the test instead of the run."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=timeout)


def core_api(kubesim: Kubesim, context: str = "kubesim") -> client.CoreV1Api:
    """A CoreV1Api with its own ApiClient (stream() patches the ApiClient it uses)."""
    return client.CoreV1Api(
        config.new_client_from_config(config_file=str(kubesim.kubeconfig), context=context)
    )


def test_python_client_one_shot_command(kubesim: Kubesim) -> None:
    api = core_api(kubesim)

    def run() -> Any:
        return stream(
            api.connect_get_namespaced_pod_exec,
            "web",
            "default",
            command=["sh", "-c", "printf 'A\\303'; sleep 0.2; printf '\\251B\\n'; echo $GREETING"],
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
            binary=True,
        )

    assert in_thread(run) == "AéB\nhello\n".encode()


def test_python_client_lists_pods_with_verified_tls(kubesim: Kubesim) -> None:
    pods = in_thread(lambda: core_api(kubesim).list_namespaced_pod("default"))
    assert {p.metadata.name: p.status.phase for p in pods.items} == {
        "web": "Running",
        "alpine": "Running",
        "multi": "Running",
        "done": "Succeeded",
    }


def test_python_client_interactive_with_resize(kubesim: Kubesim) -> None:
    api = core_api(kubesim)

    def run() -> tuple[bytes, dict[str, Any], int | None]:
        ws = stream(
            api.connect_get_namespaced_pod_exec,
            "web",
            "default",
            command=["sh"],
            stdin=True,
            stdout=True,
            stderr=False,
            tty=True,
            _preload_content=False,
            binary=True,
        )
        # write_channel with a str sends a TEXT frame: the server must accept it.
        ws.write_channel(4, json.dumps({"Width": 90, "Height": 33}))
        ws.write_stdin(b"stty size\n")
        output = b""
        deadline = time.monotonic() + 10
        while b"33 90" not in output and time.monotonic() < deadline:
            ws.update(timeout=1)
            output += ws.read_stdout() or b""
        ws.write_stdin("exit 4\n")  # str: TEXT frame again
        while ws.is_open() and time.monotonic() < deadline:
            ws.update(timeout=1)
        # peek: read_channel(3) would empty the channel that returncode parses.
        status = json.loads(ws.peek_channel(3))
        return output, status, ws.returncode

    output, status, returncode = in_thread(run)
    assert re.search(rb"\b33 90\r\n", output)  # typed-ahead input may echo before the prompt
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "4"}]
    assert returncode == 4


def test_python_client_sees_handshake_errors_as_api_exceptions(kubesim: Kubesim) -> None:
    api = core_api(kubesim)

    def run() -> None:
        stream(
            api.connect_get_namespaced_pod_exec,
            "nope",
            "default",
            command=["true"],
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
        )

    with pytest.raises(client.ApiException, match="Handshake status 404"):
        in_thread(run)


# A plain aiohttp client ---------------------------------------------------------------------


@pytest.fixture
def http(kubesim_http: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """The aiohttp session of the plugin, under a short name."""
    return kubesim_http


async def test_initial_empty_frame_then_one_success_status_then_close_1000(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    ws = await open_exec(http, kubesim, exec_path("web", ["echo", "hi"], stdout=True, stderr=True))
    assert ws.protocol == V5
    out = await read_exec(ws)
    assert out.messages[0] == (1, b"")  # "connection established" on the lowest channel
    assert out.stdout == b"hi\n"
    assert out.status() == {"metadata": {}, "status": "Success"}
    assert out.messages[-1][0] == 3  # nothing after the status
    assert out.close_code == 1000
    assert out.text_messages == []


async def test_non_zero_exit_status_is_exactly_the_api_servers(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    ws = await open_exec(http, kubesim, exec_path("web", ["sh", "-c", "exit 3"], stdout=True))
    out = await read_exec(ws)
    raw = [data for ch, data in out.messages if ch == 3]
    assert raw == [
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit '
        b'code: command terminated with exit code 3","reason":"NonZeroExitCode","details":'
        b'{"causes":[{"reason":"ExitCode","message":"3"}]}}'
    ]
    assert out.close_code == 1000


async def test_stdin_binary_and_text_frames_then_v5_close(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    # A command of its own: the transcript is shared with every test of the session (kubectl's
    # tests run the same "cat; echo done"), and the start event is found by its command.
    marker = uuid.uuid4().hex
    command = ["sh", "-c", f"cat; echo done {marker}"]
    ws = await open_exec(http, kubesim, exec_path("web", command, stdin=True, stdout=True))
    await ws.send_bytes(b"\x00abc\n")
    await ws.send_str("\x00xyz\n")
    await ws.send_bytes(b"\xff\x00")  # CLOSE stdin: cat sees EOF
    out = await read_exec(ws)
    assert out.stdout == b"abc\nxyz\ndone " + marker.encode() + b"\n"
    assert out.status()["status"] == "Success"

    start = await kubesim.event(lambda e: e["event"] == "start" and e["command"] == command)
    events = [e for e in kubesim.transcript_events() if e.get("exec") == start["exec"]]
    assert [e["event"] for e in events] == ["start", "stdin", "stdin", "exit"]
    assert [base64.b64decode(e["data"]) for e in events[1:3]] == [b"abc\n", b"xyz\n"]
    assert events[-1]["code"] == 0
    assert start["user"] == "admin" and start["impersonated_by"] is None
    assert start["tty"] is False and start["container"] == "main"


async def test_resize_is_a_json_stream_split_across_frames(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    command = ["sh", "-c", "read line; stty size"]
    ws = await open_exec(
        http, kubesim, exec_path("web", command, stdin=True, stdout=True, tty=True)
    )
    # One frame with a whole object and the start of the next, then the rest.
    await ws.send_bytes(b'\x04{"Width":10,"Height":5}\n{"Width":1')
    await ws.send_bytes(b'\x0423,"Height":45}\n')
    await ws.send_bytes(b"\x00\r")
    out = await read_exec(ws)
    assert out.stdout.endswith(b"45 123\r\n")
    assert out.stderr == b""  # tty: everything is on stdout

    start = await kubesim.event(lambda e: e["event"] == "start" and e["command"] == command)
    resizes = [
        (e["cols"], e["rows"])
        for e in kubesim.transcript_events()
        if e["event"] == "resize" and e["exec"] == start["exec"]
    ]
    assert resizes == [(10, 5), (123, 45)]
    assert start["tty"] is True


async def test_large_binary_output_arrives_intact(
    http: aiohttp.ClientSession, kubesim: Kubesim, tmp_path: Path
) -> None:
    blob = os.urandom(1024 * 1024 + 12345)
    (tmp_path / "blob").write_bytes(blob)
    ws = await open_exec(
        http, kubesim, exec_path("web", ["cat", str(tmp_path / "blob")], stdout=True)
    )
    out = await read_exec(ws)
    assert hashlib.sha256(out.stdout).hexdigest() == hashlib.sha256(blob).hexdigest()
    assert max(len(data) for _, data in out.messages) <= 32 * 1024
    assert out.status()["status"] == "Success"


async def test_large_stdin_arrives_intact(http: aiohttp.ClientSession, kubesim: Kubesim) -> None:
    blob = os.urandom(6 * 1024 * 1024)  # more than kubesim queues for a process not reading
    command = ["sh", "-c", "sleep 0.3; exec sha256sum"]
    ws = await open_exec(http, kubesim, exec_path("web", command, stdin=True, stdout=True))
    for start in range(0, len(blob), 64 * 1024):
        await ws.send_bytes(b"\x00" + blob[start : start + 64 * 1024])
    await ws.send_bytes(b"\xff\x00")
    out = await read_exec(ws)
    assert out.stdout.split()[0].decode() == hashlib.sha256(blob).hexdigest()


async def test_utf8_split_across_frames_stays_bytes(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    command = ["sh", "-c", r"printf 'A\303'; sleep 0.2; printf '\251B'"]
    ws = await open_exec(http, kubesim, exec_path("web", command, stdout=True))
    out = await read_exec(ws)
    assert out.stdout == b"A\xc3\xa9B"
    assert [data for ch, data in out.messages if ch == 1 and data] == [b"A\xc3", b"\xa9B"]


async def test_pings_are_answered(http: aiohttp.ClientSession, kubesim: Kubesim) -> None:
    path = exec_path("web", ["cat"], stdin=True, stdout=True)
    ws = await open_exec(http, kubesim, path, autoping=False)
    await ws.ping(b"are you there")
    msg = await ws.receive(timeout=5)
    while msg.type is aiohttp.WSMsgType.BINARY:  # the initial empty frame may come first
        msg = await ws.receive(timeout=5)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.PONG, b"are you there")
    await ws.send_bytes(b"\xff\x00")
    out = await read_exec(ws)
    assert out.status()["status"] == "Success"


async def test_v4_is_negotiated_when_offered_first(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    path = exec_path("web", ["sh", "-c", "exit 2"], stdout=True)
    ws = await open_exec(http, kubesim, path, protocols=(V4, V5))
    assert ws.protocol == V4
    status = (await read_exec(ws)).status()
    assert status["message"] == (
        "command terminated with non-zero exit code: error executing command "
        "[sh -c exit 2], exit code 2"
    )
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]


async def test_comma_separated_offer_picks_the_first_supported(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    # aiohttp sends the offer as one comma-separated header, as the Python client does.
    path = exec_path("web", ["true"], stdout=True)
    ws = await open_exec(http, kubesim, path, protocols=("v9.channel.k8s.io", V5, V4))
    assert ws.protocol == V5
    assert (await read_exec(ws)).status()["status"] == "Success"


def upgrade_headers(
    kubesim: Kubesim, user: str | None = "admin", protocol: str = V5
) -> dict[str, str]:
    """Headers of a WebSocket handshake sent as a plain request, to see error bodies."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": protocol,
    }
    if user is not None:
        headers["Authorization"] = f"Bearer {kubesim.tokens[user]}"
    return headers


async def test_unsupported_subprotocol_is_refused_with_an_empty_403(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    path = exec_path("web", ["true"], stdout=True)
    async with http.get(path, headers=upgrade_headers(kubesim, protocol="v9.channel.k8s.io")) as r:
        assert (r.status, await r.read()) == (403, b"")
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await open_exec(http, kubesim, path, protocols=("base64.binary.k8s.io",))
    assert info.value.status == 403


@pytest.mark.parametrize(
    ("user", "path", "code", "body"),
    [
        (
            None,
            exec_path("web", ["true"], stdout=True),
            401,
            {"message": "Unauthorized", "reason": "Unauthorized"},
        ),
        (
            "admin",
            exec_path("nope", ["true"], stdout=True),
            404,
            {
                "message": 'pods "nope" not found',
                "reason": "NotFound",
                "details": {"name": "nope", "kind": "pods"},
            },
        ),
        (
            "admin",
            exec_path("multi", ["true"], stdout=True),
            400,
            {
                "message": "a container name must be specified for pod multi, choose one of: "
                "[app sidecar]",
                "reason": "BadRequest",
            },
        ),
        (
            "admin",
            exec_path("web", ["true"], container="nope", stdout=True),
            400,
            {"message": "container nope is not valid for pod web", "reason": "BadRequest"},
        ),
        (
            "admin",
            exec_path("done", ["true"], stdout=True),
            400,
            {
                "message": "cannot exec into a container in a completed pod; current phase is "
                "Succeeded",
                "reason": "BadRequest",
            },
        ),
        (
            "admin",
            exec_path("web", ["true"]),
            400,
            {
                "message": "you must specify at least 1 of stdin, stdout, stderr",
                "reason": "BadRequest",
            },
        ),
        (
            "alice",
            exec_path("web", ["true"], stdout=True),
            403,
            {
                "message": 'pods "web" is forbidden: User "alice" cannot create resource '
                '"pods/exec" in API group "" in the namespace "default"',
                "reason": "Forbidden",
                "details": {"name": "web", "kind": "pods"},
            },
        ),
    ],
    ids=[
        "401",
        "404-pod",
        "400-choose-container",
        "400-bad-container",
        "400-completed",
        "400-no-streams",
        "403-rbac",
    ],
)
async def test_refusals_before_the_upgrade_are_status_json(
    http: aiohttp.ClientSession,
    kubesim: Kubesim,
    user: str | None,
    path: str,
    code: int,
    body: dict[str, Any],
) -> None:
    async with http.get(path, headers=upgrade_headers(kubesim, user)) as response:
        assert response.status == code
        assert response.content_type == "application/json"
        assert await response.json() == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            **body,
            "code": code,
        }
    # A WebSocket client sees the same status code as a failed handshake.
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(path, protocols=(V5,), headers=upgrade_headers(kubesim, user))
    assert info.value.status == code


async def test_missing_executable_is_an_internal_error_after_the_upgrade(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    ws = await open_exec(http, kubesim, exec_path("alpine", ["bash"], stdout=True))
    out = await read_exec(ws)
    status = out.status()
    assert status["reason"] == "InternalError" and status["code"] == 500
    assert status["message"].startswith(
        "Internal error occurred: error executing command in container: failed to exec in "
        'container: failed to start exec "'
    )
    assert status["message"].endswith(
        "OCI runtime exec failed: exec failed: unable to start container process: exec: "
        '"bash": executable file not found in $PATH: unknown'
    )
    assert out.close_code == 1000


async def test_client_disconnect_hangs_up_the_process(
    http: aiohttp.ClientSession, kubesim: Kubesim, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    script = f'trap "echo hup > {marker}; exit 0" HUP; echo ready; while :; do sleep 0.05; done'
    ws = await open_exec(
        http, kubesim, exec_path("web", ["sh", "-c", script], stdout=True, tty=True)
    )
    async for msg in ws:
        if b"ready" in msg.data:
            break
    await http.close()  # the client vanishes
    start = await kubesim.event(lambda e: e["event"] == "start" and e["command"][-1] == script)
    await kubesim.event(lambda e: e["event"] == "exit" and e["exec"] == start["exec"])
    assert marker.read_text() == "hup\n"


async def test_process_ignoring_hangup_is_killed_with_its_children(
    http: aiohttp.ClientSession, kubesim: Kubesim
) -> None:
    script = 'trap "" HUP; sleep 60 & echo $!; wait'
    ws = await open_exec(http, kubesim, exec_path("web", ["sh", "-c", script], stdout=True))
    data = b""
    while not data.endswith(b"\n"):
        msg = await ws.receive(timeout=5)
        data += msg.data[1:]
    child = int(data)
    await ws.close()
    start = await kubesim.event(lambda e: e["event"] == "start" and e["command"][-1] == script)
    exit_ = await kubesim.event(lambda e: e["event"] == "exit" and e["exec"] == start["exec"])
    assert exit_["code"] == 137  # SIGKILL after the grace period
    async with asyncio.timeout(5):
        await process_exit(child)  # SIGKILL is delivered asynchronously


async def process_exit(pid: int) -> None:
    """Wait until ``pid`` (any process, not only a child) has exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(pidfd, exited.set_result, None)  # a pidfd is readable once it exits
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
