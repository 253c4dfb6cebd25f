"""API objects: pods, namespaces, Tables, ages and label selectors."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from kubesim.config import parse_config
from kubesim.resources import (
    ContinueExpired,
    Resources,
    human_duration,
    paginate,
    parse_label_selector,
    pod_ip,
    wants_table,
)

STARTED = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
CONFIG = parse_config(
    {
        "users": [{"name": "a", "token": "a"}],
        "namespaces": [
            {
                "name": "default",
                "pods": [
                    {
                        "name": "web",
                        "labels": {"app": "web"},
                        "containers": [{"name": "main", "image": "debian:12", "env": {"A": "1"}}],
                    },
                    {"name": "multi", "containers": [{"name": "app"}, {"name": "sidecar"}]},
                    {"name": "waiting", "phase": "Pending", "containers": [{"name": "main"}]},
                    {"name": "broken", "phase": "Failed", "containers": [{"name": "main"}]},
                ],
            }
        ],
    }
)
RES = Resources(CONFIG, STARTED, {("default", "web", "main"): "/srv/web"})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 300, "3h5m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (50 * 3600, "2d2h"),
        (8 * 86400, "8d"),
        (2 * 365 * 86400, "2y"),
        (2 * 365 * 86400 + 5 * 86400, "2y5d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_read_like_kubectl(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app", True),
        ("!app", False),
        ("tier", False),
        ("!tier", True),
        ("app in (db, web)", True),
        ("app notin (web)", False),
        ("app=web,tier!=x", True),
        ("app=web,tier=x", False),
        ("", True),
    ],
)
def test_label_selectors(selector: str, matches: bool) -> None:
    assert parse_label_selector(selector)({"app": "web"}) is matches


@pytest.mark.parametrize("bad", ["=web", "a b=c", "app in web"])
def test_malformed_selectors_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="unable to parse requirement"):
        parse_label_selector(bad)


def test_table_is_wanted_only_when_asked_for() -> None:
    kubectl_get = (
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
        "g=meta.k8s.io,application/json"
    )
    assert wants_table(kubectl_get)
    assert not wants_table("application/json, */*")
    assert not wants_table("")


def test_pod_object() -> None:
    pod = RES.pod(CONFIG.namespace("default").pod("web"))
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    meta = pod["metadata"]
    assert (meta["name"], meta["namespace"], meta["labels"]) == ("web", "default", {"app": "web"})
    assert meta["creationTimestamp"] == "2026-11-26T12:00:00Z"
    assert len(meta["uid"]) == 36
    container = pod["spec"]["containers"][0]
    assert container["workingDir"] == "/srv/web"
    assert container["env"] == [{"name": "A", "value": "1"}]
    assert pod["spec"]["nodeName"] == "kubesim"
    status = pod["status"]
    assert status["phase"] == "Running" and status["podIP"].startswith("10.244.0.")
    [cs] = status["containerStatuses"]
    assert (cs["name"], cs["ready"], cs["restartCount"]) == ("main", True, 0)
    assert "running" in cs["state"]


def test_pending_pod_is_not_scheduled() -> None:
    pod = RES.pod(CONFIG.namespace("default").pod("waiting"))
    assert "nodeName" not in pod["spec"] and "podIP" not in pod["status"]


def test_pod_table_rows() -> None:
    table = RES.pod_table(CONFIG.pods(), STARTED + timedelta(minutes=5))
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns == [
        ("Name", 0),
        ("Ready", 0),
        ("Status", 0),
        ("Restarts", 0),
        ("Age", 0),
        ("IP", 1),
        ("Node", 1),
        ("Nominated Node", 1),
        ("Readiness Gates", 1),
    ]
    cells = {row["cells"][0]: row["cells"][1:] for row in table["rows"]}
    assert cells["web"][:4] == ["1/1", "Running", "0", "5m"]
    assert cells["multi"][:2] == ["2/2", "Running"]
    assert cells["waiting"] == ["0/1", "Pending", "0", "5m", "<none>", "<none>", "<none>", "<none>"]
    assert cells["broken"][:2] == ["0/1", "Error"]
    row = table["rows"][0]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["namespace"] == "default"


def test_namespace_objects() -> None:
    ns = RES.namespace(CONFIG.namespace("default"))
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "default"}
    assert ns["status"] == {"phase": "Active"}
    table = RES.namespace_table(CONFIG.namespaces, STARTED + timedelta(hours=1))
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Status", "Age"]
    assert table["rows"][0]["cells"] == ["default", "Active", "60m"]


def test_discovery_lists_pods_and_exec() -> None:
    names = [r["name"] for r in Resources.api_resources()["resources"]]
    assert names == ["namespaces", "pods", "pods/exec"]
    assert Resources.api_versions("127.0.0.1:6443")["versions"] == ["v1"]


# Many pods --------------------------------------------------------------------------------


def test_pod_ips_stay_addresses_past_the_first_256_pods() -> None:
    assert [pod_ip(i) for i in (0, 245, 246, 2000)] == [
        "10.244.0.10",
        "10.244.0.255",
        "10.244.1.0",
        "10.244.7.218",
    ]


def test_each_pod_is_rendered_once() -> None:
    web = CONFIG.namespace("default").pod("web")
    assert RES.pod(web) is RES.pod(web)
    first, second = RES.pod_list([web])["items"][0], RES.pod_list([web])["items"][0]
    assert first is second and "kind" not in first and first["metadata"]["name"] == "web"


def test_lists_come_in_chunks_with_a_continue_token() -> None:
    items = list(range(7))
    chunk, metadata = paginate(items, "3", "")
    assert list(chunk) == [0, 1, 2] and metadata["remainingItemCount"] == 4
    chunk, metadata = paginate(items, "3", metadata["continue"])
    assert list(chunk) == [3, 4, 5] and metadata["remainingItemCount"] == 1
    chunk, metadata = paginate(items, "3", metadata["continue"])
    assert list(chunk) == [6] and metadata == {"resourceVersion": "1"}
    # No limit (or 0): everything, as the API server answers.
    assert paginate(items, "", "") == (items, {"resourceVersion": "1"})
    assert list(paginate(items, "0", "")[0]) == items


def test_a_continue_token_older_than_the_cluster_keeps_lists_has_expired() -> None:
    items = list(range(7))
    _, metadata = paginate(items, "3", "")
    token = metadata["continue"]
    assert list(paginate(items, "3", token, expires_after=60)[0]) == [3, 4, 5]
    with pytest.raises(ContinueExpired, match="continue parameter is too old"):
        paginate(items, "3", token, expires_after=0)
    # A token without its time (as an older kubesim wrote them) is as old as can be.
    old = base64.urlsafe_b64encode(b'{"start": 3}').decode().rstrip("=")
    assert list(paginate(items, "3", old)[0]) == [3, 4, 5]
    with pytest.raises(ContinueExpired):
        paginate(items, "3", old, expires_after=3600)


@pytest.mark.parametrize(
    ("limit", "token", "message"),
    [
        ("ten", "", "invalid limit 'ten': not a number"),
        ("3", "eyJzdGFydCI6IDMsICJhdCI6ICJub3cifQ", "continue key is not valid"),  # "at": "now"
        ("3", "not-a-token", "continue key is not valid"),
        ("3", "eyJzdGFydCI6IC0xfQ", "continue key is not valid"),  # {"start": -1}
    ],
)
def test_bad_limits_and_tokens_are_refused(limit: str, token: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paginate([1, 2, 3], limit, token)
