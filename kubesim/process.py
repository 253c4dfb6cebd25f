"""Real local processes standing in for container processes: sandboxes, PTYs, pipes.

A container is a :class:`Sandbox`: a working directory, an environment and a private ``bin``
directory of symlinks to the host executables it may run (or the host ``PATH``).  A
:class:`LocalProcess` runs one exec in its own session, with a PTY (controlling terminal) or
with pipes, and exposes its file descriptors as small non-blocking async readers/writers.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import pty
import shutil
import signal
import struct
import subprocess
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import Container

logger = logging.getLogger(__name__)

READ_SIZE = 32 * 1024
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ExecFailed(Exception):
    """The process could not be started; ``message`` is in runc's words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Sandbox:
    """How a container's processes run: where, with what environment, which executables."""

    hostname: str
    workdir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    bin_dir: Path | None = None  # None: the host PATH, no restriction

    @property
    def path(self) -> str:
        """The PATH processes get: the private bin dir, or the host's."""
        if self.bin_dir is not None:
            return str(self.bin_dir)
        return os.environ.get("PATH") or DEFAULT_PATH

    def resolve(self, argv0: str) -> str:
        """The file to execute for ``argv0``; raise ExecFailed like runc would.

        In a restricted container only the basename of a path is looked up among the
        allowed executables, so ``/bin/bash`` works where bash is allowed and only there.
        """
        if self.bin_dir is not None:
            candidate = self.bin_dir / os.path.basename(argv0)
            if os.path.basename(argv0) and candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        elif "/" in argv0:
            candidate = Path(argv0) if argv0.startswith("/") else self.workdir / argv0
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
            if candidate.exists():
                raise ExecFailed(f'exec: "{argv0}": permission denied')
        else:
            found = shutil.which(argv0, path=self.path) if argv0 else None
            if found:
                return found
        if "/" in argv0:
            raise ExecFailed(f'exec: "{argv0}": stat {argv0}: no such file or directory')
        raise ExecFailed(f'exec: "{argv0}": executable file not found in $PATH')

    def environment(self, tty: bool) -> dict[str, str]:
        """Environment of a process: runtime defaults, then the configured env."""
        env = {"PATH": self.path, "HOSTNAME": self.hostname, "HOME": str(self.workdir)}
        env.update(self.env)
        if tty:
            env["TERM"] = "xterm-256color"
        return env


def prepare_sandbox(container: Container, namespace: str, pod: str, state_dir: Path) -> Sandbox:
    """Create the working and bin directories of one container under ``state_dir``."""
    if container.working_dir is not None:
        workdir = Path(container.working_dir)
    else:
        workdir = state_dir / "containers" / namespace / pod / container.name
    workdir.mkdir(parents=True, exist_ok=True)
    bin_dir = None
    if container.executables is not None:
        bin_dir = state_dir / "bin" / namespace / pod / container.name
        shutil.rmtree(bin_dir, ignore_errors=True)
        bin_dir.mkdir(parents=True)
        host_path = os.environ.get("PATH") or DEFAULT_PATH
        for name in container.executables:
            target = shutil.which(name, path=host_path)
            if target is None:
                logger.warning(
                    "%s/%s[%s]: %r not found on this host; the container will lack it",
                    namespace,
                    pod,
                    container.name,
                    name,
                )
                continue
            (bin_dir / name).symlink_to(target)
    return Sandbox(hostname=pod, workdir=workdir, env=dict(container.env), bin_dir=bin_dir)


# Non-blocking file descriptors ------------------------------------------------------------


class FdReader:
    """Reads a non-blocking fd from the event loop, one chunk per call (natural backpressure)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    async def read(self, size: int = READ_SIZE) -> bytes:
        """Up to ``size`` bytes; b"" at end of file (or EIO: PTY with no slave left)."""
        while True:
            try:
                return os.read(self.fd, size)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return b""
                raise
            await _ready(self.fd, writable=False)


class FdWriter:
    """Writes to a non-blocking fd from the event loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    async def write(self, data: bytes) -> None:
        """Write all of ``data``; raises OSError (e.g. EPIPE) if the reader went away."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                await _ready(self.fd, writable=True)


async def _ready(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    if writable:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await future
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


# PTY --------------------------------------------------------------------------------------


class Pty:
    """A pseudo-terminal pair; the master stays with kubesim."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        os.set_inheritable(self.master, False)

    def resize(self, cols: int, rows: int) -> None:
        """Set the window size; the kernel sends SIGWINCH to the foreground process group."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def size(self) -> tuple[int, int]:
        """(cols, rows) as the terminal reports them."""
        rows, cols, _, _ = struct.unpack(
            "HHHH", fcntl.ioctl(self.master, termios.TIOCGWINSZ, b"\0" * 8)
        )
        return cols, rows

    def close_slave(self) -> None:
        """Drop kubesim's slave fd, so that EIO marks the end of the session's output."""
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1

    def close(self) -> None:
        """Close both ends."""
        self.close_slave()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


def _become_controlling_tty() -> None:
    # Runs in the child between fork and exec, after setsid (start_new_session): the slave
    # on fd 0 becomes the controlling terminal, so job control, ^C and SIGHUP work.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


# Processes --------------------------------------------------------------------------------


class LocalProcess:
    """One running exec: a process group leader with pipes or a PTY."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        *,
        pty: Pty | None,
        stdin: FdWriter | None,
        stdout: FdReader | None,
        stderr: FdReader | None,
    ) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.pty = pty
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._exited = asyncio.get_running_loop().create_future()
        self._pidfd = _watch_exit(self.pid, self._exited)

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        sandbox: Sandbox,
        *,
        tty: Pty | None = None,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
    ) -> LocalProcess:
        """Start ``argv`` in ``sandbox``; with ``tty`` all three streams are the PTY slave."""
        executable = sandbox.resolve(argv[0])
        env = sandbox.environment(tty is not None)
        pipes: list[int] = []
        try:
            if tty is not None:
                popen = subprocess.Popen(
                    list(argv),
                    executable=executable,
                    cwd=sandbox.workdir,
                    env=env,
                    stdin=tty.slave,
                    stdout=tty.slave,
                    stderr=tty.slave,
                    start_new_session=True,
                    preexec_fn=_become_controlling_tty,
                )
                tty.close_slave()
                master = tty.master
                return cls(
                    popen, pty=tty, stdin=FdWriter(master), stdout=FdReader(master), stderr=None
                )
            in_r, in_w = os.pipe() if stdin else (subprocess.DEVNULL, -1)
            out_r, out_w = os.pipe() if stdout else (-1, subprocess.DEVNULL)
            err_r, err_w = os.pipe() if stderr else (-1, subprocess.DEVNULL)
            pipes = [fd for fd in (in_r, in_w, out_r, out_w, err_r, err_w) if fd >= 0]
            popen = subprocess.Popen(
                list(argv),
                executable=executable,
                cwd=sandbox.workdir,
                env=env,
                stdin=in_r,
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            for fd in pipes:
                os.close(fd)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ExecFailed(f'exec: "{argv[0]}": {reason}') from exc
        for fd in (in_r, out_w, err_w):  # the child's ends
            if fd >= 0:
                os.close(fd)
        return cls(
            popen,
            pty=None,
            stdin=FdWriter(in_w) if in_w >= 0 else None,
            stdout=FdReader(out_r) if out_r >= 0 else None,
            stderr=FdReader(err_r) if err_r >= 0 else None,
        )

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return not self._exited.done()

    async def exited(self) -> None:
        """Wait until the process has exited (it stays a zombie until :meth:`reap`)."""
        await asyncio.shield(self._exited)

    def close_stdin(self) -> None:
        """End of input (v5 CLOSE on channel 0). A PTY's input is ended by ^D, not here."""
        if self.pty is None and self.stdin is not None:
            os.close(self.stdin.fd)
            self.stdin = None

    def signal_group(self, sig: int) -> None:
        """Signal the whole process group (the exec and whatever it started)."""
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def hangup(self, grace: float) -> None:
        """SIGHUP the group, SIGKILL it after ``grace`` seconds if the leader is still alive."""
        self.signal_group(signal.SIGHUP)
        try:
            async with asyncio.timeout(grace):
                await self.exited()
        except TimeoutError:
            logger.info("pid %d ignored SIGHUP for %.1fs; killing its group", self.pid, grace)
        self.signal_group(signal.SIGKILL)
        await self.exited()

    def reap(self) -> int:
        """Collect the exit status (call after :meth:`exited`): the code, or 128+N for signal N."""
        code = self._popen.wait()
        return 128 - code if code < 0 else code

    def close(self) -> None:
        """Release every fd; kill and reap the group first if that has not happened yet."""
        if self._popen.returncode is None:
            self.signal_group(signal.SIGKILL)
            self._popen.wait()  # SIGKILL is immediate; this never blocks for long
        fds = [f.fd for f in (self.stdin, self.stdout, self.stderr) if f is not None]
        if self.pty is not None:
            self.pty.close()
        else:
            for fd in fds:
                os.close(fd)
        self.stdin = self.stdout = self.stderr = None
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


_waiters: set[asyncio.Task[None]] = set()


def _watch_exit(pid: int, future: asyncio.Future[None]) -> int | None:
    """Resolve ``future`` when ``pid`` exits, without reaping it. Returns the pidfd if used."""
    loop = asyncio.get_running_loop()

    def done() -> None:
        if not future.done():
            future.set_result(None)

    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        # No pidfd (old kernel): wait in a thread with WNOWAIT, which does not reap.
        async def wait_in_thread() -> None:
            await asyncio.to_thread(os.waitid, os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            done()

        task = loop.create_task(wait_in_thread())
        _waiters.add(task)  # keep a reference until it finishes
        task.add_done_callback(_waiters.discard)
        return None

    def readable() -> None:
        loop.remove_reader(pidfd)
        done()

    loop.add_reader(pidfd, readable)
    return pidfd
