"""The exec upstream's pure parts: the Status on channel 3 and the request's query."""

import json
from urllib.parse import parse_qs, urlsplit

from terminals.kube.exec import KubernetesError, exec_path, parse_status


def status(**fields):
    return json.dumps({"metadata": {}, **fields}).encode()


def test_success_is_exit_code_zero():
    assert parse_status(status(status="Success")).code == 0


def test_the_exit_code_comes_from_the_exitcode_cause_wherever_it_stands():
    raw = status(
        status="Failure",
        reason="NonZeroExitCode",
        message="command terminated with non-zero exit code: exit code 3",
        details={
            "causes": [{"reason": "Other", "message": "x"}, {"reason": "ExitCode", "message": "3"}]
        },
    )
    assert parse_status(raw).code == 3


def test_a_missing_executable_is_recognised_for_shell_fallback():
    message = (
        "Internal error occurred: error executing command in container: failed to exec in "
        'container: OCI runtime exec failed: exec: "bash": executable file not found in $PATH'
    )
    result = parse_status(
        status(status="Failure", reason="InternalError", message=message, code=500)
    )
    assert result.code is None
    assert result.executable_not_found
    assert not parse_status(
        status(status="Failure", reason="InternalError", message="boom")
    ).executable_not_found


def test_no_status_and_garbage_give_no_exit_code():
    assert parse_status(b"").code is None
    assert parse_status(b"plain text error").message == "plain text error"
    assert parse_status(b"[1]").code is None
    broken = status(
        status="Failure",
        reason="NonZeroExitCode",
        details={"causes": [{"reason": "ExitCode", "message": "x"}]},
    )
    assert parse_status(broken).code is None


def test_the_query_is_pod_exec_options():
    path = exec_path("dev", "api-0", ["/bin/sh", "-c", "echo a b"], "main")
    url = urlsplit(path)
    assert url.path == "/api/v1/namespaces/dev/pods/api-0/exec"
    query = parse_qs(url.query)
    assert query["command"] == ["/bin/sh", "-c", "echo a b"]
    assert query["container"] == ["main"]
    assert query["tty"] == query["stdin"] == query["stdout"] == ["true"]
    assert "stderr" not in query  # tty merges stderr into stdout


def test_a_status_body_becomes_a_readable_error():
    body = json.dumps(
        {"kind": "Status", "reason": "Forbidden", "message": "pods is forbidden"}
    ).encode()
    error = KubernetesError.from_response(403, body)
    assert (error.http_status, error.reason, error.message) == (
        403,
        "Forbidden",
        "pods is forbidden",
    )
    assert KubernetesError.from_response(502, b"").message == "HTTP 502"
