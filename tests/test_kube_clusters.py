"""The cluster registry: kubeconfig contexts, exec credential plugins, reloading, errors."""

import stat
import sys

import aiohttp
import pytest
import yaml

from terminals.kube.clusters import ClusterUnavailable, UnknownCluster, get_cluster
from terminals.kube.exec import get_json


def plugin_kubeconfig(kubesim, tmp_path, token_file):
    """kubesim's kubeconfig with a user whose token comes from an exec credential plugin."""
    plugin = tmp_path / "credential-plugin"
    plugin.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib\n"
        f"token = pathlib.Path({str(token_file)!r}).read_text().strip()\n"
        'print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", '
        '"kind": "ExecCredential", "status": {"token": token}}))\n'
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    config = yaml.safe_load(kubesim.kubeconfig.read_text())
    config["users"].append(
        {
            "name": "via-plugin",
            "user": {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": str(plugin),
                    "interactiveMode": "Never",
                }
            },
        }
    )
    config["contexts"].append(
        {"name": "plugin", "context": {"cluster": "kubesim", "user": "via-plugin"}}
    )
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def whoami(cluster):
    connection = cluster.connection()
    async with aiohttp.ClientSession() as http:
        return await get_json(http, connection, "/api/v1/namespaces/dev/pods/api", {}, 10)


async def test_an_exec_plugin_supplies_the_token(settings, kubesim, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(kubesim.tokens["alice"])
    settings.TERMINALS = {
        "CLUSTERS": {
            "k": {
                "kubeconfig": str(plugin_kubeconfig(kubesim, tmp_path, token_file)),
                "context": "plugin",
            }
        }
    }
    cluster = get_cluster("k")
    connection = cluster.connection()
    assert connection.headers["Authorization"] == f"Bearer {kubesim.tokens['alice']}"
    pod = await whoami(cluster)  # alice may read pods in dev: the token really works
    assert pod["metadata"]["name"] == "api"


def test_the_kubeconfig_is_reloaded_when_it_changes(settings, kubesim, tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(kubesim.kubeconfig.read_text())
    settings.TERMINALS = {"CLUSTERS": {"k": {"kubeconfig": str(path), "context": "kubesim-alice"}}}
    cluster = get_cluster("k")
    assert cluster.connection().headers["Authorization"].endswith(kubesim.tokens["alice"])
    config = yaml.safe_load(path.read_text())
    config["current-context"] = "kubesim-bob"
    path.write_text(yaml.safe_dump(config))
    settings.TERMINALS = {"CLUSTERS": {"k": {"kubeconfig": str(path)}}}
    assert get_cluster("k").connection().headers["Authorization"].endswith(kubesim.tokens["bob"])


def test_tls_is_verified_with_the_kubeconfig_ca(settings, kubesim):
    settings.TERMINALS = {"CLUSTERS": {"k": {"kubeconfig": str(kubesim.kubeconfig)}}}
    connection = get_cluster("k").connection()
    assert connection.ssl is not False
    assert connection.host == kubesim.url
    assert connection.ws_url("/x") == kubesim.url.replace("https://", "wss://") + "/x"


def test_unknown_and_broken_clusters_say_so(settings, tmp_path):
    settings.TERMINALS = {"CLUSTERS": {"k": {"kubeconfig": str(tmp_path / "missing")}}}
    with pytest.raises(UnknownCluster):
        get_cluster("other")
    with pytest.raises(ClusterUnavailable, match="Cluster 'k' is not configured"):
        get_cluster("k").connection()
    (tmp_path / "bad").write_text("clusters: [}")
    settings.TERMINALS = {"CLUSTERS": {"k": {"kubeconfig": str(tmp_path / "bad")}}}
    with pytest.raises(ClusterUnavailable):
        get_cluster("k").connection()
