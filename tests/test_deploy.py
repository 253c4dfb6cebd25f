"""deploy/kubernetes.yaml: well-formed, and what the README says the web shell needs."""

from pathlib import Path

import yaml

MANIFEST = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes.yaml"


def test_the_manifest_grants_exactly_what_the_web_shell_uses():
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}
    rules = {
        tuple(rule["resources"]): set(rule["verbs"]) for rule in documents["ClusterRole"]["rules"]
    }
    assert rules[("pods", "namespaces")] == {"get", "list"}
    assert rules[("pods/exec",)] == {"get", "create"}
    deployment = documents["Deployment"]["spec"]["template"]["spec"]
    assert deployment["serviceAccountName"] == documents["ServiceAccount"]["metadata"]["name"]
    command = deployment["containers"][0]["command"]
    # Daphne through terminals.serve, with a deadline for each request to arrive.
    assert command[:3] == ["python", "-m", "terminals.serve"]
    assert command[-1] == "webshell.asgi:application"
    assert command[command.index("--request-timeout") + 1] == "10"
    env = {item["name"]: item["value"] for item in deployment["containers"][0]["env"]}
    assert env["WEBSHELL_IN_CLUSTER"] == "1" and "*" not in env["DJANGO_ALLOWED_HOSTS"]
