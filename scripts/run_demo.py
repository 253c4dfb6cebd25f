"""Start kubesim with the demo cluster, then Daphne; Ctrl-C stops both. Used by `make run`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".kubesim"


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


def main() -> int:
    # Set explicitly: a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    port = os.environ.get("PORT", "8000")
    kubesim_port = os.environ.get("KUBESIM_PORT", "6443")
    STATE.mkdir(exist_ok=True)
    kubeconfig = STATE / "kubeconfig"
    processes: list[subprocess.Popen[str]] = []
    try:
        kubesim = subprocess.Popen(
            [
                sys.executable, "-m", "kubesim",
                "--config", str(ROOT / "kubesim" / "demo.yaml"),
                "--port", kubesim_port,
                "--kubeconfig", str(kubeconfig),
                "--state-dir", str(STATE / "state"),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        processes.append(kubesim)
        assert kubesim.stdout is not None
        line = kubesim.stdout.readline()  # "kubesim: serving https://…" once it listens
        if not line.startswith("kubesim: serving"):
            print("kubesim did not start; see the messages above.", file=sys.stderr)
            return 1
        daphne = subprocess.Popen(
            [
                # Daphne with a deadline for each request (see terminals/serve.py).
                sys.executable, "-m", "terminals.serve", "-b", "127.0.0.1", "-p", port,
                "--request-timeout", "10",
                "--ping-interval", "20", "--ping-timeout", "30", "webshell.asgi:application",
            ],
            cwd=ROOT,
            text=True,
        )  # fmt: skip
        processes.append(daphne)
        if not wait_until_listening(int(port), daphne):
            print("Daphne did not start; see the messages above.", file=sys.stderr)
            return 1
        print(
            f"\n  {line.strip()} (kubeconfig: {kubeconfig.relative_to(ROOT)})\n"
            f"  Try: kubectl --kubeconfig {kubeconfig.relative_to(ROOT)} get pods -A\n"
            f"\n  Log in at http://127.0.0.1:{port}/ as 'admin'. Ctrl-C stops both.\n",
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
