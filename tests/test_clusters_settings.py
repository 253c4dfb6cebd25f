"""The project's clusters from the environment (webshell/clusters.py), rule by rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured

from terminals.checks import check_settings
from terminals.kube.clusters import Cluster
from webshell.clusters import clusters_from_environment

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = Path("/repo/.kubesim/kubeconfig")


def write_kubeconfig(path: Path, *contexts: str, current: str | None = None) -> Path:
    """A kubeconfig whose every context has its own server and token."""
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": f"c-{i}", "cluster": {"server": f"https://10.0.0.{i}:6443"}}
            for i, _ in enumerate(contexts)
        ],
        "users": [
            {"name": f"u-{i}", "user": {"token": f"token-{i}"}} for i, _ in enumerate(contexts)
        ],
        "contexts": [
            {"name": name, "context": {"cluster": f"c-{i}", "user": f"u-{i}"}}
            for i, name in enumerate(contexts)
        ],
    }
    if current is not None:
        config["current-context"] = current
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def clusters(**environ: str) -> dict[str, dict[str, object]]:
    return clusters_from_environment(environ, SANDBOX)


@pytest.fixture
def three(tmp_path: Path) -> str:
    # No current-context: a kubeconfig made for the web shell need not have one.
    return str(write_kubeconfig(tmp_path / "kubeconfig", "prod", "staging", "dev"))


def test_with_nothing_set_the_portal_has_the_kubesim_sandbox() -> None:
    assert clusters() == {"kubesim": {"kubeconfig": str(SANDBOX), "context": "kubesim-webshell"}}


def test_in_a_pod_the_cluster_is_its_own() -> None:
    assert clusters(WEBSHELL_IN_CLUSTER="1") == {"here": {"in_cluster": True}}
    assert clusters(WEBSHELL_IN_CLUSTER="1", WEBSHELL_CLUSTER_NAME="eu") == {
        "eu": {"in_cluster": True}
    }


def test_every_context_becomes_a_cluster_named_after_it_in_file_order(three: str) -> None:
    assert clusters(KUBECONFIG=three) == {
        "prod": {"kubeconfig": three, "context": "prod", "verbose_name": "prod"},
        "staging": {"kubeconfig": three, "context": "staging", "verbose_name": "staging"},
        "dev": {"kubeconfig": three, "context": "dev", "verbose_name": "dev"},
    }
    assert list(clusters(KUBECONFIG=three)) == ["prod", "staging", "dev"]


def test_a_listed_subset_in_the_listed_order(three: str) -> None:
    chosen = clusters(KUBECONFIG=three, WEBSHELL_CLUSTERS=" dev, prod ")
    assert list(chosen) == ["dev", "prod"]
    assert chosen["dev"]["context"] == "dev"


def test_an_unknown_context_is_refused_with_the_known_ones(three: str) -> None:
    with pytest.raises(ImproperlyConfigured) as error:
        clusters(KUBECONFIG=three, WEBSHELL_CLUSTERS="prod,qa")
    assert "has no context 'qa'" in str(error.value)
    assert "prod, staging, dev" in str(error.value)


def test_a_cluster_may_be_named_otherwise_than_its_context(tmp_path: Path) -> None:
    eks = "arn:aws:eks:eu-west-1:123456789012:cluster/prod"
    kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", eks, "dev"))
    chosen = clusters(KUBECONFIG=kubeconfig, WEBSHELL_CLUSTERS=f"prod={eks},dev")
    assert chosen == {
        "prod": {"kubeconfig": kubeconfig, "context": eks, "verbose_name": "prod"},
        "dev": {"kubeconfig": kubeconfig, "context": "dev", "verbose_name": "dev"},
    }


def test_a_context_name_that_cannot_be_a_cluster_name_is_refused_with_the_fix(
    tmp_path: Path,
) -> None:
    kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", "gke_project_zone_prod"))
    with pytest.raises(ImproperlyConfigured) as error:
        clusters(KUBECONFIG=kubeconfig)
    message = str(error.value)
    assert "'gke_project_zone_prod' is not a DNS label" in message
    assert "WEBSHELL_CLUSTERS=prod=gke_project_zone_prod" in message
    assert "kubectl config rename-context" in message


def test_a_cluster_listed_twice_is_refused(three: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="'prod' is listed twice"):
        clusters(KUBECONFIG=three, WEBSHELL_CLUSTERS="prod,prod=staging")


def test_verbose_names_by_cluster_name(three: str) -> None:
    chosen = clusters(
        KUBECONFIG=three,
        WEBSHELL_CLUSTERS="prod,dev",
        WEBSHELL_CLUSTER_NAMES="prod=Production (eu-west-1), dev = Development",
    )
    assert chosen["prod"]["verbose_name"] == "Production (eu-west-1)"
    assert chosen["dev"]["verbose_name"] == "Development"


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("staging=Staging", "there is no cluster 'staging'; the clusters are prod"),
        ("Production", "'Production' is not cluster=Name"),
        ("prod=", "'prod=' is not cluster=Name"),
    ],
)
def test_bad_verbose_names_are_refused(three: str, names: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message.replace("(", r"\(")):
        clusters(KUBECONFIG=three, WEBSHELL_CLUSTERS="prod", WEBSHELL_CLUSTER_NAMES=names)


def test_several_files_merge_as_kubectl_merges_them(tmp_path: Path) -> None:
    first = write_kubeconfig(tmp_path / "first", "prod", "dev")
    second = write_kubeconfig(tmp_path / "second", "dev", "qa")
    kubeconfig = f"{first}:{tmp_path / 'missing'}:{second}"
    chosen = clusters(KUBECONFIG=kubeconfig)
    assert list(chosen) == ["prod", "dev", "qa"]
    # The first file naming a context wins, when the settings list it and when it is loaded.
    connection = Cluster("dev", dict(chosen["dev"])).connection()
    assert connection.host == "https://10.0.0.1:6443"
    assert connection.headers["Authorization"] == "Bearer token-1"


def test_each_cluster_connects_with_its_own_context(three: str) -> None:
    chosen = clusters(KUBECONFIG=three)
    hosts = {name: Cluster(name, dict(value)).connection().host for name, value in chosen.items()}
    assert hosts == {
        "prod": "https://10.0.0.0:6443",
        "staging": "https://10.0.0.1:6443",
        "dev": "https://10.0.0.2:6443",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no kubeconfig file at"),
        ("contexts: [\n", "cannot read the contexts"),
        ("- just a list\n", "cannot read the contexts"),
        ("contexts:\n- {context: {cluster: c}}\n", "cannot read the contexts"),
        ("apiVersion: v1\nkind: Config\ncontexts: []\n", "has no contexts"),
    ],
)
def test_an_unreadable_kubeconfig_stops_the_server(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ImproperlyConfigured, match=message):
        clusters(KUBECONFIG=str(path))


def test_the_deprecated_variables_give_the_one_cluster_they_gave(three: str) -> None:
    with pytest.warns(FutureWarning, match="WEBSHELL_CLUSTERS=default=staging"):
        assert clusters(KUBECONFIG=three, KUBE_CONTEXT="staging") == {
            "default": {"kubeconfig": three, "context": "staging"}
        }
    with pytest.warns(FutureWarning, match="WEBSHELL_CLUSTERS=eu=<context>"):
        assert clusters(KUBECONFIG=three, WEBSHELL_CLUSTER_NAME="eu") == {
            "eu": {"kubeconfig": three}
        }


def test_the_deprecated_variables_do_not_mix_with_the_new_ones(three: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="cannot be combined with WEBSHELL_CLUSTERS"):
        clusters(KUBECONFIG=three, KUBE_CONTEXT="prod", WEBSHELL_CLUSTERS="prod")


def test_the_clusters_pass_the_system_checks(settings: Any, three: str) -> None:
    settings.TERMINALS = {
        **settings.TERMINALS,
        "CLUSTERS": clusters(KUBECONFIG=three, WEBSHELL_CLUSTER_NAMES="prod=Production"),
    }
    assert check_settings() == []


def test_the_project_settings_take_them_from_the_environment(three: str) -> None:
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps(settings.TERMINALS['CLUSTERS']))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webshell.settings",
        "DJANGO_DEBUG": "1",
        "KUBECONFIG": three,
        "WEBSHELL_CLUSTERS": "staging,prod",
        "WEBSHELL_CLUSTER_NAMES": "prod=Production",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "staging": {"kubeconfig": three, "context": "staging", "verbose_name": "staging"},
        "prod": {"kubeconfig": three, "context": "prod", "verbose_name": "Production"},
    }
    env["WEBSHELL_CLUSTERS"] = "qa"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured: WEBSHELL_CLUSTERS" in result.stderr
