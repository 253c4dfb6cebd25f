"""Start kubesim with the demo cluster, then Daphne; Ctrl-C stops both. Used by `make run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".kubesim"


def main() -> int:
    port = os.environ.get("PORT", "8000")
    kubesim_port = os.environ.get("KUBESIM_PORT", "6443")
    STATE.mkdir(exist_ok=True)
    kubeconfig = STATE / "kubeconfig"
    kubesim = subprocess.Popen(
        [
            sys.executable, "-m", "kubesim", "--config", str(ROOT / "kubesim" / "demo.yaml"),
            "--port", kubesim_port, "--kubeconfig", str(kubeconfig),
            "--state-dir", str(STATE / "state"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert kubesim.stdout is not None
    line = kubesim.stdout.readline()  # "kubesim: serving https://…" once it listens
    if not line.startswith("kubesim: serving"):
        kubesim.wait()
        print("kubesim did not start; see the messages above.", file=sys.stderr)
        return 1
    daphne = subprocess.Popen(
        [
            sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", port,
            "--ping-interval", "20", "--ping-timeout", "30", "webshell.asgi:application",
        ],
        cwd=ROOT,
    )
    print(
        f"\n  {line.strip()} (kubeconfig: {kubeconfig.relative_to(ROOT)})\n"
        f"  Try: kubectl --kubeconfig {kubeconfig.relative_to(ROOT)} get pods -A\n"
        f"\n  Log in at http://127.0.0.1:{port}/ as 'admin'. Ctrl-C stops both.\n",
        flush=True,
    )
    try:
        return daphne.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for process in (daphne, kubesim):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (daphne, kubesim):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
