"""The baseline users know: the real ``kubectl exec -i -t`` against the same kubesim pod.

kubectl only asks for a TTY when its stdin is a terminal, so it gets the slave of a PTY of
ours for stdin (which it puts in raw mode) and a pipe for stdout: its output is read as fast
as it comes, with no terminal emulator in the way, as the bench reads the web shell's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import time
from pathlib import Path

from tests.fixtures.kubesim import find_kubectl_binaries

from .client import MarkerTimer, SessionFailed, Stream, say
from .direct import POD, USER

VERSION = "1.33"  # the newest kubectl the machine has (tests/test_kubesim_kubectl.py)
# Reads below malloc's mmap threshold: a 1 MiB read maps and unmaps its buffer each time,
# which cost kubectl a third of its rate.
READ_SIZE = 64 * 1024
PIPE_SIZE = 1 << 20  # /proc/sys/fs/pipe-max-size, by default
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; in fcntl from Python 3.10


def binary() -> Path | None:
    """kubectl 1.33 beside ``kubectl`` on PATH (``$KBIN/kubectl.1.33``), or the newest there."""
    found, _ = find_kubectl_binaries()
    if not found:
        return None
    newest = max(found, key=lambda v: tuple(int(p) for p in v.split(".")))
    return found.get(VERSION, found[newest])


async def kubectl_stream(
    kubectl: Path, kubeconfig: Path, home: Path, command: str, setup: str, timeout: float
) -> Stream:
    """``command`` between two markers through ``kubectl exec -i -t``, timed as the web
    shell's is (the clock starts after the chunk that holds the first marker). ``home`` (an
    existing directory) is kubectl's HOME, where it caches discovery.

    kubectl's stdout is a pipe of 1 MiB read by a thread with plain ``os.read`` of 64 KiB, as
    fast as ``cat`` reads it: through asyncio's subprocess streams kubectl measured a third
    slower than with its output going to /dev/null.
    """
    script = f"{setup}; {say('BENCH-BEGIN')}; {command}; {say('BENCH-END')}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # kubectl caches discovery there
        "KUBECONFIG": str(kubeconfig),
    }
    argv = [str(kubectl), "--context", f"kubesim-{USER}", "exec", "-i", "-t", POD, "--"]
    master, slave = pty.openpty()
    output, output_end = os.pipe()
    try:
        with contextlib.suppress(OSError):  # a smaller pipe only slows kubectl down
            fcntl.fcntl(output_end, F_SETPIPE_SZ, PIPE_SIZE)
        process = await asyncio.create_subprocess_exec(
            *argv,
            "sh",
            "-c",
            script,
            stdin=slave,
            stdout=output_end,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(slave)
        os.close(output_end)
    assert process.stderr is not None
    timer = MarkerTimer()
    reading = asyncio.create_task(asyncio.to_thread(_read, output, timer))
    try:
        async with asyncio.timeout(timeout):
            if not await asyncio.shield(reading):
                error = (await process.stderr.read()).decode(errors="replace").strip()
                raise SessionFailed(f"kubectl ended early ({error[-300:]!r})")
            await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        await asyncio.gather(reading, return_exceptions=True)  # the pipe is closed: it ends
        os.close(output)
        os.close(master)
    return timer.stream()


def _read(fd: int, timer: MarkerTimer) -> bool:
    """Feed the timer until the end marker (True) or the end of the output (False)."""
    while chunk := os.read(fd, READ_SIZE):
        if timer.feed(chunk, time.perf_counter()):
            return True
    return False
