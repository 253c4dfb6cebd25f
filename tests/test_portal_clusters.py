"""Two clusters behind one portal: two real kubesims, the clusters read from one kubeconfig
(webshell/clusters.py), pods listed per cluster, and an access rule limited to one cluster."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from kubesim.tls import write_merged_kubeconfig
from terminals.models import Session
from tests.fixtures.daphne import Daphne, daphne_environment, run_daphne
from tests.fixtures.kubesim import Kubesim, run_kubesim
from tests.fixtures.terminal_client import run_line, say, terminal
from tests.fixtures.users import grant, make_user, session_cookie
from webshell.clusters import clusters_from_environment

pytestmark = pytest.mark.django_db(transaction=True)

# More pods than one chunk of a list (terminals.kube.pods.CHUNK_SIZE), so the portal follows
# the continue tokens; "tools" has a shell to open.
SECOND_CLUSTER = {
    "users": [{"name": "admin", "groups": ["system:masters"]}, {"name": "webshell"}],
    "rbac": [
        {
            "subjects": [{"kind": "Group", "name": "system:masters"}],
            "verbs": ["*"],
            "resources": ["*"],
            "namespaces": ["*"],
        },
        {
            "subjects": [{"kind": "User", "name": "webshell"}],
            "verbs": ["get", "list", "create"],
            "resources": ["namespaces", "pods", "pods/exec"],
            "namespaces": ["*"],
        },
    ],
    "namespaces": [
        {
            "name": "batch",
            "pods": [{"name": "tools", "containers": [{"name": "main", "executables": "*"}]}],
            "generate": {"count": 600, "prefix": "job", "containers": [{"name": "main"}]},
        }
    ],
}


@pytest.fixture(scope="module")
def second_kubesim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubesim]:
    workdir = tmp_path_factory.mktemp("second-kubesim")
    config = workdir / "cluster.yaml"
    config.write_text(yaml.safe_dump(SECOND_CLUSTER), encoding="utf-8")
    with run_kubesim(config, workdir / "run", transcript=False) as server:
        yield server


@pytest.fixture(scope="module")
def clusters(
    kubesim: Kubesim, second_kubesim: Kubesim, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, object]]:
    """TERMINALS["CLUSTERS"] as the project makes it from a kubeconfig with two contexts."""
    kubeconfig = tmp_path_factory.mktemp("portal") / "kubeconfig"
    sources = {"kubesim": kubesim.kubeconfig, "second": second_kubesim.kubeconfig}
    write_merged_kubeconfig(kubeconfig, sources, user="webshell")
    environ = {"KUBECONFIG": str(kubeconfig), "WEBSHELL_CLUSTER_NAMES": "second=Second cluster"}
    return clusters_from_environment(environ, Path("/unused"))


@pytest.fixture
def two_clusters(settings: Any, clusters: dict[str, dict[str, object]]) -> None:
    settings.TERMINALS = {**settings.TERMINALS, "CLUSTERS": clusters}


@pytest.fixture(scope="module")
def two_cluster_daphne(
    kubesim: Kubesim,
    clusters: dict[str, dict[str, object]],
    django_db_setup: Any,
    django_db_blocker: Any,
) -> Iterator[Daphne]:
    with django_db_blocker.unblock():
        env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps({"CLUSTERS": clusters})
    with run_daphne(env) as server:
        yield server


def sections(page: str) -> dict[str, str]:
    """Each cluster's part of the portal page, by cluster name."""
    parts = re.split(r'<section class="cluster" data-cluster="([^"]+)">', page)
    return {
        name: html.split("</section>")[0]
        for name, html in zip(parts[1::2], parts[2::2], strict=True)
    }


def terminal_links(html: str) -> set[str]:
    return set(re.findall(r'href="(/terminals/[^"?]+)\?container=main"', html))


def test_the_portal_lists_each_clusters_pods_under_it(client: Any, two_clusters: None) -> None:
    client.force_login(make_user("sam", everywhere=True))
    page = client.get("/").content.decode()
    found = sections(page)
    assert list(found) == ["kubesim", "second"]
    assert "<h2>Second cluster</h2>" in found["second"] and "<h2>kubesim</h2>" in found["kubesim"]
    assert "/terminals/kubesim/default/web/" in terminal_links(found["kubesim"])
    second = terminal_links(found["second"])
    assert len(second) == 601  # tools and job-000 … job-599, from two chunks
    assert {"/terminals/second/batch/tools/", "/terminals/second/batch/job-599/"} <= second
    assert not any(
        link.startswith("/terminals/second/") for link in terminal_links(found["kubesim"])
    )


def test_a_rule_for_one_cluster_offers_nothing_of_the_other(
    client: Any, two_clusters: None
) -> None:
    user = make_user("kim")
    grant(user, name="kubesim only", clusters="kubesim")
    client.force_login(user)
    with CaptureQueriesContext(connection) as queries:
        found = sections(client.get("/").content.decode())
    assert "/terminals/kubesim/default/web/" in terminal_links(found["kubesim"])
    assert terminal_links(found["second"]) == set()
    assert "No pods here that you may open." in found["second"]
    # The rules are read once for the request, not once per pod (there are 600 here).
    rule_queries = [q for q in queries.captured_queries if "terminals_accessrule" in q["sql"]]
    assert len(rule_queries) == 1


def test_a_cluster_that_fails_shows_its_error_alone(
    client: Any, settings: Any, clusters: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    broken = {"kubeconfig": str(tmp_path / "missing"), "verbose_name": "Broken"}
    settings.TERMINALS = {**settings.TERMINALS, "CLUSTERS": {"broken": broken, **clusters}}
    client.force_login(make_user("sam", everywhere=True))
    found = sections(client.get("/").content.decode())
    assert "Cluster &#x27;broken&#x27; is not configured" in found["broken"]
    assert 'role="alert"' not in found["kubesim"] + found["second"]
    assert "/terminals/second/batch/tools/" in terminal_links(found["second"])


async def fetch_portal(server: Daphne, cookie: str) -> str:
    async with aiohttp.ClientSession(cookies={"sessionid": cookie}) as http:
        async with http.get(server.url + "/") as response:
            assert response.status == 200
            return await response.text()


async def test_through_daphne_a_rule_for_one_cluster_refuses_the_other(
    two_cluster_daphne: Daphne,
) -> None:
    limited = await sync_to_async(user_cookie)("kim", clusters="kubesim")
    everywhere = await sync_to_async(user_cookie)("sam", clusters="*")

    found = sections(await fetch_portal(two_cluster_daphne, limited))
    assert "/terminals/kubesim/default/web/" in terminal_links(found["kubesim"])
    assert terminal_links(found["second"]) == set()
    found = sections(await fetch_portal(two_cluster_daphne, everywhere))
    assert "/terminals/second/batch/tools/" in terminal_links(found["second"])

    path = "/ws/terminals/second/batch/tools/?container=main"
    async with terminal(two_cluster_daphne, path, limited) as client:
        assert (await client.first_message())["code"] == "forbidden"
        assert await client.until_closed() == 4403
    async with terminal(two_cluster_daphne, path, everywhere) as client:
        assert (await client.until_message("ready"))["container"] == "main"
        assert b"second-cluster" in await run_line(client, say("second-cluster"), "second-cluster")
    # The same person on the cluster the rule names.
    path = "/ws/terminals/kubesim/default/web/?container=main"
    async with terminal(two_cluster_daphne, path, limited) as client:
        assert (await client.until_message("ready"))["container"] == "main"
    # Daphne records the ends after the browsers have gone: let it finish before the test's
    # database is flushed (a flush racing an end's row locks can fail).
    for _ in range(200):
        if not await Session.objects.filter(ended_at__isnull=True).aexists():
            break
        await asyncio.sleep(0.05)  # another process's write: nothing to await but the store
    else:
        pytest.fail("the sessions were never recorded as ended")


def user_cookie(username: str, clusters: str) -> str:
    """A user with an access rule for the ``clusters`` glob; their session cookie."""
    user = make_user(username)
    grant(user, name=f"{username}'s clusters", clusters=clusters)
    return session_cookie(user)
