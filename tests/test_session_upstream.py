"""The exec side of a session: PodShell's container and its permission, Upstream's refusals.

PodShell runs against a :class:`FakeUpstream` and a :class:`Gate` (the permission and the
denial recorder); Upstream's mapping of the API server's errors is driven with
:class:`KubernetesError` instances, as ``get_json`` and ``open_exec`` raise them.
"""

from __future__ import annotations

from typing import Any

import pytest

from terminals.kube.exec import ExecStatus, KubernetesError, Output
from terminals.permissions import ExecTarget
from terminals.protocol import CloseCode
from terminals.session.ending import EndSession
from terminals.session.launcher import PodShell
from terminals.session.upstream import Upstream

SHELLS = ["/bin/bash", "/bin/sh"]
POD = ExecTarget("kubesim", "default", "web-0")
# The annotated default is not the first container: kubectl's choice, not the list's.
RUNNING_POD = {
    "metadata": {"annotations": {"kubectl.kubernetes.io/default-container": "app"}},
    "spec": {"containers": [{"name": "istio-proxy"}, {"name": "app"}]},
    "status": {"phase": "Running"},
}


class FakeStream:
    """A shell that has printed its prompt."""

    def __init__(self) -> None:
        self.closed = False

    async def receive(self) -> Output | ExecStatus:
        return Output(b"$ ")

    async def send_stdin(self, data: bytes) -> None: ...

    async def send_resize(self, cols: int, rows: int) -> None: ...

    async def close(self) -> None:
        self.closed = True


class FakeUpstream:
    """The cluster side: logs what the shell asks of it."""

    def __init__(self, pod: dict[str, Any] = RUNNING_POD) -> None:
        self.pod = pod
        self.log: list[str] = []

    async def connect(self) -> None:
        self.log.append("connect")

    async def get_pod(self) -> dict[str, Any]:
        self.log.append("get pod")
        return self.pod

    async def pod_or_none(self) -> dict[str, Any] | None:
        self.log.append("look at pod")
        return None if self.pod is None else self.pod

    async def open(self, container: str, command: list[str]) -> FakeStream:
        self.log.append(f"exec {' '.join(command)} in {container}")
        return FakeStream()

    async def close(self) -> None:
        self.log.append("close")


class Gate:
    """Django's permission for ``allowed`` containers only; keeps what it was asked and told."""

    def __init__(self, *allowed: str) -> None:
        self.allowed = set(allowed)
        self.asked: list[ExecTarget] = []
        self.denials: list[tuple[ExecTarget, CloseCode, str]] = []

    async def permitted(self, target: ExecTarget) -> bool:
        self.asked.append(target)
        return target.container in self.allowed

    async def record_denial(self, target: ExecTarget, code: CloseCode, message: str) -> None:
        self.denials.append((target, code, message))


def shell(upstream: FakeUpstream, gate: Gate, target: ExecTarget = POD) -> PodShell:
    return PodShell(upstream, target, SHELLS, gate.permitted, gate.record_denial)


def no_size() -> None:
    return None


# PodShell: the container, and the permission for it.


async def test_without_a_container_the_pods_default_runs_once_permitted_for_it():
    upstream, gate = FakeUpstream(), Gate("app")

    launched = await shell(upstream, gate).launch(no_size)

    assert launched.container == "app"
    assert launched.command == ["/bin/bash"]
    assert gate.asked == [ExecTarget("kubesim", "default", "web-0", "app")]
    assert upstream.log == ["connect", "get pod", "exec /bin/bash in app"]
    assert gate.denials == []


async def test_a_default_container_the_user_may_not_open_is_forbidden_and_written_down():
    # The rule grants the sidecar only; the admission check ("any container") passed.
    upstream, gate = FakeUpstream(), Gate("istio-proxy")

    with pytest.raises(EndSession) as raised:
        await shell(upstream, gate).launch(no_size)

    resolved = ExecTarget("kubesim", "default", "web-0", "app")
    message = "You may not open a terminal on kubesim/default/web-0/app."
    assert raised.value.ending.code == CloseCode.FORBIDDEN
    assert raised.value.ending.message == message
    assert gate.denials == [(resolved, CloseCode.FORBIDDEN, message)]
    assert upstream.log == ["connect", "get pod"]  # no exec opened


async def test_an_explicit_container_needs_no_pod_lookup_nor_a_second_check():
    upstream, gate = FakeUpstream(), Gate()  # admission asked already, for this container
    target = ExecTarget("kubesim", "default", "web-0", "istio-proxy")

    launched = await shell(upstream, gate, target).launch(no_size)

    assert launched.container == "istio-proxy"
    # The pod is looked at only for the page's list of containers; its refusal ends nothing.
    assert upstream.log == ["connect", "look at pod", "exec /bin/bash in istio-proxy"]
    assert gate.asked == []
    assert launched.containers == [c["name"] for c in RUNNING_POD["spec"]["containers"]]


async def test_without_the_pod_object_the_shell_still_starts_with_no_container_list():
    upstream, gate = FakeUpstream(), Gate()
    upstream.pod = None  # the cluster's RBAC allows exec but not get
    launched = await shell(upstream, gate, ExecTarget("kubesim", "default", "web-0", "app")).launch(
        no_size
    )
    assert launched.containers == []


async def test_closing_the_shell_hangs_up_the_upstream():
    upstream, gate = FakeUpstream(), Gate("app")
    pod_shell = shell(upstream, gate)
    await pod_shell.launch(no_size)

    await pod_shell.close()

    assert upstream.log[-1] == "close"


# Upstream: what the API server's refusals become.


def upstream(recorded: list[tuple[ExecTarget, CloseCode, str]], target: ExecTarget = POD):
    async def record_denial(target: ExecTarget, code: CloseCode, message: str) -> None:
        recorded.append((target, code, message))

    return Upstream(target, [], connect_timeout=1, keepalive=20, record_denial=record_denial)


async def test_a_pod_the_cluster_does_not_have_is_not_found_in_its_words():
    recorded: list[tuple[ExecTarget, CloseCode, str]] = []
    error = KubernetesError(404, "NotFound", 'pods "web-0" not found')

    ending = (await upstream(recorded)._refusal(error)).ending

    assert (ending.code, ending.message) == (CloseCode.NOT_FOUND, 'pods "web-0" not found')
    assert recorded == []


async def test_a_404_without_a_message_still_says_what_is_missing():
    ending = (await upstream([])._refusal(KubernetesError(404, "NotFound", ""))).ending

    assert (ending.code, ending.message) == (CloseCode.NOT_FOUND, "No such pod or container.")


async def test_a_container_the_pod_does_not_have_is_not_found():
    recorded: list[tuple[ExecTarget, CloseCode, str]] = []
    message = "container db is not valid for pod web-0"
    error = KubernetesError(400, "BadRequest", message)

    ending = (await upstream(recorded)._refusal(error, "db")).ending

    assert (ending.code, ending.message) == (CloseCode.NOT_FOUND, message)
    assert recorded == []


async def test_other_bad_requests_are_upstream_failures():
    error = KubernetesError(400, "BadRequest", "Upgrade request required")

    ending = (await upstream([])._refusal(error)).ending

    assert ending.code == CloseCode.UPSTREAM_FAILED
    assert ending.message == "The cluster refused: Upgrade request required"


@pytest.mark.parametrize("status", [401, 403])
async def test_the_clusters_rbac_refusing_is_a_4502_and_a_denial_for_the_container(status):
    recorded: list[tuple[ExecTarget, CloseCode, str]] = []
    message = (
        'pods "web-0" is forbidden: User "alice" cannot create resource "pods/exec" '
        'in API group "" in the namespace "default"'
    )
    error = KubernetesError(status, "Forbidden", message)

    ending = (await upstream(recorded)._refusal(error, "app")).ending

    assert ending.code == CloseCode.UPSTREAM_FAILED
    assert ending.message == f"The cluster refused: {message}"
    assert recorded == [
        (
            ExecTarget("kubesim", "default", "web-0", "app"),
            CloseCode.UPSTREAM_FAILED,
            f"The cluster refused: {message}",
        )
    ]


async def test_a_refusal_of_the_pod_lookup_is_written_down_for_the_asked_container():
    recorded: list[tuple[ExecTarget, CloseCode, str]] = []
    asked = ExecTarget("kubesim", "default", "web-0", "istio-proxy")
    error = KubernetesError(403, "Forbidden", "forbidden")

    await upstream(recorded, asked)._refusal(error)

    assert [target for target, _, _ in recorded] == [asked]


async def test_a_server_error_is_a_4502_without_a_denial():
    recorded: list[tuple[ExecTarget, CloseCode, str]] = []
    error = KubernetesError(500, "InternalError", "etcdserver: request timed out")

    ending = (await upstream(recorded)._refusal(error, "app")).ending

    assert ending.code == CloseCode.UPSTREAM_FAILED
    assert ending.message == "The cluster refused: etcdserver: request timed out"
    assert recorded == []


async def test_a_refusal_without_a_message_gives_the_reason():
    ending = (await upstream([])._refusal(KubernetesError(503, "ServiceUnavailable", ""))).ending

    assert ending.message == "The cluster refused: ServiceUnavailable"


async def test_a_cluster_whose_kubeconfig_is_missing_is_not_configured(settings, tmp_path):
    settings.TERMINALS = {
        **settings.TERMINALS,
        "CLUSTERS": {"gone": {"kubeconfig": str(tmp_path / "missing"), "context": "gone"}},
    }
    cluster = upstream([], ExecTarget("gone", "default", "web-0"))

    with pytest.raises(EndSession) as raised:
        await cluster.connect()

    assert raised.value.ending.code == CloseCode.UPSTREAM_FAILED
    assert raised.value.ending.message == "The cluster is not configured."
    await cluster.close()  # nothing was opened: closing is still safe
