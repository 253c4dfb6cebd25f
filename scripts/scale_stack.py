"""Several Daphne processes behind one nginx, as ``deploy/nginx/webshell.conf`` deploys them.

:func:`scale_stack` starts N Daphnes (``python -m terminals.serve``, each on a free port, through
``tests.fixtures.daphne.run_daphne``) and one nginx in front of them on a free port, running the
deployment's own site file with the stack's ports and without TLS (:func:`render_site`). nginx
is a child of this process with its own prefix, configuration and pid file; the system's nginx
service is left alone. Used by ``make scale-demo``, ``tests/test_scale_nginx.py`` and
``bench/scale.py``.

Each Daphne writes its access log to a file of its own, so that a caller can tell which process
accepted which WebSocket (:meth:`DaphneProcess.accepted`): nginx chooses, round-robin.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.fixtures.daphne import Daphne, run_daphne
from tests.fixtures.redis_server import free_port

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
SITE_TEMPLATE = ROOT / "deploy" / "nginx" / "webshell.conf"
MIME_TYPES = Path("/etc/nginx/mime.types")  # Debian's
NGINX_READY = "start worker process"  # logged (notice) once the listening sockets are bound
START_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0  # a Daphne drains its sessions on SIGTERM (DRAIN_TIMEOUT, 10 s) first
# A worker holds two connections per terminal (the browser's and Daphne's).
WORKER_CONNECTIONS = 8192
PORT_ATTEMPTS = 3  # the free port may be taken between the probe and nginx's bind


def find_nginx() -> str | None:
    """The nginx binary (Debian puts it in /usr/sbin, which a user's PATH may lack)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


@dataclass(frozen=True)
class DaphneProcess:
    """One Daphne of the stack."""

    server: Daphne  # the fixture's handle: port, process, stderr lines
    access_log: Path

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def accepted(self, path: str) -> int:
        """How many WebSockets on ``path`` (the URL path, no query) this process accepted."""
        if not self.access_log.exists():
            return 0
        needle = f'"WSCONNECT {path}"'
        return self.access_log.read_text(errors="replace").count(needle)


@dataclass
class ScaleStack:
    """A running nginx in front of N Daphnes."""

    port: int  # nginx's
    daphnes: list[DaphneProcess]
    nginx: subprocess.Popen[str]
    directory: Path  # nginx's prefix: configuration, pid file, logs, temporary files
    nginx_log: list[str] = field(default_factory=list)  # nginx's stderr, line by line

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return self.url

    def serving(self, path: str, before: Sequence[int]) -> DaphneProcess:
        """The one Daphne that accepted a WebSocket on ``path`` since ``before`` (the counts
        of :meth:`accepted_counts` taken before it was opened)."""
        grew = [
            d for d, count in zip(self.daphnes, before, strict=True) if d.accepted(path) > count
        ]
        if len(grew) != 1:
            raise RuntimeError(f"{len(grew)} processes accepted a new socket on {path}")
        return grew[0]

    def accepted_counts(self, path: str) -> list[int]:
        """:meth:`DaphneProcess.accepted` of each Daphne, in order."""
        return [d.accepted(path) for d in self.daphnes]


def render_site(template: str, *, listen: str, upstreams: Sequence[str], static_root: Path) -> str:
    """The deployment's site file for a local stack: its listen address, its upstream servers,
    its static root, and no TLS (no redirect server, no ``ssl`` on ``listen``, no ``ssl_*``).

    Everything else (headers, timeouts, buffering) is the file as operators get it. Raises
    ``ValueError`` if the file no longer has the shape this relies on.
    """

    def replace(
        pattern: str, new: Callable[[re.Match[str]], str], text: str, exactly_one: bool = True
    ) -> str:
        result, count = re.subn(pattern, new, text, flags=re.MULTILINE)
        if count == 0 or (exactly_one and count != 1):
            raise ValueError(f"{SITE_TEMPLATE.name}: {count} matches of {pattern!r}")
        return result

    servers = "".join(f"    server {address};\n" for address in upstreams)
    # The port-80 server that redirects to HTTPS.
    site = replace(r"^server \{[^{}]*\breturn 301 [^{}]*\}\n+", lambda m: "", template)
    site = replace(
        r"^(upstream webshell \{[^{}]*?\n)(?:[ \t]*server [^\n]*\n)+",
        lambda m: m[1] + servers,
        site,
    )
    site = replace(
        r"^([ \t]*)listen [^\n]*\n(?:[ \t]*listen [^\n]*\n)*",
        lambda m: f"{m[1]}listen {listen};\n",
        site,
    )
    site = replace(r"^[ \t]*ssl_\w+ [^\n]*\n", lambda m: "", site, exactly_one=False)
    return replace(r"^([ \t]*alias )[^;]*;", lambda m: f'{m[1]}"{static_root}/";', site)


def main_config(directory: Path, site: Path) -> str:
    """nginx.conf for a stack: one worker, everything under ``directory``, the site included."""
    lines = [
        "# Written by scripts/scale_stack.py for a local stack; the site is deploy/nginx's.",
        # As root, the master would hand the worker to "nobody", who cannot read the stack's
        # files; as anyone else the directive would be ignored with a warning.
        f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else "",
        # One worker: round-robin is then an exact alternation, and nginx's CPU stays small
        # next to the Daphnes' on a 2-core machine.
        "worker_processes 1;",
        f"worker_rlimit_nofile {2 * WORKER_CONNECTIONS + 100};",
        f'pid "{directory}/nginx.pid";',
        # Notices too: "start worker process" says nginx is ready.
        "error_log stderr notice;",
        f"events {{ worker_connections {WORKER_CONNECTIONS}; }}",
        "http {",
        f'    include "{MIME_TYPES}";' if MIME_TYPES.exists() else "",
        "    default_type application/octet-stream;",
        '    log_format upstream \'$remote_addr [$time_local] "$request" $status '
        "$body_bytes_sent $upstream_addr $request_time';",
        f'    access_log "{directory}/access.log" upstream;',
    ]
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        lines.append(f'    {kind}_temp_path "{directory}/temp/{kind}";')
    lines += [f'    include "{site}";', "}"]
    return "".join(f"{line}\n" for line in lines if line)


@dataclass
class Nginx:
    """A running nginx and what it wrote to stderr."""

    process: subprocess.Popen[str]
    log: list[str]


class NginxDidNotStart(RuntimeError):
    """nginx exited or said nothing in time; ``port_taken`` if its port was taken meanwhile."""

    def __init__(self, log: str) -> None:
        super().__init__(f"nginx did not start:\n{log}")
        self.port_taken = "Address already in use" in log


@contextlib.contextmanager
def run_nginx(directory: Path, config: Path) -> Iterator[Nginx]:
    """nginx on ``config`` as a child (not a daemon), ``directory`` its prefix; stopped on exit."""
    nginx = find_nginx()
    if nginx is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
    process = subprocess.Popen(
        [nginx, "-p", f"{directory}/", "-c", str(config), "-e", "stderr", "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # Out of the terminal's process group: Ctrl-C would stop it at once, before the
        # Daphnes have told their browsers (through it) that they are stopping.
        start_new_session=True,
    )
    log: list[str] = []
    ready = threading.Event()

    def read_log() -> None:
        # Keeps reading so that the pipe never fills; the lines explain failures.
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            if NGINX_READY in line:
                ready.set()
        ready.set()  # it exited

    threading.Thread(target=read_log, daemon=True).start()
    try:
        if not ready.wait(START_TIMEOUT) or process.poll() is not None:
            raise NginxDidNotStart("".join(log))
        yield Nginx(process, log)
    finally:
        stop(process, timeout=10)


def stop(process: subprocess.Popen[str], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited in time (and a warning: a Daphne killed
    while draining leaves its unfinished sessions to the reaper of another process)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not exit within %s s of SIGTERM: killed", process.args, timeout)
        process.kill()
        process.wait()


@contextlib.contextmanager
def scale_stack(
    processes: int,
    env: dict[str, str],
    *,
    static_root: Path | None = None,
    directory: Path | None = None,
    port: int | None = None,
    daphne_arguments: Sequence[str] = (),
) -> Iterator[ScaleStack]:
    """Start ``processes`` Daphnes and nginx in front of them; stop them all on exit.

    ``env`` goes to every Daphne (database, Redis, settings module, kubeconfig, ...): more than
    one process needs PostgreSQL and Redis. The Daphnes trust one proxy's X-Forwarded-For
    entry unless ``env`` says otherwise. ``static_root`` is what nginx serves under /static/
    (by default an empty directory); ``directory`` holds nginx's files and the Daphnes' access
    logs (by default a temporary directory, removed afterwards); nginx listens on
    127.0.0.1:``port`` (by default a free one).

    On exit the Daphnes get SIGTERM together (each drains its sessions, telling browsers 1012
    through nginx), then nginx; whatever has not exited in time is killed.
    """
    if processes < 1:
        raise ValueError("A stack needs at least one Daphne.")
    own_directory = directory is None
    base = Path(tempfile.mkdtemp(prefix="webshell-scale-")) if directory is None else directory
    daphne_env = {
        # This nginx is the one proxy in front: webshell.settings reads the first variable,
        # tests.settings (and bench.settings, built on it) the second.
        "WEBSHELL_TRUSTED_PROXIES": "1",
        "WEBSHELL_TEST_TRUSTED_PROXIES": "1",
        **env,
    }
    try:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (base / "temp" / kind).mkdir(parents=True, exist_ok=True)
        static = static_root or base / "static"
        static.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as running:
            daphnes: list[DaphneProcess] = []
            for index in range(processes):
                access_log = base / f"daphne-{index + 1}.access.log"
                arguments = [
                    "--access-log",
                    str(access_log),
                    # As the README's deployment runs it: more than DRAIN_TIMEOUT.
                    "--application-close-timeout",
                    "15",
                    *daphne_arguments,
                ]
                server = running.enter_context(run_daphne(daphne_env, arguments=arguments))
                daphnes.append(DaphneProcess(server, access_log))
            try:
                nginx, listening = _start_nginx(running, base, daphnes, static, port)
                yield ScaleStack(listening, daphnes, nginx.process, base, nginx.log)
            finally:
                # All at once, before nginx stops: each drains its sessions (DRAIN_TIMEOUT).
                for daphne in daphnes:
                    if daphne.server.process.poll() is None:
                        daphne.server.process.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + STOP_TIMEOUT
                for daphne in daphnes:
                    stop(daphne.server.process, max(0.0, deadline - time.monotonic()))
    finally:
        if own_directory:
            shutil.rmtree(base, ignore_errors=True)


def _start_nginx(
    running: contextlib.ExitStack,
    base: Path,
    daphnes: Sequence[DaphneProcess],
    static: Path,
    port: int | None,
) -> tuple[Nginx, int]:
    """nginx on ``port`` (else a free one) in front of ``daphnes``, entered into ``running``."""
    site = base / "webshell.conf"
    config = base / "nginx.conf"
    config.write_text(main_config(base, site))
    upstreams = [f"127.0.0.1:{daphne.port}" for daphne in daphnes]
    attempts = 1 if port else PORT_ATTEMPTS
    for attempt in range(attempts):
        listening = port or free_port()
        site.write_text(
            render_site(
                SITE_TEMPLATE.read_text(),
                listen=f"127.0.0.1:{listening}",
                upstreams=upstreams,
                static_root=static,
            )
        )
        try:
            return running.enter_context(run_nginx(base, config)), listening
        except NginxDidNotStart as failure:
            if not failure.port_taken or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
