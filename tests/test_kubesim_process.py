"""Sandboxes (PATH, workdir, environment) and local processes with pipes or a PTY."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from kubesim.config import Container
from kubesim.process import ExecFailed, FdReader, LocalProcess, Pty, Sandbox, prepare_sandbox


@pytest.fixture
def restricted(tmp_path: Path) -> Sandbox:
    """A container that may run only sh, cat and stty."""
    container = Container(name="main", env={"GREETING": "hi"}, executables=("sh", "cat", "stty"))
    return prepare_sandbox(container, "default", "alpine", tmp_path)


@pytest.fixture
def open_sandbox(tmp_path: Path) -> Sandbox:
    """A container with the host PATH."""
    return prepare_sandbox(Container(name="main"), "default", "web", tmp_path)


async def read_all(reader: FdReader | None) -> bytes:
    """Read a stream to its end."""
    assert reader is not None
    data = b""
    while chunk := await reader.read():
        data += chunk
    return data


async def read_until(reader: FdReader | None, needle: bytes) -> bytes:
    """Read until ``needle`` appears (bounded by the test's own timeout)."""
    assert reader is not None
    data = b""
    async with asyncio.timeout(10):
        while needle not in data:
            chunk = await reader.read()
            assert chunk, f"EOF before {needle!r}; got {data!r}"
            data += chunk
    return data


# Sandboxes --------------------------------------------------------------------------------


def test_restricted_container_gets_a_private_bin_dir(restricted: Sandbox, tmp_path: Path) -> None:
    assert restricted.bin_dir == tmp_path / "bin" / "default" / "alpine" / "main"
    assert sorted(p.name for p in restricted.bin_dir.iterdir()) == ["cat", "sh", "stty"]
    assert restricted.workdir == tmp_path / "containers" / "default" / "alpine" / "main"
    assert restricted.workdir.is_dir()


def test_only_allowed_executables_resolve(restricted: Sandbox) -> None:
    assert restricted.resolve("sh") == str(restricted.bin_dir / "sh")
    assert restricted.resolve("/bin/sh") == str(restricted.bin_dir / "sh")  # basename lookup
    with pytest.raises(ExecFailed) as info:
        restricted.resolve("bash")
    assert info.value.message == 'exec: "bash": executable file not found in $PATH'
    with pytest.raises(ExecFailed) as info:
        restricted.resolve("/bin/bash")
    assert info.value.message == 'exec: "/bin/bash": stat /bin/bash: no such file or directory'


def test_unrestricted_container_uses_the_host_path(open_sandbox: Sandbox, tmp_path: Path) -> None:
    assert open_sandbox.bin_dir is None
    assert Path(open_sandbox.resolve("sh")).name == "sh"
    assert open_sandbox.resolve("/bin/sh") == "/bin/sh"
    script = open_sandbox.workdir / "run.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    with pytest.raises(ExecFailed, match="permission denied"):
        open_sandbox.resolve("./run.sh")
    script.chmod(0o755)
    assert open_sandbox.resolve("./run.sh") == str(script)
    with pytest.raises(ExecFailed, match="executable file not found"):
        open_sandbox.resolve("no-such-tool")


def test_missing_host_tools_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    container = Container(name="main", executables=("sh", "no-such-tool-here"))
    with caplog.at_level(logging.WARNING):
        sandbox = prepare_sandbox(container, "default", "p", tmp_path)
    assert [p.name for p in sandbox.bin_dir.iterdir()] == ["sh"]
    assert "'no-such-tool-here' not found on this host" in caplog.text


def test_environment(restricted: Sandbox) -> None:
    env = restricted.environment(tty=False)
    assert env == {
        "PATH": str(restricted.bin_dir),
        "HOSTNAME": "alpine",
        "HOME": str(restricted.workdir),
        "GREETING": "hi",
    }
    assert restricted.environment(tty=True)["TERM"] == "xterm-256color"


def test_configured_working_dir_is_created(tmp_path: Path) -> None:
    container = Container(name="main", working_dir=str(tmp_path / "srv" / "app"))
    sandbox = prepare_sandbox(container, "default", "p", tmp_path / "state")
    assert sandbox.workdir == tmp_path / "srv" / "app" and sandbox.workdir.is_dir()


# Pipes ------------------------------------------------------------------------------------


async def test_pipes_carry_stdout_stderr_and_the_exit_code(restricted: Sandbox) -> None:
    proc = LocalProcess.start(["sh", "-c", "echo out; echo err >&2; exit 3"], restricted)
    try:
        assert await read_all(proc.stdout) == b"out\n"
        assert await read_all(proc.stderr) == b"err\n"
        await proc.exited()
        assert proc.reap() == 3
    finally:
        proc.close()


async def test_closing_stdin_ends_input(restricted: Sandbox) -> None:
    proc = LocalProcess.start(["cat"], restricted, stdin=True, stderr=False)
    try:
        assert proc.stderr is None
        await proc.stdin.write(b"hello\n")
        proc.close_stdin()
        assert await read_all(proc.stdout) == b"hello\n"
        await proc.exited()
        assert proc.reap() == 0
    finally:
        proc.close()


async def test_runs_in_the_sandbox(restricted: Sandbox) -> None:
    proc = LocalProcess.start(["sh", "-c", "pwd; echo $HOSTNAME; bash -c true"], restricted)
    try:
        out = await read_all(proc.stdout)
        assert out.decode().splitlines() == [str(restricted.workdir), "alpine"]
        assert b"bash: not found" in await read_all(proc.stderr)
        await proc.exited()
        assert proc.reap() == 127
    finally:
        proc.close()


async def test_a_signal_becomes_128_plus_n(restricted: Sandbox) -> None:
    proc = LocalProcess.start(["sh", "-c", "kill -TERM $$"], restricted)
    try:
        await proc.exited()
        assert proc.reap() == 128 + signal.SIGTERM
    finally:
        proc.close()


async def test_hangup_kills_what_ignores_sighup(restricted: Sandbox) -> None:
    script = 'trap "" HUP; echo ready; while :; do cat </dev/null; done'
    proc = LocalProcess.start(["sh", "-c", script], restricted)
    try:
        await read_until(proc.stdout, b"ready")
        await proc.hangup(grace=0.2)
        assert proc.reap() == 128 + signal.SIGKILL
    finally:
        proc.close()


async def test_hangup_lets_a_process_exit_on_sighup(restricted: Sandbox) -> None:
    proc = LocalProcess.start(["sh", "-c", "echo ready; exec cat"], restricted, stdin=True)
    try:
        await read_until(proc.stdout, b"ready")
        await proc.hangup(grace=5)
        assert proc.reap() == 128 + signal.SIGHUP
    finally:
        proc.close()


async def test_start_failure_is_reported_like_runc(restricted: Sandbox) -> None:
    with pytest.raises(ExecFailed, match='exec: "bash": executable file not found in'):
        LocalProcess.start(["bash"], restricted)


# PTY --------------------------------------------------------------------------------------


async def test_pty_is_the_controlling_terminal_with_the_given_size(restricted: Sandbox) -> None:
    tty = Pty()
    tty.resize(100, 30)
    script = "stty size; test -t 0 && echo interactive; exec 3</dev/tty && echo ctty; echo $TERM"
    proc = LocalProcess.start(["sh", "-c", script], restricted, tty=tty, stdin=True)
    try:
        assert proc.stderr is None  # merged into the terminal
        out = await read_all(proc.stdout)  # ends with EIO once the slave is gone
        assert out.splitlines() == [b"30 100", b"interactive", b"ctty", b"xterm-256color"]
        await proc.exited()
        assert proc.reap() == 0
    finally:
        proc.close()


async def test_resize_reaches_the_running_process(restricted: Sandbox) -> None:
    tty = Pty()
    tty.resize(80, 24)
    proc = LocalProcess.start(["sh"], restricted, tty=tty, stdin=True)
    try:
        await proc.stdin.write(b"stty size\n")
        await read_until(proc.stdout, b"24 80")
        tty.resize(120, 40)
        assert tty.size() == (120, 40)
        await proc.stdin.write(b"stty size; exit 4\n")
        await read_until(proc.stdout, b"40 120")
        await proc.exited()
        assert proc.reap() == 4
    finally:
        proc.close()


async def test_closing_stdin_does_not_end_a_terminal(restricted: Sandbox) -> None:
    tty = Pty()
    proc = LocalProcess.start(["sh"], restricted, tty=tty, stdin=True)
    try:
        proc.close_stdin()  # ignored: a TTY ends with ^D
        await proc.stdin.write(b"echo still-here; exit\n")
        await read_until(proc.stdout, b"still-here")
        await proc.exited()
        assert proc.reap() == 0
    finally:
        proc.close()


async def test_close_kills_and_reaps_a_running_group(restricted: Sandbox) -> None:
    proc = LocalProcess.start(["sh", "-c", "echo $$; sleep 60"], restricted)
    pid = int((await read_until(proc.stdout, b"\n")).strip())
    proc.close()
    assert reaped(pid)


def reaped(pid: int) -> bool:
    """Whether our child ``pid`` has been waited for already."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False
