"""``make scale-demo``: kubesim, PostgreSQL, Redis, Daphnes behind nginx; Ctrl-C stops all.

What ``make run`` is for one process, with the deployment of deploy/nginx/webshell.conf
(``scripts.scale_stack``): the project's own settings (``webshell.settings``, DEBUG on as
``make run`` has it), PostgreSQL and Redis on this machine (a database of the demo's own,
created if missing and kept between runs), the static files collected for nginx to serve.
State and logs are under ``.scale-demo/``: each Daphne's access log there shows which process
nginx gave each page and socket.

Environment: ``SCALE_PROCESSES`` (2), ``SCALE_PORT`` (nginx's, 8080), ``SCALE_DATABASE_URL``
(postgres://postgres@127.0.0.1:5432/webshell_scale), ``SCALE_REDIS_URL``
(redis://127.0.0.1:6379/1, apart from the test suite's database 0): names of their own, so that
a ``DATABASE_URL`` set for the tests does not send the demo there. ``WEBSHELL_ADMIN_PASSWORD``
sets the admin's password (else one is generated and printed once).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scripts.scale_stack import ScaleStack, find_nginx, scale_stack
from tests.fixtures.kubesim import run_kubesim

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".scale-demo"
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/webshell_scale"
REDIS_URL = "redis://127.0.0.1:6379/1"


class Stopped(Exception):
    """Ctrl-C, a TERM from outside, or one of the servers exited."""


def manage(*args: str, env: dict[str, str]) -> None:
    """``manage.py args…`` with the demo's settings; its output goes to the terminal."""
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def create_database(url: str) -> None:
    """Create the demo's PostgreSQL database unless it exists."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def wait_until_stopped(stack: ScaleStack, kubesim: subprocess.Popen[Any]) -> None:
    """Sleep until Ctrl-C, a TERM, or the exit of a server (SIGCHLD); then let the stack stop
    without being interrupted again."""
    # Each server, and where to read why it stopped.
    logs: list[tuple[str, subprocess.Popen[Any], list[str]]] = [
        ("kubesim", kubesim, [f"(its messages: {STATE / 'kubesim' / 'kubesim.stderr'})\n"]),
        ("nginx", stack.nginx, stack.nginx_log),
    ]
    logs += [(f"Daphne {d.pid}", d.server.process, d.server.log) for d in stack.daphnes]

    def child_exited(signum: int, frame: object) -> None:
        for name, process, log in logs:
            if process.poll() is not None:
                last = "".join(log[-20:])
                raise Stopped(f"{name} exited ({process.returncode}); its last words:\n{last}")

    signal.signal(signal.SIGCHLD, child_exited)
    try:
        child_exited(signal.SIGCHLD, None)  # one may have exited before the handler was set
        while True:
            signal.pause()
    finally:
        # The servers exit one by one from now on; a second Ctrl-C would cut that short.
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL if signum == signal.SIGCHLD else signal.SIG_IGN)


def main() -> int:
    def stop(signum: int, frame: object) -> None:
        raise Stopped

    # Set explicitly: a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if find_nginx() is None:
        print("nginx is not installed (Debian: apt-get install nginx).", file=sys.stderr)
        return 1
    processes = int(os.environ.get("SCALE_PROCESSES", "2"))
    port = int(os.environ.get("SCALE_PORT", "8080"))
    STATE.mkdir(exist_ok=True)
    # What the Daphnes (and manage.py) run with, over this process's environment.
    settings = {
        "DJANGO_SETTINGS_MODULE": "webshell.settings",
        "DJANGO_DEBUG": os.environ.get("DJANGO_DEBUG", "1"),
        "DATABASE_URL": os.environ.get("SCALE_DATABASE_URL", DATABASE_URL),
        "REDIS_URL": os.environ.get("SCALE_REDIS_URL", REDIS_URL),
        "DJANGO_STATIC_ROOT": str(STATE / "static"),
    }
    env = {**os.environ, **settings}
    try:
        create_database(settings["DATABASE_URL"])
        manage("migrate", "--no-input", env=env)
        manage("demo_admin", env=env)
        manage("collectstatic", "--no-input", "--verbosity", "0", env=env)
        with run_kubesim(ROOT / "kubesim" / "demo.yaml", STATE / "kubesim", transcript=False) as ks:
            # The sandbox's one cluster, with the web shell's own identity in it.
            settings["KUBECONFIG"] = str(ks.kubeconfig)
            settings["WEBSHELL_CLUSTERS"] = "kubesim=kubesim-webshell"
            with scale_stack(
                processes,
                settings,
                static_root=STATE / "static",
                directory=STATE / "stack",
                port=port,
            ) as stack:
                kubeconfig = ks.kubeconfig.relative_to(ROOT)
                daphnes = ", ".join(f"127.0.0.1:{d.port} (pid {d.pid})" for d in stack.daphnes)
                print(
                    f"\n  kubesim: serving {ks.url} (kubeconfig: {kubeconfig})\n"
                    f"  Try: kubectl --kubeconfig {kubeconfig} get pods -A\n"
                    f"  Daphnes: {daphnes}\n"
                    f"  PostgreSQL: {_safe(settings['DATABASE_URL'])}; Redis: "
                    f"{settings['REDIS_URL']}\n"
                    f"  Which process took each page and socket: "
                    f"{STATE.relative_to(ROOT)}/stack/daphne-*.access.log\n"
                    f"\n  Log in at {stack.url}/ as 'admin' (nginx, round-robin over "
                    f"{processes} processes). Ctrl-C stops everything.\n",
                    flush=True,
                )
                wait_until_stopped(stack, ks.process)
    except Stopped as stopped:
        if str(stopped):
            print(str(stopped), file=sys.stderr)
            return 1
    except subprocess.CalledProcessError as failure:
        print(f"{' '.join(failure.cmd[1:])} failed; see the messages above.", file=sys.stderr)
        return 1
    return 0


def _safe(url: str) -> str:
    """A database URL without its password."""
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return parts.geturl()


if __name__ == "__main__":
    sys.exit(main())
