"""Pod listing (terminals/kube/pods.py): chunks, every cluster at once, each failing alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from terminals.kube import pods
from terminals.kube.clusters import Cluster
from terminals.kube.pods import list_clusters, list_pods
from tests.fixtures.kubesim import Kubesim


def kubesim_cluster(kubesim: Kubesim, name: str = "kubesim") -> Cluster:
    return Cluster(name, {"kubeconfig": str(kubesim.kubeconfig), "context": "kubesim-webshell"})


def plain_http_cluster(name: str, url: str, directory: Path) -> Cluster:
    """A cluster whose API server is ``url`` (plain HTTP), through a kubeconfig of its own."""
    path = directory / f"{name}.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": name, "cluster": {"server": url}}],
                "users": [{"name": name, "user": {"token": f"{name}-token"}}],
                "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
                "current-context": name,
            }
        ),
        encoding="utf-8",
    )
    return Cluster(name, {"kubeconfig": str(path)})


def names(listed: list[pods.PodInfo]) -> list[str]:
    return [f"{pod.namespace}/{pod.name}" for pod in listed]


async def test_a_list_is_read_in_chunks_and_sorted(
    kubesim: Kubesim, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = await list_pods(kubesim_cluster(kubesim))
    monkeypatch.setattr(pods, "CHUNK_SIZE", 2)
    chunked = await list_pods(kubesim_cluster(kubesim))
    assert chunked == whole
    assert names(chunked) == [
        "default/alpine",
        "default/done",
        "default/multi",
        "default/web",
        "dev/api",
        "prod/db",
    ]
    assert whole[0].containers == ("main",) and whole[0].running


class BarrierApiServer:
    """A fake API server (named so) that answers no pod list until ``parties`` are waiting.

    Asked one cluster after the other, the first request would wait for ever: only clusters
    asked at the same time get their pods. Each answers with one pod named after its path.
    """

    def __init__(self, parties: int) -> None:
        self.barrier = asyncio.Barrier(parties)
        self.app = web.Application()
        self.app.router.add_get("/api/v1/pods", self.list_pods)

    async def list_pods(self, request: web.Request) -> web.Response:
        await self.barrier.wait()
        token = request.headers["Authorization"].removeprefix("Bearer ").removesuffix("-token")
        pod: dict[str, Any] = {
            "metadata": {"namespace": "default", "name": f"pod-of-{token}"},
            "spec": {"containers": [{"name": "main"}]},
            "status": {"phase": "Running"},
        }
        return web.json_response({"kind": "PodList", "metadata": {}, "items": [pod]})


@pytest.fixture
async def barrier_server() -> AsyncIterator[TestServer]:
    server = TestServer(BarrierApiServer(parties=3).app)
    await server.start_server()
    yield server
    await server.close()


async def test_a_list_whose_continue_token_expires_is_asked_for_again_whole(
    kubesim: Kubesim,
    expiring_kubesim: Kubesim,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    whole = await list_pods(kubesim_cluster(kubesim))
    monkeypatch.setattr(pods, "CHUNK_SIZE", 2)
    asked: list[str] = []
    get_json = pods.get_json

    async def recording(http: Any, connection: Any, path: str, *args: Any) -> Any:
        asked.append(path)
        return await get_json(http, connection, path, *args)

    monkeypatch.setattr(pods, "get_json", recording)
    with caplog.at_level("INFO", logger="terminals.kube.pods"):
        listed = await list_pods(kubesim_cluster(expiring_kubesim))
    assert names(listed) == names(whole)  # every pod once (the kubesims started apart)
    # The first chunk, the second refused (410 Expired), then the list whole.
    assert [path.partition("?")[0] for path in asked] == ["/api/v1/pods"] * 3
    assert "continue=" in asked[1] and asked[2] == "/api/v1/pods"
    assert "expired while it was read" in caplog.text


async def test_every_cluster_is_asked_at_once(barrier_server: TestServer, tmp_path: Path) -> None:
    url = str(barrier_server.make_url("")).rstrip("/")
    clusters = [plain_http_cluster(name, url, tmp_path) for name in ("one", "two", "three")]
    async with asyncio.timeout(5):  # serially, the first list would wait for ever
        answers = await list_clusters(clusters)
    assert [(a.cluster.name, names(a.pods), a.error) for a in answers] == [
        ("one", ["default/pod-of-one"], ""),
        ("two", ["default/pod-of-two"], ""),
        ("three", ["default/pod-of-three"], ""),
    ]


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A socket that accepts connections and never answers: a hung API server."""
    accepted: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in accepted:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_each_cluster_fails_alone(
    kubesim: Kubesim,
    silent_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pods, "LIST_TIMEOUT", 0.5)
    clusters = [
        Cluster("gone", {"kubeconfig": str(tmp_path / "missing")}),
        plain_http_cluster("hung", silent_server, tmp_path),
        kubesim_cluster(kubesim),
    ]
    gone, hung, working = await list_clusters(clusters)
    assert gone.pods == [] and "Cluster 'gone' is not configured" in gone.error
    assert hung.pods == [] and hung.error == "The cluster did not answer within 0.5 s."
    assert working.error == "" and "default/web" in names(working.pods)


async def test_a_refusal_is_shown_with_the_clusters_message(kubesim: Kubesim) -> None:
    # "bob" of tests/kubesim.yaml may do nothing at all.
    [refused] = await list_clusters(
        [Cluster("kubesim", {"kubeconfig": str(kubesim.kubeconfig), "context": "kubesim-bob"})]
    )
    assert refused.error.startswith("The cluster refused to list pods: pods is forbidden")
