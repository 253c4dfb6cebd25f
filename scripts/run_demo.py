"""Start kubesim with the demo cluster, then Daphne; Ctrl-C stops both. Used by `make run`.

``KUBESIM_CLUSTERS=2`` (or more) starts that many kubesims, each with the demo cluster: the
first on ``KUBESIM_PORT`` with its kubeconfig in ``.kubesim/kubeconfig`` as always, the others
on free ports with theirs in ``.kubesim/kubesim-N/``. The web shell gets one kubeconfig with a
context per kubesim, ``kubesim``, ``kubesim-2``, …, each as its service identity (``webshell``),
in ``.kubesim/webshell.kubeconfig``; every context of it is a cluster of the portal.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: kubesim is a package of the checkout

from kubesim.tls import write_merged_kubeconfig  # noqa: E402

STATE = ROOT / ".kubesim"
WEB_SHELL_KUBECONFIG = STATE / "webshell.kubeconfig"
# What else would choose the web shell's clusters (webshell/clusters.py).
CLUSTER_VARIABLES = (
    "WEBSHELL_IN_CLUSTER",
    "WEBSHELL_CLUSTERS",
    "WEBSHELL_CLUSTER_NAMES",
    "WEBSHELL_CLUSTER_NAME",
    "KUBE_CONTEXT",
)


def stop(signum: int, frame: object) -> None:
    """Ctrl-C or a TERM from outside: stop both servers (see main's finally)."""
    raise KeyboardInterrupt


def wait_until_listening(port: int, process: subprocess.Popen[str], timeout: float = 30) -> bool:
    """True once something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def cluster_name(number: int) -> str:
    """``kubesim``, then ``kubesim-2``, ``kubesim-3``, …: the portal's cluster names."""
    return "kubesim" if number == 1 else f"kubesim-{number}"


def start_kubesim(number: int, port: str) -> tuple[subprocess.Popen[str], str, Path]:
    """Start the ``number``-th kubesim; returns it, its "serving" line and its kubeconfig."""
    directory = STATE if number == 1 else STATE / cluster_name(number)
    directory.mkdir(parents=True, exist_ok=True)
    kubeconfig = directory / "kubeconfig"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "kubesim",
            "--config", str(ROOT / "kubesim" / "demo.yaml"),
            "--port", port,
            "--kubeconfig", str(kubeconfig),
            "--state-dir", str(directory / "state"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()  # "kubesim: serving https://…" once it listens
    return process, line.strip(), kubeconfig


def main() -> int:
    # Set explicitly: a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    port = os.environ.get("PORT", "8000")
    kubesim_port = os.environ.get("KUBESIM_PORT", "6443")
    count = os.environ.get("KUBESIM_CLUSTERS", "1")
    if not count.isdigit() or int(count) < 1:
        print(f"KUBESIM_CLUSTERS={count}: give a number of clusters, 1 or more.", file=sys.stderr)
        return 2
    STATE.mkdir(exist_ok=True)
    processes: list[subprocess.Popen[str]] = []
    try:
        kubeconfigs: dict[str, Path] = {}
        banner = []
        for number in range(1, int(count) + 1):
            # The first where it always was; the others wherever a port is free.
            kubesim, line, kubeconfig = start_kubesim(number, kubesim_port if number == 1 else "0")
            processes.append(kubesim)
            if not line.startswith("kubesim: serving"):
                print("kubesim did not start; see the messages above.", file=sys.stderr)
                return 1
            kubeconfigs[cluster_name(number)] = kubeconfig
            url = line.removeprefix("kubesim: serving").strip()
            banner.append(
                f"  kubesim serving {url} as the cluster {cluster_name(number)!r} "
                f"(kubeconfig: {kubeconfig.relative_to(ROOT)})"
            )
        # The portal's clusters: every context of this file (webshell/clusters.py).
        write_merged_kubeconfig(WEB_SHELL_KUBECONFIG, kubeconfigs, user="webshell")
        environment = {**os.environ, "KUBECONFIG": str(WEB_SHELL_KUBECONFIG)}
        for variable in CLUSTER_VARIABLES:
            environment.pop(variable, None)  # they would choose clusters other than these
        daphne = subprocess.Popen(
            [
                # Daphne with a deadline for each request (see terminals/serve.py).
                sys.executable, "-m", "terminals.serve", "-b", "127.0.0.1", "-p", port,
                "--request-timeout", "10",
                "--ping-interval", "20", "--ping-timeout", "30", "webshell.asgi:application",
            ],
            cwd=ROOT,
            env=environment,
            text=True,
        )  # fmt: skip
        processes.append(daphne)
        if not wait_until_listening(int(port), daphne):
            print("Daphne did not start; see the messages above.", file=sys.stderr)
            return 1
        first = kubeconfigs["kubesim"].relative_to(ROOT)
        print(
            "\n" + "\n".join(banner) + "\n"
            f"  Try: kubectl --kubeconfig {first} get pods -A\n"
            f"\n  Log in at http://127.0.0.1:{port}/ as 'admin'. Ctrl-C stops them all.\n",
            flush=True,
        )
        return daphne.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
