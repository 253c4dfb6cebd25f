"""Kubernetes API objects built from the configuration: discovery, namespaces, pods, Tables."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from . import KUBE_VERSION
from .config import ClusterConfig, Namespace, Pod

NODE_NAME = "kubesim"
HOST_IP = "127.0.0.1"
RESOURCE_VERSION = "1"
AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created."
)

FIRST_POD_IP = ipaddress.IPv4Address("10.244.0.10")

_UID_NAMESPACE = uuid.UUID("6f3a2c1e-8d4b-4e57-9c1a-5b0e7d2f4a10")


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(seconds: float) -> str:
    """The Age column: ``k8s.io/apimachinery/pkg/util/duration.HumanDuration``."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d" if hours % 24 == 0 else f"{days}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return f"{days // 365}y" if days % 365 == 0 else f"{days // 365}y{days % 365}d"
    return f"{days // 365}y"


def wants_table(accept: str) -> bool:
    """Whether the Accept header asks for a ``meta.k8s.io`` Table (kubectl get does)."""
    return any("as=table" in part.replace(" ", "").lower() for part in accept.split(","))


# Label selectors --------------------------------------------------------------------------

Selector = Callable[[Mapping[str, str]], bool]
_SET_EXPR = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_KEY = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_./]*$")


def parse_label_selector(text: str) -> Selector:
    """Parse ``a=b,c!=d,e,!f,g in (x,y),h notin (z)``; raise ValueError if malformed."""
    tests: list[Selector] = []
    for term in _split_terms(text):
        tests.append(_selector_term(term))
    return lambda labels: all(test(labels) for test in tests)


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def _selector_term(term: str) -> Selector:
    match = _SET_EXPR.match(term)
    if match:
        key, op, values = match.group(1), match.group(2), match.group(3)
        options = {v.strip() for v in values.split(",") if v.strip()}
        _check_key(key, term)
        if op == "in":
            return lambda labels: labels.get(key) in options
        return lambda labels: labels.get(key) not in options
    for op in ("!=", "==", "="):
        if op in term:
            key, _, value = (part.strip() for part in term.partition(op))
            _check_key(key, term)
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if term.startswith("!"):
        key = term[1:].strip()
        _check_key(key, term)
        return lambda labels: key not in labels
    _check_key(term, term)
    return lambda labels: term in labels


def _check_key(key: str, term: str) -> None:
    if not _KEY.match(key):
        raise ValueError(f"unable to parse requirement: {term!r}")


# Chunked lists ----------------------------------------------------------------------------

T = TypeVar("T")


class ContinueExpired(Exception):
    """A continue token older than the cluster keeps lists for (the API server's 410)."""

    MESSAGE = (
        "The provided continue parameter is too old to display a consistent list result. "
        "You can start a new list without the continue parameter, or use the continue token "
        "in this response to retrieve the remainder of the results. Continuing with the "
        "provided token results in an inconsistent list - objects that were created, "
        "modified, or deleted between the time the first chunk was returned and now may show "
        "up in the list."
    )


def paginate(
    items: Sequence[T], limit: str, token: str, expires_after: float | None = None
) -> tuple[Sequence[T], dict[str, Any]]:
    """One chunk of a list (``?limit=&continue=``) and the list's metadata.

    As the API server: a chunk of at most ``limit`` items, ``continue`` and
    ``remainingItemCount`` in the metadata while more follow, everything without a limit.
    The token carries the position (the configuration never changes while kubesim runs) and
    when it was written. Raises ValueError for a limit that is not a number or a token kubesim
    did not write, and :class:`ContinueExpired` for a token older than ``expires_after``
    seconds.
    """
    start = _continue_position(token, expires_after) if token else 0
    metadata: dict[str, Any] = {"resourceVersion": RESOURCE_VERSION}
    try:
        size = int(limit) if limit else 0
    except ValueError:
        raise ValueError(f"invalid limit {limit!r}: not a number") from None
    if size <= 0:
        return items[start:], metadata
    end = start + size
    if end < len(items):
        metadata["continue"] = _continue_token(end)
        metadata["remainingItemCount"] = len(items) - end
    return items[start:end], metadata


def _continue_token(position: int) -> str:
    # Shaped like the API server's (base64 of JSON), so clients see nothing unusual; "at" is
    # kubesim's own: when the token was written (its expiry stands for etcd's compaction).
    key = json.dumps(
        {"v": "meta.k8s.io/v1", "rv": int(RESOURCE_VERSION), "start": position, "at": time.time()}
    )
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _continue_position(token: str, expires_after: float | None = None) -> int:
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, written = key["start"], key.get("at", 0.0)
    except (ValueError, binascii.Error, TypeError, KeyError, AttributeError):
        raise ValueError("continue key is not valid") from None
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ValueError("continue key is not valid")
    if isinstance(written, bool) or not isinstance(written, (int, float)):
        raise ValueError("continue key is not valid")
    if expires_after is not None and time.time() - written >= expires_after:
        raise ContinueExpired(ContinueExpired.MESSAGE)
    return position


# Objects ----------------------------------------------------------------------------------


class Resources:
    """Renders the configured cluster as API objects; creation times are the server start.

    The configuration never changes while the server runs, so each pod is rendered once and
    its object reused by every later answer (a list of thousands of pods then costs only its
    JSON encoding): callers must not change what they are given.
    """

    def __init__(
        self,
        config: ClusterConfig,
        started: datetime,
        workdirs: Mapping[tuple[str, str, str], str] | None = None,
    ) -> None:
        self.config = config
        self.started = started
        self.workdirs = dict(workdirs or {})
        self._ips = {(p.namespace, p.name): pod_ip(i) for i, p in enumerate(config.pods())}
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}
        self._list_items: dict[tuple[str, str], dict[str, Any]] = {}

    # discovery

    def version(self) -> dict[str, Any]:
        """``/version``."""
        major, minor, patch = KUBE_VERSION
        return {
            "major": str(major),
            "minor": str(minor),
            "gitVersion": f"v{major}.{minor}.{patch}+kubesim",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    @staticmethod
    def api_versions(server_address: str) -> dict[str, Any]:
        """``/api`` (legacy discovery; clients fall back from aggregated discovery)."""
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
            ],
        }

    @staticmethod
    def api_groups() -> dict[str, Any]:
        """``/apis``: no named groups."""
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}

    @staticmethod
    def api_resources() -> dict[str, Any]:
        """``/api/v1``."""
        return {
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                {
                    "name": "namespaces",
                    "singularName": "namespace",
                    "namespaced": False,
                    "kind": "Namespace",
                    "verbs": ["get", "list"],
                    "shortNames": ["ns"],
                },
                {
                    "name": "pods",
                    "singularName": "pod",
                    "namespaced": True,
                    "kind": "Pod",
                    "verbs": ["get", "list"],
                    "shortNames": ["po"],
                    "categories": ["all"],
                },
                {
                    "name": "pods/exec",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "PodExecOptions",
                    "verbs": ["create", "get"],
                },
            ],
        }

    # namespaces

    def namespace(self, ns: Namespace) -> dict[str, Any]:
        """A Namespace object."""
        return {
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": self._metadata(
                "", ns.name, {"kubernetes.io/metadata.name": ns.name, **ns.labels}
            ),
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    def namespace_list(self, namespaces: Sequence[Namespace]) -> dict[str, Any]:
        """A NamespaceList."""
        items = [
            {k: v for k, v in self.namespace(n).items() if k not in ("kind", "apiVersion")}
            for n in namespaces
        ]
        return {
            "kind": "NamespaceList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": RESOURCE_VERSION},
            "items": items,
        }

    def namespace_table(self, namespaces: Sequence[Namespace], now: datetime) -> dict[str, Any]:
        """``kubectl get ns`` columns: NAME STATUS AGE."""
        columns = [
            _column("Name", "Name must be unique within a namespace.", fmt="name"),
            _column("Status", "The status of the namespace"),
            _column("Age", AGE_DESCRIPTION),
        ]
        age = human_duration((now - self.started).total_seconds())
        rows = [_row([n.name, "Active", age], self.namespace(n)["metadata"]) for n in namespaces]
        return _table(columns, rows)

    # pods

    def pod(self, pod: Pod) -> dict[str, Any]:
        """A Pod object (the same one every time: do not change it)."""
        key = (pod.namespace, pod.name)
        if key not in self._pods:
            self._pods[key] = self._render_pod(pod)
        return self._pods[key]

    def _list_item(self, pod: Pod) -> dict[str, Any]:
        """A pod as an item of a PodList: without kind and apiVersion, as the API server."""
        key = (pod.namespace, pod.name)
        if key not in self._list_items:
            self._list_items[key] = {
                k: v for k, v in self.pod(pod).items() if k not in ("kind", "apiVersion")
            }
        return self._list_items[key]

    def _render_pod(self, pod: Pod) -> dict[str, Any]:
        running = pod.phase == "Running"
        scheduled = pod.phase != "Pending"
        started = timestamp(self.started)
        spec: dict[str, Any] = {
            "containers": [
                {
                    "name": c.name,
                    "image": c.image,
                    "workingDir": self.workdirs.get(
                        (pod.namespace, pod.name, c.name), c.working_dir
                    ),
                    "env": [{"name": k, "value": v} for k, v in c.env.items()],
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
                for c in pod.containers
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
        }
        for c in spec["containers"]:
            if c["workingDir"] is None:
                del c["workingDir"]
        status: dict[str, Any] = {"phase": pod.phase}
        if scheduled:
            spec["nodeName"] = NODE_NAME
            ip = self._ips[(pod.namespace, pod.name)]
            status.update(
                conditions=[
                    {
                        "type": t,
                        "status": "True" if running or t == "PodScheduled" else "False",
                        "lastProbeTime": None,
                        "lastTransitionTime": started,
                    }
                    for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
                ],
                hostIP=HOST_IP,
                hostIPs=[{"ip": HOST_IP}],
                podIP=ip,
                podIPs=[{"ip": ip}],
                startTime=started,
                containerStatuses=[
                    self._container_status(pod, c.name, c.image) for c in pod.containers
                ],
            )
        else:
            status["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "lastProbeTime": None,
                    "lastTransitionTime": started,
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: kubesim does not run this pod.",
                }
            ]
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": self._metadata(
                pod.namespace, pod.name, dict(pod.labels), dict(pod.annotations)
            ),
            "spec": spec,
            "status": status,
        }

    def _container_status(self, pod: Pod, name: str, image: str) -> dict[str, Any]:
        started = timestamp(self.started)
        state: dict[str, Any]
        if pod.phase == "Running":
            state = {"running": {"startedAt": started}}
        else:
            failed = pod.phase == "Failed"
            state = {
                "terminated": {
                    "exitCode": 1 if failed else 0,
                    "reason": "Error" if failed else "Completed",
                    "startedAt": started,
                    "finishedAt": started,
                }
            }
        digest = hashlib.sha256(f"{pod.namespace}/{pod.name}/{name}".encode()).hexdigest()
        return {
            "name": name,
            "state": state,
            "lastState": {},
            "ready": pod.phase == "Running",
            "restartCount": 0,
            "image": image,
            "imageID": "",
            "started": pod.phase == "Running",
            "containerID": f"containerd://{digest}",
        }

    def pod_list(
        self, pods: Sequence[Pod], metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A PodList (items without kind/apiVersion, as the API server sends them)."""
        items = [self._list_item(p) for p in pods]
        return {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": metadata or {"resourceVersion": RESOURCE_VERSION},
            "items": items,
        }

    def pod_table(
        self, pods: Sequence[Pod], now: datetime, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``kubectl get pods`` columns (and ``-o wide`` ones with priority 1)."""
        columns = [
            _column("Name", "Name must be unique within a namespace.", fmt="name"),
            _column("Ready", "The aggregate readiness state of this pod for accepting traffic."),
            _column("Status", "The aggregate status of the containers in this pod."),
            _column(
                "Restarts",
                "The number of times the containers in this pod have been restarted and when "
                "the last container in this pod has restarted.",
            ),
            _column("Age", AGE_DESCRIPTION),
            _column("IP", "The IP address assigned to the pod", priority=1),
            _column("Node", "The name of the node the pod is scheduled onto", priority=1),
            _column(
                "Nominated Node",
                "The name of the node where the pod is nominated to run",
                priority=1,
            ),
            _column("Readiness Gates", "The readiness gates of the pod", priority=1),
        ]
        age = human_duration((now - self.started).total_seconds())
        rows = []
        for pod in pods:
            total = len(pod.containers)
            ready = total if pod.phase == "Running" else 0
            status = {"Succeeded": "Completed", "Failed": "Error"}.get(pod.phase, pod.phase)
            scheduled = pod.phase != "Pending"
            ip = self._ips[(pod.namespace, pod.name)] if scheduled else "<none>"
            node = NODE_NAME if scheduled else "<none>"
            cells = [pod.name, f"{ready}/{total}", status, "0", age, ip, node, "<none>", "<none>"]
            rows.append(_row(cells, self.pod(pod)["metadata"]))
        return _table(columns, rows, metadata)

    def _metadata(
        self,
        namespace: str,
        name: str,
        labels: dict[str, str],
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if namespace:
            meta["namespace"] = namespace
        meta["uid"] = str(uuid.uuid5(_UID_NAMESPACE, f"{namespace}/{name}"))
        meta["resourceVersion"] = RESOURCE_VERSION
        meta["creationTimestamp"] = timestamp(self.started)
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        return meta


def pod_ip(index: int) -> str:
    """The IP of the ``index``-th pod: 10.244.0.10, 10.244.0.11, … (10.244.1.0 after .255)."""
    return str(FIRST_POD_IP + index)


def _column(name: str, description: str, fmt: str = "", priority: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "format": fmt,
        "description": description,
        "priority": priority,
    }


def _row(cells: list[str], metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
        },
    }


def _table(
    columns: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata or {"resourceVersion": RESOURCE_VERSION},
        "columnDefinitions": columns,
        "rows": rows,
    }


def now() -> datetime:
    """The current time in UTC (a seam for tests)."""
    return datetime.now(UTC)
