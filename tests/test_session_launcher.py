"""ShellLauncher and default_container: the container kubectl would pick, the first shell there.

The cluster is a :class:`FakeCluster` whose execs are :class:`FakeStream`s: one answers at once
that its executable is missing, one prints, one says nothing (a shell waiting for input).
"""

from __future__ import annotations

import asyncio

import pytest

from terminals.kube.exec import ExecStatus, Output
from terminals.protocol import CloseCode
from terminals.session.ending import EndSession
from terminals.session.launcher import ShellLauncher, default_container

# The cluster's answer when the command is not in the container's image.
MISSING = ExecStatus(
    code=None,
    reason="",
    message="OCI runtime exec failed: exec failed: unable to start container process: exec: "
    '"bash": executable file not found in $PATH: unknown',
)
SETTLE = 0.01  # the launcher's own deadline for a silent shell, shortened


class FakeStream:
    """One exec: ``answer`` is its first output (None: it prints nothing); logs what it gets."""

    def __init__(self, name: str, log: list[str], answer: Output | ExecStatus | None) -> None:
        self.name = name
        self.log = log
        self.output: asyncio.Queue[Output | ExecStatus] = asyncio.Queue()
        if answer is not None:
            self.output.put_nowait(answer)
        self.reading = asyncio.Event()
        self.resizing = asyncio.Event()
        self.resized = asyncio.Event()  # cleared by a test to hold the resize in flight
        self.resized.set()
        self.read_cancelled = False
        self.closed = False

    async def receive(self) -> Output | ExecStatus:
        self.log.append(f"{self.name}: read")
        self.reading.set()
        try:
            return await self.output.get()
        except asyncio.CancelledError:
            self.read_cancelled = True
            raise

    async def send_stdin(self, data: bytes) -> None:
        self.log.append(f"{self.name}: stdin {data!r}")

    async def send_resize(self, cols: int, rows: int) -> None:
        self.log.append(f"{self.name}: resize {cols}x{rows}")
        self.resizing.set()
        await self.resized.wait()

    async def close(self) -> None:
        self.log.append(f"{self.name}: closed")
        self.closed = True


class FakeCluster:
    """``open_exec`` hands out the scripted stream for each command and records the requests."""

    def __init__(self, **answers: Output | ExecStatus | None) -> None:
        self.log: list[str] = []
        self.opened: list[tuple[str, list[str]]] = []
        self.streams = {
            name: FakeStream(name, self.log, answer) for name, answer in answers.items()
        }

    async def open_exec(self, container: str, argv: list[str]) -> FakeStream:
        self.opened.append((container, argv))
        return self.streams[argv[0]]


async def run_ready_tasks(turns: int = 10) -> None:
    """Let every task that can run do so; no time passes (each turn is one loop iteration).

    Used only to show that something has *not* happened: there is no event to await for that.
    """
    for _ in range(turns):
        await asyncio.sleep(0)


def no_size() -> None:
    return None


def size_120x40() -> tuple[int, int]:
    return (120, 40)


async def test_a_missing_shell_is_closed_and_the_next_one_runs():
    cluster = FakeCluster(bash=MISSING, sh=None)
    launcher = ShellLauncher(cluster.open_exec, ["bash", "sh"], settle=SETTLE)

    launched = await launcher.launch("app", "", no_size)

    assert launched.command == ["sh"]
    assert launched.container == "app"
    assert launched.stream is cluster.streams["sh"]
    assert cluster.opened == [("app", ["bash"]), ("app", ["sh"])]
    assert cluster.streams["bash"].closed
    assert not cluster.streams["sh"].closed


async def test_a_silent_shell_runs_and_its_pending_first_read_is_handed_over():
    cluster = FakeCluster(sh=None)
    launcher = ShellLauncher(cluster.open_exec, ["sh"], settle=SETTLE)

    launched = await launcher.launch("app", "", no_size)

    assert not launched.first.done(), "the read in flight goes on in the pump"
    cluster.streams["sh"].output.put_nowait(Output(b"$ "))
    assert await launched.first == Output(b"$ ")
    assert cluster.log.count("sh: read") == 1, "the first read is not repeated"


async def test_a_shell_that_prints_runs_at_once_with_its_output_in_first():
    cluster = FakeCluster(sh=Output(b"$ "))
    launcher = ShellLauncher(cluster.open_exec, ["sh"], settle=3600)

    async with asyncio.timeout(5):  # it must not wait out the settle time
        launched = await launcher.launch("app", "", no_size)

    assert launched.first.result() == Output(b"$ ")


async def test_a_shell_that_exits_at_once_for_another_reason_is_not_replaced():
    failed = ExecStatus(code=1, reason="NonZeroExitCode", message="")
    cluster = FakeCluster(bash=failed, sh=None)
    launcher = ShellLauncher(cluster.open_exec, ["bash", "sh"], settle=SETTLE)

    launched = await launcher.launch("app", "", no_size)

    assert launched.command == ["bash"]
    assert launched.first.result() == failed, "the pump shows the user this exit"
    assert cluster.opened == [("app", ["bash"])]


async def test_when_no_shell_exists_the_session_ends_with_4502_naming_what_was_tried():
    missing_too = ExecStatus(
        code=None, reason="", message="stat /bin/sh: no such file or directory"
    )
    cluster = FakeCluster(bash=MISSING, sh=missing_too)
    launcher = ShellLauncher(cluster.open_exec, ["bash", "sh"], settle=SETTLE)

    with pytest.raises(EndSession) as raised:
        await launcher.launch("app", "", no_size)

    assert raised.value.ending.code == CloseCode.UPSTREAM_FAILED == 4502
    assert raised.value.ending.message == "No shell to run in container app: tried bash, sh."
    assert cluster.streams["bash"].closed
    assert cluster.streams["sh"].closed


async def test_the_browsers_size_is_applied_before_the_first_read():
    cluster = FakeCluster(bash=MISSING, sh=None)
    launcher = ShellLauncher(cluster.open_exec, ["bash", "sh"], settle=SETTLE)

    launched = await launcher.launch("app", "", size_120x40)

    assert launched.size == (120, 40)
    assert cluster.log == [
        "bash: resize 120x40",
        "bash: read",
        "bash: closed",
        "sh: resize 120x40",
        "sh: read",
    ]


async def test_no_read_starts_while_the_resize_is_still_on_its_way():
    cluster = FakeCluster(sh=None)
    stream = cluster.streams["sh"]
    stream.resized.clear()
    launcher = ShellLauncher(cluster.open_exec, ["sh"], settle=SETTLE)
    launching = asyncio.create_task(launcher.launch("app", "", size_120x40))

    await stream.resizing.wait()
    await run_ready_tasks()
    assert cluster.log == ["sh: resize 120x40"], "the shell would draw its prompt at 80x24"

    stream.resized.set()
    launched = await launching
    assert cluster.log == ["sh: resize 120x40", "sh: read"]
    assert launched.size == (120, 40)


async def test_without_a_size_no_resize_is_sent():
    cluster = FakeCluster(sh=None)
    launcher = ShellLauncher(cluster.open_exec, ["sh"], settle=SETTLE)

    launched = await launcher.launch("app", "", no_size)

    assert launched.size is None
    assert cluster.log == ["sh: read"]


async def test_an_explicit_command_runs_instead_of_the_shells():
    cluster = FakeCluster(htop=None)
    launcher = ShellLauncher(cluster.open_exec, ["bash", "sh"], settle=SETTLE)

    launched = await launcher.launch("app", "htop", no_size)

    assert launched.command == ["htop"]
    assert cluster.opened == [("app", ["htop"])]


async def test_a_missing_explicit_command_is_not_replaced_by_a_shell():
    cluster = FakeCluster(htop=MISSING, bash=None, sh=None)
    launcher = ShellLauncher(cluster.open_exec, ["bash", "sh"], settle=SETTLE)

    with pytest.raises(EndSession) as raised:
        await launcher.launch("app", "htop", no_size)

    assert raised.value.ending.code == CloseCode.UPSTREAM_FAILED
    assert raised.value.ending.message == "No shell to run in container app: tried htop."
    assert cluster.opened == [("app", ["htop"])]
    assert cluster.streams["htop"].closed


async def test_cancelling_the_launch_closes_the_stream_and_its_read():
    cluster = FakeCluster(sh=None)
    launcher = ShellLauncher(cluster.open_exec, ["sh"], settle=3600)
    launching = asyncio.create_task(launcher.launch("app", "", no_size))
    await cluster.streams["sh"].reading.wait()

    launching.cancel()

    with pytest.raises(asyncio.CancelledError):
        await launching
    assert cluster.streams["sh"].closed, "a cancelled launch must not leave an exec open"
    assert cluster.streams["sh"].read_cancelled


# default_container


def pod(
    containers: list[str], phase: str = "Running", default: str | None = None
) -> dict[str, object]:
    annotations = {"kubectl.kubernetes.io/default-container": default} if default else {}
    return {
        "metadata": {"name": "web-0", "annotations": annotations},
        "spec": {"containers": [{"name": name, "image": "busybox"} for name in containers]},
        "status": {"phase": phase},
    }


def test_the_annotated_default_container_wins():
    assert default_container(pod(["istio-proxy", "app"], default="app"), "web-0") == "app"


def test_without_an_annotation_the_first_container_is_picked():
    assert default_container(pod(["app", "istio-proxy"]), "web-0") == "app"


def test_an_annotation_naming_no_container_falls_back_to_the_first():
    assert default_container(pod(["app", "sidecar"], default="gone"), "web-0") == "app"


@pytest.mark.parametrize("phase", ["Pending", "Succeeded", "Failed", None])
def test_a_pod_that_is_not_running_is_not_found(phase):
    with pytest.raises(EndSession) as raised:
        default_container(pod(["app"], phase=phase), "web-0")

    assert raised.value.ending.code == CloseCode.NOT_FOUND == 4404
    assert raised.value.ending.message == f"Pod web-0 is not running (phase {phase})."


def test_a_pod_without_containers_is_not_found():
    with pytest.raises(EndSession) as raised:
        default_container(pod([], default="app"), "web-0")

    assert raised.value.ending.code == CloseCode.NOT_FOUND
    assert raised.value.ending.message == "Pod web-0 has no containers."
