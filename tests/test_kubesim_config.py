"""Loading and validating the cluster YAML."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from kubesim.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]

MINIMAL: dict[str, Any] = {
    "users": [{"name": "admin", "token": "t0", "groups": ["system:masters"]}],
    "rbac": [
        {
            "subjects": [{"kind": "Group", "name": "system:masters"}],
            "verbs": ["*"],
            "resources": ["*"],
            "namespaces": ["*"],
        }
    ],
    "namespaces": [
        {
            "name": "default",
            "pods": [
                {
                    "name": "web",
                    "labels": {"app": "web"},
                    "containers": [
                        {"name": "main", "env": {"A": "1", "EMPTY": ""}, "executables": ["sh"]}
                    ],
                }
            ],
        }
    ],
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """MINIMAL with one key (dotted path, list indexes as numbers) set or removed."""
    data = copy.deepcopy(MINIMAL)
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is REMOVE:
        del node[last]
    elif isinstance(node, list) and int(last) == len(node):
        node.append(value)
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


REMOVE = object()


def test_minimal_config() -> None:
    config = parse_config(MINIMAL)
    pod = config.namespace("default").pod("web")
    assert pod.phase == "Running"
    assert pod.container("main").env == {"A": "1", "EMPTY": ""}
    assert pod.container("main").executables == ("sh",)
    assert config.users[0].groups == ("system:masters",)
    assert config.rules[0].namespaces == ("*",)


def test_star_means_no_executable_restriction() -> None:
    config = parse_config(with_change("namespaces.0.pods.0.containers.0.executables", "*"))
    assert config.pods()[0].containers[0].executables is None


@pytest.mark.parametrize("name", ["demo.yaml"])
def test_demo_config_loads(name: str) -> None:
    config = load_config(ROOT / "kubesim" / name)
    assert {n.name for n in config.namespaces} == {"default", "dev", "prod"}
    assert [u.name for u in config.users] == ["admin", "webshell", "alice", "bob"]


def test_every_demo_container_speaks_utf8() -> None:
    """Unicode typed in the demo works: its shells get LANG=C.UTF-8."""
    config = load_config(ROOT / "kubesim" / "demo.yaml")
    containers = [c for ns in config.namespaces for pod in ns.pods for c in pod.containers]
    assert len(containers) == 6
    assert all(container.env.get("LANG") == "C.UTF-8" for container in containers)


def test_a_user_without_a_token_gets_a_random_one_each_time() -> None:
    data = copy.deepcopy(MINIMAL)
    del data["users"][0]["token"]
    first, second = (parse_config(data).users[0].token for _ in range(2))
    assert first != second
    assert len(first) >= 43  # 256 bits, URL-safe base64


def test_the_demo_cluster_has_no_token_anyone_can_read() -> None:
    """Its tokens are made per run and written only to the kubeconfig (mode 0600)."""
    text = (ROOT / "kubesim" / "demo.yaml").read_text()
    assert "token:" not in text
    first, second = (load_config(ROOT / "kubesim" / "demo.yaml") for _ in range(2))
    assert {u.token for u in first.users}.isdisjoint(u.token for u in second.users)


def test_test_config_has_the_shapes_other_tests_rely_on() -> None:
    config = load_config(ROOT / "tests" / "kubesim.yaml")
    default = config.namespace("default")
    assert default.pod("web").container("main").executables is None
    alpine = default.pod("alpine").container("main").executables
    for tool in (
        "sh",
        "cat",
        "ls",
        "echo",
        "printf",
        "stty",
        "sleep",
        "head",
        "dd",
        "seq",
        "env",
        "kill",
        "true",
        "false",
        "wc",
        "sha256sum",
        "id",
    ):
        assert tool in alpine
    assert "bash" not in alpine
    assert [c.name for c in default.pod("multi").containers] == ["app", "sidecar"]
    assert default.pod("done").phase == "Succeeded"
    assert config.namespace("dev").pod("api").container("main")
    assert config.namespace("prod").pod("db").container("main")
    assert {"admin", "webshell", "alice", "bob"} <= {u.name for u in config.users}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("users", REMOVE, "users: required key is missing"),
        ("colour", "red", "colour: unknown key (allowed: users, namespaces, rbac, lists)"),
        ("users", [], "users: at least one user is required"),
        ("users.0.name", REMOVE, "users[0].name: required key is missing"),
        ("users.0.token", "", "users[0].token: must not be empty"),
        # A trailing newline is not part of a name (re.match with "$" let it through).
        ("namespaces.0.name", "default\n", "namespaces[0].name: 'default\\n' is not a valid name"),
        ("users.0.groups", "system:masters", "users[0].groups: expected a list, got str"),
        ("rbac.0.subjects.0.kind", "Robot", "rbac[0].subjects[0].kind: must be one of User, Group"),
        ("rbac.0.verbs", [], "rbac[0].verbs: at least one value is required"),
        ("namespaces.0.name", "Default", "namespaces[0].name: 'Default' is not a valid name"),
        (
            "namespaces.0.pods.0.phase",
            "Runing",
            "namespaces[0].pods[0].phase: must be one of Pending, Running, Succeeded, Failed, "
            "got 'Runing'",
        ),
        ("namespaces.0.pods.0.containers", [], "namespaces[0].pods[0].containers: at least one"),
        (
            "namespaces.0.pods.0.containers.0.workingdir",
            "/tmp",
            "namespaces[0].pods[0].containers[0].workingdir: unknown key",
        ),
        (
            "namespaces.0.pods.0.containers.0.workingDir",
            "relative",
            "namespaces[0].pods[0].containers[0].workingDir: must be an absolute path",
        ),
        (
            "namespaces.0.pods.0.containers.0.executables",
            ["/bin/sh"],
            "namespaces[0].pods[0].containers[0].executables: '/bin/sh' is not a command name",
        ),
        (
            "namespaces.0.pods.0.containers.0.env",
            {"A B": "x"},
            "namespaces[0].pods[0].containers[0].env.A B: not a valid environment variable name",
        ),
        (
            "namespaces.0.pods.0.labels",
            ["app"],
            "namespaces[0].pods[0].labels: expected a mapping, got a list",
        ),
    ],
)
def test_errors_name_the_bad_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_change(path, value))
    assert str(info.value).startswith(message)


def test_lists_may_have_their_continue_tokens_expire() -> None:
    assert parse_config(MINIMAL).continue_expires_after is None
    config = parse_config({**MINIMAL, "lists": {"continue_expires_after": 0}})
    assert config.continue_expires_after == 0.0
    for bad in (-1, "5m", True):
        with pytest.raises(
            ConfigError, match=r"lists\.continue_expires_after: must be a number of seconds"
        ):
            parse_config({**MINIMAL, "lists": {"continue_expires_after": bad}})
    with pytest.raises(ConfigError, match=r"lists\.chunk: unknown key"):
        parse_config({**MINIMAL, "lists": {"chunk": 5}})


def test_duplicates_are_refused_without_showing_tokens() -> None:
    data = copy.deepcopy(MINIMAL)
    data["users"].append({"name": "other", "token": "t0"})
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value) == "users[1].token: duplicate value <hidden>"
    data = with_change("namespaces.0.pods.1", copy.deepcopy(MINIMAL["namespaces"][0]["pods"][0]))
    with pytest.raises(
        ConfigError, match=r"namespaces\[0\]\.pods\[1\]\.name: duplicate value 'web'"
    ):
        parse_config(data)


def test_load_config_reports_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("users: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML"):
        load_config(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: top level: expected a mapping, got a list"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


# Generated pods ---------------------------------------------------------------------------


def with_generate(**generate: Any) -> dict[str, Any]:
    """MINIMAL whose namespace also generates pods."""
    return with_change(
        "namespaces.0.generate", {"prefix": "app", "containers": [{"name": "main"}], **generate}
    )


def test_a_namespace_generates_alike_pods_beside_its_own() -> None:
    config = parse_config(with_generate(count=1000, labels={"tier": "load"}, phase="Pending"))
    namespace = config.namespace("default")
    assert namespace is not None
    names = [pod.name for pod in namespace.pods]
    assert names[:3] == ["web", "app-000", "app-001"] and names[-1] == "app-999"
    assert len(config.pods()) == 1001
    generated = namespace.pod("app-517")
    assert generated is not None and generated.namespace == "default"
    assert (generated.phase, dict(generated.labels)) == ("Pending", {"tier": "load"})
    assert [c.name for c in generated.containers] == ["main"]
    assert namespace.pod("app-1000") is None


@pytest.mark.parametrize(
    ("generate", "message"),
    [
        ({"count": 0}, "namespaces[0].generate.count: must be a whole number from 1 to 100000"),
        ({"count": "10"}, "namespaces[0].generate.count: must be a whole number"),
        ({"count": True}, "namespaces[0].generate.count: must be a whole number"),
        ({"count": 10**6}, "namespaces[0].generate.count: must be a whole number"),
        ({"count": 5, "prefix": "App"}, "namespaces[0].generate.prefix: 'App' is not a valid name"),
        (
            {"count": 10, "prefix": "a" * 62},
            f"namespaces[0].generate.prefix: '{'a' * 62}-9' is not a valid name",
        ),
        ({"count": 5, "containers": []}, "namespaces[0].generate.containers: at least one"),
        ({"count": 5, "name": "x"}, "namespaces[0].generate.name: unknown key"),
        ({"count": 5, "phase": "Runing"}, "namespaces[0].generate.phase: must be one of"),
    ],
)
def test_bad_generate_stanzas_name_the_key(generate: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_generate(**generate))
    assert str(info.value).startswith(message)


def test_generated_names_may_not_clash_with_listed_pods() -> None:
    data = with_generate(count=3, prefix="web")
    data["namespaces"][0]["pods"][0]["name"] = "web-1"
    with pytest.raises(ConfigError, match=r"duplicate value 'web-1'"):
        parse_config(data)
