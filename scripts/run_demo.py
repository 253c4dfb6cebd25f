"""Start kubesim with the demo cluster, then Daphne; Ctrl-C stops both. Used by `make run`.

``KUBESIM_CLUSTERS=2`` (or more) starts that many kubesims, each with the demo cluster: the
first on ``KUBESIM_PORT`` with its kubeconfig in ``.kubesim/kubeconfig`` as always, the others
on free ports with theirs in ``.kubesim/kubesim-N/``. The web shell gets one kubeconfig with a
context per kubesim, ``kubesim``, ``kubesim-2``, …, each as its service identity (``webshell``),
in ``.kubesim/webshell.kubeconfig``; every context of it is a cluster of the portal.

``WEBSHELL_DEMO_OIDC=1`` also starts the tests' OpenID Provider (node's oidc-provider,
tests/oidc/provider.mjs) on ``OIDC_PORT`` (9000) with the users of :data:`DEMO_USERS`, and
points the web shell at it, so the login page offers "Sign in with Demo IdP". Access rules for
the groups ``oidc:ops`` and ``oidc:dev`` are the administrator's to write in the admin.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
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


# The demo provider's directory: the groups become Django groups oidc:ops, oidc:dev.
DEMO_USERS = {
    "olga": {"password": "olga-pw", "name": "Olga Ops", "groups": ["ops"], "amr": ["pwd"]},
    "diego": {
        "password": "diego-pw",
        "name": "Diego Dev",
        "groups": ["dev"],
        "amr": ["pwd", "otp"],
    },
}
DEMO_CLIENT_SECRET = "demo-only-oidc-client-secret"


def start_oidc_provider(port: str, web_port: str) -> tuple[subprocess.Popen[str], str]:
    """The demo's OpenID Provider; returns it and its issuer (empty if it did not start)."""
    if shutil.which("node") is None or not (ROOT / "node_modules" / "oidc-provider").is_dir():
        print("WEBSHELL_DEMO_OIDC=1 needs node and `npm ci` (oidc-provider).", file=sys.stderr)
        raise SystemExit(1)
    users = STATE / "oidc-users.json"
    users.write_text(json.dumps(DEMO_USERS, indent=2), encoding="utf-8")
    process = subprocess.Popen(
        ["node", str(ROOT / "tests" / "oidc" / "provider.mjs")],
        cwd=ROOT,
        env={
            **os.environ,
            "OIDC_PORT": port,
            "OIDC_USERS_FILE": str(users),
            "OIDC_CLIENT_ID": "webshell",
            "OIDC_CLIENT_SECRET": DEMO_CLIENT_SECRET,
            "OIDC_REDIRECT_URIS": f"http://127.0.0.1:{web_port}/oidc/callback/",
            "OIDC_POST_LOGOUT_REDIRECT_URIS": f"http://127.0.0.1:{web_port}/accounts/login/",
        },
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:  # its warnings first, then "oidc-provider: serving <issuer>"
        if line.startswith("oidc-provider: serving"):
            # Keep reading, so that its later messages never fill the pipe and stop it.
            threading.Thread(target=shutil.copyfileobj, args=(process.stdout, sys.stderr),
                             daemon=True).start()  # fmt: skip
            return process, line.split()[-1]
        print(line, end="", file=sys.stderr)
    return process, ""


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
        sign_on = ""
        if os.environ.get("WEBSHELL_DEMO_OIDC") == "1":
            provider, issuer = start_oidc_provider(os.environ.get("OIDC_PORT", "9000"), port)
            processes.append(provider)
            if not issuer:
                print("The OpenID Provider did not start; see above.", file=sys.stderr)
                return 1
            environment.update(
                WEBSHELL_OIDC_ISSUER=issuer,
                WEBSHELL_OIDC_CLIENT_ID="webshell",
                WEBSHELL_OIDC_CLIENT_SECRET=DEMO_CLIENT_SECRET,
                WEBSHELL_OIDC_PROVIDER_NAME="Demo IdP",
            )
            people = ", ".join(
                f"{name} / {user['password']} (group {user['groups'][0]})"
                for name, user in DEMO_USERS.items()
            )
            sign_on = (
                f"  OpenID Provider at {issuer}: sign in as {people}.\n"
                "  The groups oidc:ops (every pod) and oidc:dev (namespace dev) have demo rules.\n"
            )
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
            f"\n  Log in at http://127.0.0.1:{port}/ as 'admin'. Ctrl-C stops them all.\n"
            + sign_on,
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
