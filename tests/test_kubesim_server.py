"""The HTTP API in-process: discovery, objects, errors, authentication and exec validation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubesim.config import parse_config
from kubesim.server import create_app

CONFIG = parse_config(
    {
        "users": [
            {"name": "admin", "token": "admin-token", "groups": ["system:masters"]},
            {"name": "webshell", "token": "webshell-token"},
            {"name": "alice", "token": "alice-token"},
            {"name": "bob", "token": "bob-token"},
        ],
        "rbac": [
            {
                "subjects": [{"kind": "Group", "name": "system:masters"}],
                "verbs": ["*"],
                "resources": ["*"],
                "namespaces": ["*"],
            },
            {
                "subjects": [{"kind": "User", "name": "webshell"}],
                "verbs": ["get", "list", "impersonate"],
                "resources": ["pods", "users", "groups"],
                "namespaces": ["*"],
            },
            {
                "subjects": [{"kind": "User", "name": "alice"}],
                "verbs": ["get", "list", "create"],
                "resources": ["pods", "pods/exec"],
                "namespaces": ["dev"],
            },
            {
                "subjects": [{"kind": "Group", "name": "auditors"}],
                "verbs": ["list"],
                "resources": ["pods"],
                "namespaces": ["default"],
            },
        ],
        "namespaces": [
            {
                "name": "default",
                "pods": [
                    {"name": "web", "labels": {"app": "web"}, "containers": [{"name": "main"}]},
                    {"name": "multi", "containers": [{"name": "app"}, {"name": "sidecar"}]},
                    {"name": "waiting", "phase": "Pending", "containers": [{"name": "main"}]},
                    {"name": "done", "phase": "Succeeded", "containers": [{"name": "main"}]},
                    {
                        "name": "pinned",
                        "annotations": {"kubectl.kubernetes.io/default-container": "sidecar"},
                        "containers": [{"name": "app"}, {"name": "sidecar"}],
                    },
                ],
            },
            {"name": "dev", "pods": [{"name": "api", "containers": [{"name": "main"}]}]},
        ],
    }
)
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
WS_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Protocol": "v5.channel.k8s.io",
}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[TestClient]:
    """A client of an in-process kubesim app (plain HTTP)."""
    async with TestClient(TestServer(create_app(CONFIG, tmp_path))) as client:
        yield client


def auth(user: str, **extra: str) -> dict[str, str]:
    """Headers with a user's token."""
    return {"Authorization": f"Bearer {user}-token", **extra}


async def get_status(api: TestClient, path: str, headers: dict[str, str], method: str = "GET"):
    """(HTTP status, Status message) of a refused request, checking the body is a Status."""
    async with api.request(method, path, headers=headers) as response:
        body: dict[str, Any] = await response.json()
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == response.status
    return response.status, body["message"]


# Discovery and authentication -------------------------------------------------------------


async def test_version_is_public_but_a_bad_token_is_still_refused(api: TestClient) -> None:
    async with api.get("/version") as response:
        assert response.status == 200
        assert (await response.json())["gitVersion"].startswith("v1.33.")
    assert await get_status(api, "/version", {"Authorization": "Bearer nope"}) == (
        401,
        "Unauthorized",
    )


async def test_everything_else_needs_a_token(api: TestClient) -> None:
    assert await get_status(api, "/api", {}) == (401, "Unauthorized")
    assert await get_status(api, "/api/v1/namespaces/default/pods", {}) == (401, "Unauthorized")


async def test_discovery(api: TestClient) -> None:
    async with api.get("/api", headers=auth("bob")) as response:
        assert (await response.json())["versions"] == ["v1"]
    async with api.get("/apis", headers=auth("bob")) as response:
        assert (await response.json())["groups"] == []
    async with api.get("/api/v1", headers=auth("bob")) as response:
        assert response.content_type == "application/json"
        resources = (await response.json())["resources"]
    assert {r["name"]: r["kind"] for r in resources} == {
        "namespaces": "Namespace",
        "pods": "Pod",
        "pods/exec": "PodExecOptions",
    }


async def test_unknown_paths_and_methods_are_status_errors(api: TestClient) -> None:
    assert await get_status(api, "/api/v1/secrets", auth("admin")) == (
        404,
        "the server could not find the requested resource",
    )
    status, _ = await get_status(api, "/api/v1/namespaces/default/pods", auth("admin"), "PUT")
    assert status == 405


# Namespaces and pods ----------------------------------------------------------------------


async def test_namespaces(api: TestClient) -> None:
    async with api.get("/api/v1/namespaces", headers=auth("admin")) as response:
        assert [n["metadata"]["name"] for n in (await response.json())["items"]] == [
            "default",
            "dev",
        ]
    async with api.get("/api/v1/namespaces/dev", headers=auth("admin")) as response:
        assert (await response.json())["metadata"]["name"] == "dev"
    assert await get_status(api, "/api/v1/namespaces/nope", auth("admin")) == (
        404,
        'namespaces "nope" not found',
    )
    assert await get_status(api, "/api/v1/namespaces/dev", auth("alice")) == (
        403,
        'namespaces "dev" is forbidden: User "alice" cannot get resource "namespaces" '
        'in API group "" in the namespace "dev"',
    )


async def test_pod_lists_tables_and_selectors(api: TestClient) -> None:
    path = "/api/v1/namespaces/default/pods"
    async with api.get(path, headers=auth("admin")) as response:
        body = await response.json()
    assert body["kind"] == "PodList"
    assert [p["metadata"]["name"] for p in body["items"]] == [
        "web",
        "multi",
        "waiting",
        "done",
        "pinned",
    ]
    async with api.get(path, headers=auth("admin", Accept=TABLE)) as response:
        table = await response.json()
    assert table["kind"] == "Table"
    assert table["rows"][0]["cells"][:3] == ["web", "1/1", "Running"]
    async with api.get(path, params={"labelSelector": "app=web"}, headers=auth("admin")) as r:
        assert [p["metadata"]["name"] for p in (await r.json())["items"]] == ["web"]
    status, message = await get_status(api, f"{path}?labelSelector=a%20b", auth("admin"))
    assert (status, message) == (400, "unable to parse requirement: 'a b'")
    async with api.get("/api/v1/namespaces/nope/pods", headers=auth("admin")) as response:
        assert (await response.json())["items"] == []  # as upstream: an empty list


async def test_pod_lists_come_in_chunks_when_a_limit_is_given(api: TestClient) -> None:
    names: list[str] = []
    query = {"limit": "4"}
    while True:
        async with api.get("/api/v1/pods", params=query, headers=auth("admin")) as response:
            body = await response.json()
        names += [p["metadata"]["name"] for p in body["items"]]
        if "continue" not in body["metadata"]:
            break
        assert body["metadata"]["remainingItemCount"] == 2
        query = {"limit": "4", "continue": body["metadata"]["continue"]}
    assert names == ["web", "multi", "waiting", "done", "pinned", "api"]
    async with api.get(
        "/api/v1/pods", params={"limit": "2"}, headers=auth("admin", Accept=TABLE)
    ) as r:
        table = await r.json()
    assert [row["cells"][0] for row in table["rows"]] == ["web", "multi"]
    assert table["metadata"]["continue"]
    status, message = await get_status(api, "/api/v1/pods?limit=2&continue=x", auth("admin"))
    assert (status, message) == (400, "continue key is not valid")


async def test_all_namespaces_needs_the_cluster_scope(api: TestClient) -> None:
    async with api.get("/api/v1/pods", headers=auth("admin")) as response:
        assert len((await response.json())["items"]) == 6
    assert await get_status(api, "/api/v1/pods", auth("alice")) == (
        403,
        'pods is forbidden: User "alice" cannot list resource "pods" in API group "" '
        "at the cluster scope",
    )


async def test_single_pod(api: TestClient) -> None:
    async with api.get("/api/v1/namespaces/dev/pods/api", headers=auth("alice")) as response:
        assert (await response.json())["metadata"]["namespace"] == "dev"
    async with api.get("/api/v1/namespaces/dev/pods/api", headers=auth("admin", Accept=TABLE)) as r:
        assert [row["cells"][0] for row in (await r.json())["rows"]] == ["api"]
    assert await get_status(api, "/api/v1/namespaces/dev/pods/nope", auth("alice")) == (
        404,
        'pods "nope" not found',
    )


async def test_impersonation_headers(api: TestClient) -> None:
    as_alice = auth("webshell", **{"Impersonate-User": "alice"})
    async with api.get("/api/v1/namespaces/dev/pods", headers=as_alice) as response:
        assert response.status == 200
    status, message = await get_status(api, "/api/v1/namespaces/default/pods", as_alice)
    assert status == 403 and 'User "alice" cannot list' in message
    # Impersonated groups count; Impersonate-Group may repeat.
    headers = [
        ("Authorization", "Bearer webshell-token"),
        ("Impersonate-User", "carol"),
        ("Impersonate-Group", "staff"),
        ("Impersonate-Group", "auditors"),
    ]
    async with api.get("/api/v1/namespaces/default/pods", headers=headers) as response:
        assert response.status == 200
    assert await get_status(api, "/api", auth("bob", **{"Impersonate-User": "alice"})) == (
        403,
        'users "alice" is forbidden: User "bob" cannot impersonate resource "users" in '
        'API group "" at the cluster scope',
    )


# Exec validation (the upgrade itself is tested against the running server) ----------------

EXEC = "/api/v1/namespaces/{ns}/pods/{pod}/exec?command=true"


@pytest.mark.parametrize(
    ("user", "ns", "pod", "query", "headers", "expected"),
    [
        # authorization comes before existence
        (
            "bob",
            "default",
            "nope",
            "",
            WS_HEADERS,
            (
                403,
                'pods "nope" is forbidden: User "bob" cannot create resource "pods/exec" in API '
                'group "" in the namespace "default"',
            ),
        ),
        ("admin", "default", "nope", "", WS_HEADERS, (404, 'pods "nope" not found')),
        ("admin", "nowhere", "web", "", WS_HEADERS, (404, 'pods "web" not found')),
        # the container comes before the phase
        (
            "admin",
            "default",
            "done",
            "&container=nope",
            WS_HEADERS,
            (400, "container nope is not valid for pod done"),
        ),
        (
            "admin",
            "default",
            "done",
            "",
            WS_HEADERS,
            (400, "cannot exec into a container in a completed pod; current phase is Succeeded"),
        ),
        (
            "admin",
            "default",
            "waiting",
            "",
            WS_HEADERS,
            (400, "pod waiting does not have a host assigned"),
        ),
        (
            "admin",
            "default",
            "multi",
            "",
            WS_HEADERS,
            (400, "a container name must be specified for pod multi, choose one of: [app sidecar]"),
        ),
        # the upgrade header comes before the streams
        ("admin", "default", "web", "", {}, (400, "Upgrade request required")),
        (
            "admin",
            "default",
            "web",
            "",
            {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"},
            (
                400,
                "SPDY/3.1 is not supported by this emulator (kubesim serves exec over "
                "WebSocket only); use kubectl >= 1.30 or set "
                "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true",
            ),
        ),
        (
            "admin",
            "default",
            "web",
            "&stdout=0&stdin=false",
            WS_HEADERS,
            (400, "you must specify at least 1 of stdin, stdout, stderr"),
        ),
        (
            "admin",
            "default",
            "web",
            "&tty=true&stderr=true",
            WS_HEADERS,
            (400, "you must specify at least 1 of stdin, stdout, stderr"),
        ),  # tty drops stderr
    ],
    ids=[
        "403-before-404",
        "404",
        "404-namespace",
        "container-before-phase",
        "completed",
        "pending",
        "choose-container",
        "no-upgrade",
        "spdy",
        "no-streams",
        "tty-no-stderr",
    ],
)
async def test_exec_validation_order(
    api: TestClient,
    user: str,
    ns: str,
    pod: str,
    query: str,
    headers: dict[str, str],
    expected: tuple[int, str],
) -> None:
    path = EXEC.format(ns=ns, pod=pod) + query
    for method in ("GET", "POST"):  # kubectl retries a failed WebSocket as an SPDY POST
        assert await get_status(api, path, auth(user, **headers), method) == expected


async def test_exec_without_command_is_refused(api: TestClient) -> None:
    path = "/api/v1/namespaces/default/pods/web/exec?stdout=true"
    assert await get_status(api, path, auth("admin", **WS_HEADERS)) == (
        400,
        "you must specify at least one command for the container",
    )


async def test_default_container_annotation_is_honoured(api: TestClient) -> None:
    path = EXEC.format(ns="default", pod="pinned") + "&stdout=true"
    headers = auth("admin", **{**WS_HEADERS, "Sec-WebSocket-Protocol": "v9.channel.k8s.io"})
    # It passes validation up to the subprotocol check (403, empty body).
    async with api.get(path, headers=headers) as response:
        assert (response.status, await response.read()) == (403, b"")
