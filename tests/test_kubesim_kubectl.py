"""kubesim against the real kubectl binaries: what a user of each version sees.

WebSocket exec is the default from kubectl 1.30 on; 1.29 needs
``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true``; 1.27/1.28 speak only SPDY, which kubesim refuses
with a clear error (reference section 11).
"""

from __future__ import annotations

import re
from pathlib import Path

import pexpect
import pytest

from tests.fixtures.kubesim import Kubectl, Kubesim

WS_ON = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "true"}
# Every version that can exec over WebSocket, with the environment it needs for that.
WEBSOCKET_VERSIONS = {"1.29": WS_ON, "1.30": None, "1.31": None, "1.32": None, "1.33": None}
PROMPT = r"[#$] $"


@pytest.fixture(params=list(WEBSOCKET_VERSIONS))
def version(request: pytest.FixtureRequest) -> str:
    """Each kubectl version that speaks WebSocket exec."""
    return request.param


def exec_(kubectl: Kubectl, version: str, *args: str, input: str | None = None):
    """``kubectl exec`` with the environment that version needs for WebSocket."""
    return kubectl(version, "exec", *args, input=input, env=WEBSOCKET_VERSIONS[version])


# Basic exec, for every version -------------------------------------------------------------


def test_exec_prints_stdout_stderr_and_returns_exit_code(kubectl: Kubectl, version: str) -> None:
    rc, out, err = exec_(
        kubectl, version, "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert out == "out\n"
    assert "err\n" in err
    assert "command terminated with exit code 3" in err
    assert rc == 3


def test_exec_zero_exit_prints_nothing_else(kubectl: Kubectl, version: str) -> None:
    rc, out, err = exec_(kubectl, version, "web", "--", "echo", "ok")
    assert (rc, out, err) == (0, "ok\n", "")


def test_piped_stdin_is_half_closed(kubectl: Kubectl, version: str) -> None:
    rc, out, err = exec_(
        kubectl, version, "-i", "web", "--", "sh", "-c", "cat; echo done", input="a\nb\n"
    )
    assert out == "a\nb\ndone\n", err
    assert rc == 0


def test_interactive_tty_resize_utf8_and_exit_code(
    kubectl: Kubectl, kubesim: Kubesim, version: str
) -> None:
    child = pexpect.spawn(
        str(kubectl.binary(version)),
        ["exec", "-it", "web", "--", "sh"],
        env=kubectl.env(WEBSOCKET_VERSIONS[version]),
        dimensions=(30, 100),
        encoding="utf-8",
        timeout=15,
    )
    try:
        child.expect(PROMPT)
        child.sendline("stty size")
        child.expect(r"\r\n30 100\r\n")
        child.setwinsize(40, 120)
        # kubectl forwards SIGWINCH on its own goroutine: ask until the new size shows.
        for _ in range(50):
            child.sendline("stty size")
            if child.expect([r"\r\n40 120\r\n", r"\r\n30 100\r\n"]) == 0:
                break
        else:
            pytest.fail("the terminal size never followed setwinsize(40, 120)")
        child.sendline("echo héllo wörld 日本")
        child.expect("\r\nhéllo wörld 日本\r\n")
        child.sendline("exit 5")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 5


def test_process_killed_by_signal_exits_128_plus_signal(kubectl: Kubectl, version: str) -> None:
    rc, _, err = exec_(kubectl, version, "web", "--", "sh", "-c", "kill -9 $$")
    assert "command terminated with exit code 137" in err
    assert rc == 137


def test_missing_executable_is_an_internal_error(kubectl: Kubectl, version: str) -> None:
    rc, out, err = exec_(kubectl, version, "web", "--", "no-such-tool")
    assert err.startswith("error: Internal error occurred: error executing command in container")
    assert 'exec: "no-such-tool": executable file not found in $PATH: unknown' in err
    assert (rc, out) == (1, "")


def test_unknown_container_is_a_bad_request(kubectl: Kubectl, version: str) -> None:
    rc, _, err = exec_(kubectl, version, "web", "-c", "nope", "--", "true")
    assert err.strip() == "Error from server (BadRequest): container nope is not valid for pod web"
    assert rc == 1


def test_unknown_pod_is_not_found(kubectl: Kubectl, version: str) -> None:
    rc, _, err = exec_(kubectl, version, "nope", "--", "true")
    assert err.strip() == 'Error from server (NotFound): pods "nope" not found'
    assert rc == 1


# SPDY-only clients --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "env"),
    [
        ("1.27", None),
        ("1.28", None),
        ("1.29", None),
        ("1.33", {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}),
    ],
    ids=["1.27", "1.28", "1.29-default", "1.33-websockets-off"],
)
def test_spdy_clients_get_a_clear_error(kubectl: Kubectl, version: str, env: dict | None) -> None:
    rc, out, err = kubectl(version, "exec", "web", "--", "echo", "x", env=env)
    assert err.startswith("Error from server (BadRequest): SPDY/3.1 is not supported")
    assert "kubectl >= 1.30" in err
    assert "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true" in err
    assert (rc, out) == (1, "")


# Pods, containers and shells (one version is enough: these are server behaviours) -----------

V = "1.33"


def test_sh_only_pod_runs_sh_but_has_no_bash(kubectl: Kubectl) -> None:
    rc, out, _ = kubectl(V, "exec", "alpine", "--", "sh", "-c", "echo from sh; ls / >/dev/null")
    assert (rc, out) == (0, "from sh\n")
    rc, _, err = kubectl(V, "exec", "alpine", "--", "bash")
    assert 'exec: "bash": executable file not found in $PATH' in err
    assert rc == 1
    rc, _, err = kubectl(V, "exec", "alpine", "--", "/bin/bash")
    assert 'exec: "/bin/bash": stat /bin/bash: no such file or directory' in err
    # bash typed inside the pod's sh is not found either: PATH holds only allowed tools.
    rc, _, err = kubectl(V, "exec", "alpine", "--", "sh", "-c", "bash -c true")
    assert "bash: not found" in err
    assert rc == 127


def test_full_pod_has_bash_by_path(kubectl: Kubectl) -> None:
    rc, out, _ = kubectl(
        V, "exec", "web", "--", "/bin/bash", "-c", 'echo "$BASH_VERSION" "$GREETING"'
    )
    assert rc == 0
    assert re.fullmatch(r"\d+\.\d+\S* hello\n", out)


def test_multi_container_pod_defaults_to_the_first_or_takes_c(kubectl: Kubectl) -> None:
    rc, out, err = kubectl(V, "exec", "multi", "--", "sh", "-c", "echo $HOME")
    assert 'Defaulted container "app" out of: app, sidecar' in err
    assert rc == 0 and out.rstrip().endswith("/multi/app")
    rc, out, err = kubectl(V, "exec", "multi", "-c", "sidecar", "--", "sh", "-c", "echo $HOME")
    assert "Defaulted" not in err
    assert rc == 0 and out.rstrip().endswith("/multi/sidecar")


def test_completed_pod_is_refused_by_kubectl(kubectl: Kubectl) -> None:
    rc, _, err = kubectl(V, "exec", "done", "--", "true")
    assert "cannot exec into a container in a completed pod; current phase is Succeeded" in err
    assert rc == 1


# Authorization -------------------------------------------------------------------------------


def test_user_without_rights_is_forbidden(kubectl: Kubectl, kubesim: Kubesim) -> None:
    before = len(kubesim.transcript_events())
    rc, _, err = kubectl(V, "--context", "kubesim-bob", "exec", "web", "--", "true")
    assert err.strip() == (
        'Error from server (Forbidden): pods "web" is forbidden: User "bob" cannot get '
        'resource "pods" in API group "" in the namespace "default"'
    )
    assert rc == 1
    assert len(kubesim.transcript_events()) == before  # nothing ran


def test_exec_needs_create_on_pods_exec(kubectl: Kubectl) -> None:
    rc, _, err = kubectl(V, "--context", "kubesim-viewer", "exec", "web", "--", "true")
    assert err.strip() == (
        'Error from server (Forbidden): pods "web" is forbidden: User "viewer" cannot create '
        'resource "pods/exec" in API group "" in the namespace "default"'
    )
    assert rc == 1


def test_namespaced_user_is_allowed_only_in_her_namespace(kubectl: Kubectl) -> None:
    rc, out, _ = kubectl(
        V,
        "--context",
        "kubesim-alice",
        "-n",
        "dev",
        "exec",
        "api",
        "--",
        "sh",
        "-c",
        "echo $APP_ENV",
    )
    assert (rc, out) == (0, "dev\n")
    rc, _, err = kubectl(V, "--context", "kubesim-alice", "exec", "web", "--", "true")
    assert (
        'User "alice" cannot get resource "pods" in API group "" in the namespace "default"' in err
    )
    assert rc == 1


def test_impersonation_acts_as_the_impersonated_user(kubectl: Kubectl, kubesim: Kubesim) -> None:
    rc, out, _ = kubectl(
        V,
        "--context",
        "kubesim-webshell",
        "--as=alice",
        "-n",
        "dev",
        "exec",
        "api",
        "--",
        "echo",
        "as-alice",
    )
    assert (rc, out) == (0, "as-alice\n")
    start = kubesim.wait_for_event(
        lambda e: e["event"] == "start" and e["command"] == ["echo", "as-alice"]
    )
    assert start["user"] == "alice"
    assert start["impersonated_by"] == "webshell"
    assert "system:authenticated" in start["groups"]

    rc, _, err = kubectl(
        V, "--context", "kubesim-webshell", "--as=alice", "-n", "prod", "exec", "db", "--", "true"
    )
    assert 'pods "db" is forbidden: User "alice" cannot get resource "pods"' in err
    assert rc == 1


def test_impersonation_needs_the_impersonate_verb(kubectl: Kubectl) -> None:
    args = ("--context", "kubesim-bob", "--as=alice", "-n", "dev", "exec", "api", "--", "true")
    # With an empty discovery cache the refusal hits discovery first, where kubectl (as
    # against a real API server) cannot decode the Status and says only "unknown".
    rc, _, err = kubectl(V, *args)
    assert err.strip().endswith("Error from server (Forbidden): unknown")
    assert rc == 1
    # Once discovery is cached (any earlier command), the pod GET shows the real reason.
    kubectl(V, "--context", "kubesim-bob", "get", "ns")
    rc, _, err = kubectl(V, *args)
    assert err.strip() == (
        'Error from server (Forbidden): users "alice" is forbidden: User "bob" cannot '
        'impersonate resource "users" in API group "" at the cluster scope'
    )
    assert rc == 1


# kubectl get ---------------------------------------------------------------------------------


def _table(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


def test_get_pods_prints_the_standard_columns(kubectl: Kubectl) -> None:
    rc, out, err = kubectl(V, "get", "pods")
    assert rc == 0, err
    rows = _table(out)
    assert rows[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    by_name = {row[0]: row[1:4] for row in rows[1:]}
    assert by_name == {
        "web": ["1/1", "Running", "0"],
        "alpine": ["1/1", "Running", "0"],
        "multi": ["2/2", "Running", "0"],
        "done": ["0/1", "Completed", "0"],
    }
    assert all(re.fullmatch(r"\d+[smhd]\S*", row[4]) for row in rows[1:])


def test_get_pods_wide_all_namespaces_and_selectors(kubectl: Kubectl) -> None:
    rc, out, _ = kubectl(V, "get", "pods", "-o", "wide")
    rows = _table(out)
    assert rows[0] == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ]
    web = next(row for row in rows if row[0] == "web")
    assert re.fullmatch(r"10\.244\.0\.\d+", web[5]) and web[6:] == ["kubesim", "<none>", "<none>"]

    rc, out, _ = kubectl(V, "get", "pods", "-A")
    rows = _table(out)
    assert rows[0][:2] == ["NAMESPACE", "NAME"]
    assert {(r[0], r[1]) for r in rows[1:]} >= {("dev", "api"), ("prod", "db"), ("default", "web")}

    rc, out, _ = kubectl(V, "get", "pods", "-l", "app=web", "-o", "name")
    assert (rc, out) == (0, "pod/web\n")


def test_get_pods_in_chunks_lists_every_pod_once(kubectl: Kubectl) -> None:
    rc, whole, _ = kubectl(V, "get", "pods", "-A", "-o", "name", "--chunk-size=0")
    assert rc == 0 and len(whole.splitlines()) == 6
    # kubectl follows the continue tokens; with a table it prints one header for all chunks.
    assert kubectl(V, "get", "pods", "-A", "-o", "name", "--chunk-size=2") == (0, whole, "")
    rc, out, _ = kubectl(V, "get", "pods", "-A", "--chunk-size=4")
    rows = _table(out)
    assert rc == 0 and rows[0][:2] == ["NAMESPACE", "NAME"] and len(rows) == 7


def test_an_expired_continue_token_is_answered_as_the_api_server_answers_it(
    expiring_kubesim: Kubesim, kubectl_binaries: dict[str, Path], tmp_path: Path
) -> None:
    expiring = Kubectl(expiring_kubesim, kubectl_binaries, tmp_path / "home")
    rc, whole, _ = expiring(V, "get", "pods", "-A", "-o", "name", "--chunk-size=0")
    assert rc == 0 and len(whole.splitlines()) == 6
    # The second chunk's token has expired: kubectl reports the server's 410 Expired as such.
    rc, out, err = expiring(V, "get", "pods", "-A", "-o", "name", "--chunk-size=2")
    assert rc == 1, (out, err)
    assert "Error from server (Expired): The provided continue parameter is too old" in err


def test_get_namespaces(kubectl: Kubectl) -> None:
    rc, out, _ = kubectl(V, "get", "ns")
    assert rc == 0
    rows = _table(out)
    assert rows[0] == ["NAME", "STATUS", "AGE"]
    assert [row[:2] for row in rows[1:]] == [
        ["default", "Active"],
        ["dev", "Active"],
        ["prod", "Active"],
    ]


def test_listing_is_forbidden_in_kubernetes_words(kubectl: Kubectl) -> None:
    rc, _, err = kubectl(V, "--context", "kubesim-bob", "get", "pods")
    assert err.strip() == (
        'Error from server (Forbidden): pods is forbidden: User "bob" cannot list resource '
        '"pods" in API group "" in the namespace "default"'
    )
    assert rc == 1
