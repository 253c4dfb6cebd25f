"""``python -m bench.portal``: the portal page with several clusters of thousands of pods each.

Starts ``--clusters`` kubesims (3 by default), each generating ``--pods`` pods (2,000) spread
over ten namespaces ``team-0`` … ``team-9`` (kubesim's ``generate``), makes the portal's
clusters from one kubeconfig with a context per kubesim (``webshell/clusters.py``, as the
project reads ``KUBECONFIG``), and runs a real Daphne (``bench.settings``, SQLite) on them.
Then it asks for the portal page through HTTP, as a browser does, for two users in alternation:

- ``one namespace``: a user whose access rule matches one namespace glob (``team-1*``): a tenth
  of the pods are offered, all of them still listed from every cluster and checked;
- ``every pod``: a user whose rule matches everything: every pod is a row of the page.

Reported per user: the page's time (median and range of ``--requests`` requests after one
warm-up), its size, its rows, and Daphne's and the kubesims' CPU per request. Beside them,
in this process: listing the clusters' pods one after the other and all at once
(``terminals.kube.pods.list_clusters``), which is what the portal waits for.

The target (issue 10): the page under 1 s for the user with a rule. Not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from . import database

NAMESPACES = 10
RULES = {"one namespace": "team-1*", "every pod": "*"}


def kubesim_config(pods: int) -> dict[str, Any]:
    """A cluster of ``pods`` generated pods in ten namespaces, and the web shell's identity."""
    per_namespace, extra = divmod(pods, NAMESPACES)
    return {
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
                "verbs": ["get", "list", "create", "impersonate"],
                "resources": ["namespaces", "pods", "pods/exec", "users", "groups"],
                "namespaces": ["*"],
            },
        ],
        "namespaces": [
            {
                "name": f"team-{i}",
                "generate": {
                    "count": per_namespace + (1 if i < extra else 0),
                    "prefix": "app",
                    "labels": {"team": str(i)},
                    "containers": [{"name": "main"}],
                },
            }
            for i in range(NAMESPACES)
        ],
    }


@contextlib.contextmanager
def kubesims(count: int, pods: int, workdir: Path) -> Iterator[list[Any]]:
    """``count`` running kubesims, each on the generated configuration."""
    from tests.fixtures.kubesim import run_kubesim

    config = workdir / "cluster.yaml"
    config.write_text(yaml.safe_dump(kubesim_config(pods)), encoding="utf-8")
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(run_kubesim(config, workdir / f"kubesim-{i}", transcript=False))
            for i in range(1, count + 1)
        ]


def portal_clusters(servers: list[Any], workdir: Path) -> dict[str, dict[str, object]]:
    """TERMINALS["CLUSTERS"] from one kubeconfig with a context per kubesim, as deployed."""
    from kubesim.tls import write_merged_kubeconfig
    from webshell.clusters import clusters_from_environment

    kubeconfig = workdir / "webshell.kubeconfig"
    sources = {f"cluster-{i}": server.kubeconfig for i, server in enumerate(servers, 1)}
    write_merged_kubeconfig(kubeconfig, sources, user="webshell")
    return clusters_from_environment({"KUBECONFIG": str(kubeconfig)}, Path("/unused"))


def make_users() -> dict[str, str]:
    """One user per entry of RULES, with that namespace rule; their session cookies."""
    from tests.fixtures.users import grant, make_user, session_cookie

    cookies = {}
    for i, (label, namespaces) in enumerate(RULES.items()):
        user = make_user(f"portal-{i}")
        grant(user, name=label, namespaces=namespaces)
        cookies[label] = session_cookie(user)
    return cookies


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def get_page(http: aiohttp.ClientSession, url: str, cookie: str) -> tuple[float, str]:
    """Seconds from the request to the page's last byte, and the page."""
    started = time.perf_counter()
    async with http.get(url, cookies={"sessionid": cookie}) as response:
        page = await response.text()
        if response.status != 200:
            raise RuntimeError(f"the portal answered {response.status}: {page[:300]}")
    return time.perf_counter() - started, page


async def measure_pages(
    url: str, cookies: dict[str, str], requests: int, daphne_pid: int, kubesim_pids: list[int]
) -> dict[str, Any]:
    """Each user's page, ``requests`` times after a warm-up, the users in alternation."""
    seconds: dict[str, list[float]] = {label: [] for label in cookies}
    daphne_cpu = dict.fromkeys(cookies, 0.0)
    kubesim_cpu = dict.fromkeys(cookies, 0.0)
    pages: dict[str, str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        for label, cookie in cookies.items():
            _, pages[label] = await get_page(http, url, cookie)  # warm-up
        for _ in range(requests):
            for label, cookie in cookies.items():
                before = cpu_seconds(daphne_pid), sum(map(cpu_seconds, kubesim_pids))
                elapsed, _ = await get_page(http, url, cookie)
                daphne_cpu[label] += cpu_seconds(daphne_pid) - before[0]
                kubesim_cpu[label] += sum(map(cpu_seconds, kubesim_pids)) - before[1]
                seconds[label].append(elapsed)
    return {
        label: {
            "seconds": spread(values),
            "rows": pages[label].count('<tr class="pod"'),
            "page_kib": round(len(pages[label].encode()) / 1024),
            "errors": pages[label].count('role="alert"'),
            "daphne_cpu_ms_per_request": round(daphne_cpu[label] / requests * 1000),
            "kubesims_cpu_ms_per_request": round(kubesim_cpu[label] / requests * 1000),
        }
        for label, values in seconds.items()
    }


async def measure_listing(clusters: dict[str, dict[str, object]], rounds: int) -> dict[str, Any]:
    """What the portal waits for: the clusters' pods one cluster after the other, and at once."""
    from terminals.kube.clusters import Cluster
    from terminals.kube.pods import list_clusters, list_pods

    objects = [Cluster(name, dict(settings)) for name, settings in clusters.items()]
    serial: list[float] = []
    together: list[float] = []
    await list_clusters(objects)  # warm-up: credentials loaded, kubesims' objects rendered
    for _ in range(rounds):
        started = time.perf_counter()
        for cluster in objects:
            await list_pods(cluster)
        serial.append(time.perf_counter() - started)
        started = time.perf_counter()
        answers = await list_clusters(objects)
        together.append(time.perf_counter() - started)
    return {
        "pods_listed": sum(len(answer.pods) for answer in answers),
        "one_after_the_other_seconds": spread(serial),
        "all_at_once_seconds": spread(together),
    }


def spread(values: list[float]) -> dict[str, float]:
    """Median and range, milliseconds precision."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.portal", description=__doc__)
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--pods", type=int, default=2000, help="pods per cluster")
    parser.add_argument("--requests", type=int, default=9, help="timed requests per user")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="webshell-bench-portal-"))
    try:
        return run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> int:
    """The whole measurement, its files under ``workdir``."""
    from tests.fixtures.daphne import run_daphne

    env = database.prepare_environment("sqlite", workdir)
    database.setup_django_and_migrate()
    cookies = make_users()
    results: dict[str, Any] = {
        "clusters": args.clusters,
        "pods_per_cluster": args.pods,
        "requests": args.requests,
        "through": "a real Daphne (bench.settings, SQLite) and real kubesims, over HTTP",
        "rules": RULES,
        "load_1min_before": round(os.getloadavg()[0], 2),
    }
    print(
        f"portal: {args.clusters} kubesims x {args.pods} pods, {args.requests} requests per user",
        file=sys.stderr,
    )
    with kubesims(args.clusters, args.pods, workdir) as servers:
        clusters = portal_clusters(servers, workdir)
        daphne_env = {**env, "WEBSHELL_TEST_TERMINALS": json.dumps({"CLUSTERS": clusters})}
        with run_daphne(daphne_env) as daphne:
            results["pages"] = asyncio.run(
                measure_pages(
                    daphne.url + "/",
                    cookies,
                    args.requests,
                    daphne.process.pid,
                    [server.process.pid for server in servers],
                )
            )
        results["listing_in_process"] = asyncio.run(measure_listing(clusters, args.requests))
    results["load_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
