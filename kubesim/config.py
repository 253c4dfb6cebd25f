"""The cluster description: YAML loaded into frozen dataclasses and validated.

Every error names the offending key by its path, e.g.
``namespaces[0].pods[1].phase: must be one of Pending, Running, Succeeded, Failed, got 'Runing'``.

A namespace may also ``generate`` many alike pods, for measuring what lists thousands of them::

    - name: load
      generate: {count: 2000, prefix: app, containers: [{name: main}]}

makes ``app-0000`` … ``app-1999`` (the prefix and every key but ``count`` as a pod's own). Like
every pod here they run nothing until someone execs into them.

A chunked list's ``continue`` token can be made to expire, as the API server's does once etcd
has compacted the list's version (after about five minutes): ``lists: {continue_expires_after:
0}`` answers every continued list with 410 Expired, as a real cluster answers a slow reader.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

PHASES = ("Pending", "Running", "Succeeded", "Failed")
SUBJECT_KINDS = ("User", "Group")
# Generated pods per namespace, at most: enough for any measurement, not a typo's worth of memory.
MAX_GENERATED = 100_000
# Kubernetes object names used here are DNS-1123 labels. Both are used with fullmatch(): with
# match() and "$", a trailing newline would pass.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


class ConfigError(ValueError):
    """The configuration file is unreadable or invalid; the message names the key."""


@dataclass(frozen=True)
class User:
    """A bearer-token user."""

    name: str
    token: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Subject:
    """Who an RBAC rule applies to."""

    kind: str  # "User" or "Group"
    name: str


@dataclass(frozen=True)
class Rule:
    """A grant: subjects may do verbs on resources in namespaces ("*" = all and cluster scope)."""

    subjects: tuple[Subject, ...]
    verbs: tuple[str, ...]
    resources: tuple[str, ...]
    namespaces: tuple[str, ...]
    resource_names: tuple[str, ...] = ()  # empty = any name


@dataclass(frozen=True)
class Container:
    """One container of a pod; its processes run on the host."""

    name: str
    image: str = "kubesim/none:latest"
    working_dir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    executables: tuple[str, ...] | None = None  # None: no restriction ("*")


@dataclass(frozen=True)
class Pod:
    """A pod: metadata, phase and containers."""

    name: str
    namespace: str
    containers: tuple[Container, ...]
    phase: str = "Running"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def container(self, name: str) -> Container | None:
        """The container called ``name``, if any."""
        return next((c for c in self.containers if c.name == name), None)


@dataclass(frozen=True)
class Namespace:
    """A namespace and its pods."""

    name: str
    pods: tuple[Pod, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def pod(self, name: str) -> Pod | None:
        """The pod called ``name``, if any."""
        return self._pods_by_name.get(name)

    @cached_property
    def _pods_by_name(self) -> dict[str, Pod]:
        # A namespace may hold thousands of generated pods: every get and exec looks one up.
        return {p.name: p for p in self.pods}


@dataclass(frozen=True)
class ClusterConfig:
    """The whole emulated cluster."""

    users: tuple[User, ...]
    rules: tuple[Rule, ...]
    namespaces: tuple[Namespace, ...]
    # Seconds after which a list's continue token has expired (410); None: never.
    continue_expires_after: float | None = None

    def namespace(self, name: str) -> Namespace | None:
        """The namespace called ``name``, if any."""
        return next((n for n in self.namespaces if n.name == name), None)

    def pods(self) -> list[Pod]:
        """All pods of all namespaces, in configuration order."""
        return [p for n in self.namespaces for p in n.pods]


def load_config(path: str | Path) -> ClusterConfig:
    """Read and validate a YAML cluster description."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def parse_config(data: object) -> ClusterConfig:
    """Validate already-parsed YAML data."""
    root = _mapping(data, "", required=("users", "namespaces"), optional=("rbac", "lists"))
    users = tuple(_user(u, f"users[{i}]") for i, u in enumerate(_list(root["users"], "users")))
    if not users:
        raise ConfigError("users: at least one user is required")
    _unique([u.name for u in users], "users", "name")
    _unique([u.token for u in users], "users", "token")
    rules = tuple(_rule(r, f"rbac[{i}]") for i, r in enumerate(_list(root.get("rbac", []), "rbac")))
    namespaces = tuple(
        _namespace(n, f"namespaces[{i}]")
        for i, n in enumerate(_list(root["namespaces"], "namespaces"))
    )
    _unique([n.name for n in namespaces], "namespaces", "name")
    return ClusterConfig(
        users=users,
        rules=rules,
        namespaces=namespaces,
        continue_expires_after=_lists(root.get("lists", {}), "lists"),
    )


def _lists(data: object, where: str) -> float | None:
    m = _mapping(data, where, required=(), optional=("continue_expires_after",))
    seconds = m.get("continue_expires_after")
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise ConfigError(f"{where}.continue_expires_after: must be a number of seconds, 0 or more")
    return float(seconds)


def _user(data: object, where: str) -> User:
    m = _mapping(data, where, required=("name",), optional=("token", "groups"))
    # No token: a random one for this run, which clients find in the kubeconfig (mode 0600).
    # A token written in the file is known to everyone who can read the file.
    token = _string(m["token"], f"{where}.token") if "token" in m else generate_token()
    return User(
        name=_string(m["name"], f"{where}.name"),
        token=token,
        groups=_strings(m.get("groups", []), f"{where}.groups"),
    )


def generate_token() -> str:
    """A bearer token for one run: 256 random bits."""
    return secrets.token_urlsafe(32)


def _rule(data: object, where: str) -> Rule:
    m = _mapping(
        data,
        where,
        required=("subjects", "verbs", "resources", "namespaces"),
        optional=("resourceNames",),
    )
    subjects = []
    for i, s in enumerate(_list(m["subjects"], f"{where}.subjects")):
        sw = f"{where}.subjects[{i}]"
        sm = _mapping(s, sw, required=("kind", "name"))
        kind = _string(sm["kind"], f"{sw}.kind")
        if kind not in SUBJECT_KINDS:
            raise ConfigError(f"{sw}.kind: must be one of User, Group, got {kind!r}")
        subjects.append(Subject(kind=kind, name=_string(sm["name"], f"{sw}.name")))
    if not subjects:
        raise ConfigError(f"{where}.subjects: at least one subject is required")
    fields = {}
    for key in ("verbs", "resources", "namespaces"):
        values = _strings(m[key], f"{where}.{key}")
        if not values:
            raise ConfigError(f'{where}.{key}: at least one value is required (or "*")')
        fields[key] = values
    return Rule(
        subjects=tuple(subjects),
        resource_names=_strings(m.get("resourceNames", []), f"{where}.resourceNames"),
        **fields,
    )


def _namespace(data: object, where: str) -> Namespace:
    m = _mapping(data, where, required=("name",), optional=("pods", "labels", "generate"))
    name = _dns_label(m["name"], f"{where}.name")
    pods = tuple(
        _pod(p, f"{where}.pods[{i}]", name)
        for i, p in enumerate(_list(m.get("pods", []), f"{where}.pods"))
    )
    if "generate" in m:
        pods += _generated(m["generate"], f"{where}.generate", name)
    _unique([p.name for p in pods], f"{where}.pods", "name")
    return Namespace(
        name=name, pods=pods, labels=_string_map(m.get("labels", {}), f"{where}.labels")
    )


def _pod(data: object, where: str, namespace: str) -> Pod:
    m = _mapping(
        data, where, required=("name", "containers"), optional=("labels", "annotations", "phase")
    )
    phase = _string(m.get("phase", "Running"), f"{where}.phase")
    if phase not in PHASES:
        raise ConfigError(f"{where}.phase: must be one of {', '.join(PHASES)}, got {phase!r}")
    containers = tuple(
        _container(c, f"{where}.containers[{i}]")
        for i, c in enumerate(_list(m["containers"], f"{where}.containers"))
    )
    if not containers:
        raise ConfigError(f"{where}.containers: at least one container is required")
    _unique([c.name for c in containers], f"{where}.containers", "name")
    return Pod(
        name=_dns_label(m["name"], f"{where}.name"),
        namespace=namespace,
        containers=containers,
        phase=phase,
        labels=_string_map(m.get("labels", {}), f"{where}.labels"),
        annotations=_string_map(m.get("annotations", {}), f"{where}.annotations"),
    )


def _generated(data: object, where: str, namespace: str) -> tuple[Pod, ...]:
    """``count`` pods named ``<prefix>-<index>``, alike otherwise (validated once)."""
    m = _mapping(
        data,
        where,
        required=("count", "prefix", "containers"),
        optional=("labels", "annotations", "phase"),
    )
    count = m["count"]
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_GENERATED:
        raise ConfigError(f"{where}.count: must be a whole number from 1 to {MAX_GENERATED}")
    prefix = _dns_label(m["prefix"], f"{where}.prefix")
    spec = {key: value for key, value in m.items() if key not in ("count", "prefix")}
    template = _pod({**spec, "name": prefix}, where, namespace)
    width = len(str(count - 1))
    # The longest name decides whether they are all valid.
    _dns_label(f"{prefix}-{count - 1:0{width}d}", f"{where}.prefix")
    return tuple(
        dataclasses.replace(template, name=f"{prefix}-{i:0{width}d}") for i in range(count)
    )


def _container(data: object, where: str) -> Container:
    m = _mapping(
        data, where, required=("name",), optional=("image", "workingDir", "env", "executables")
    )
    env = _string_map(m.get("env", {}), f"{where}.env")
    for key in env:
        if not _ENV_NAME.fullmatch(key):
            raise ConfigError(f"{where}.env.{key}: not a valid environment variable name")
    working_dir = m.get("workingDir")
    if working_dir is not None:
        working_dir = _string(working_dir, f"{where}.workingDir")
        if not working_dir.startswith("/"):
            raise ConfigError(f"{where}.workingDir: must be an absolute path, got {working_dir!r}")
    raw = m.get("executables", "*")
    executables: tuple[str, ...] | None
    if raw == "*":
        executables = None
    else:
        executables = _strings(raw, f"{where}.executables")
        for name in executables:
            if "/" in name or name in ("", ".", ".."):
                raise ConfigError(
                    f"{where}.executables: {name!r} is not a command name (no '/' allowed)"
                )
    return Container(
        name=_dns_label(m["name"], f"{where}.name"),
        image=_string(m.get("image", Container.image), f"{where}.image"),
        working_dir=working_dir,
        env=env,
        executables=executables,
    )


# Generic shape checks -------------------------------------------------------------------


def _mapping(
    data: object, where: str, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    label = where or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping, got {_kind(data)}")
    for key in data:
        if key not in required and key not in optional:
            allowed = ", ".join(required + optional)
            prefix = f"{where}." if where else ""
            raise ConfigError(f"{prefix}{key}: unknown key (allowed: {allowed})")
    for key in required:
        if key not in data:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"{prefix}{key}: required key is missing")
    return data


def _list(data: object, where: str) -> list[Any]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a list, got {_kind(data)}")
    return data


def _string(data: object, where: str) -> str:
    if isinstance(data, bool) or not isinstance(data, str | int | float):
        raise ConfigError(f"{where}: expected a string, got {_kind(data)}")
    text = str(data)
    if not text:
        raise ConfigError(f"{where}: must not be empty")
    return text


def _strings(data: object, where: str) -> tuple[str, ...]:
    return tuple(_string(v, f"{where}[{i}]") for i, v in enumerate(_list(data, where)))


def _string_map(data: object, where: str) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_kind(data)}")
    out = {}
    for key, value in data.items():
        # An empty value is legal in env and labels.
        out[_string(key, where)] = (
            "" if value is None else _string_or_empty(value, f"{where}.{key}")
        )
    return out


def _string_or_empty(data: object, where: str) -> str:
    return "" if data == "" else _string(data, where)


def _dns_label(data: object, where: str) -> str:
    name = _string(data, where)
    if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        raise ConfigError(
            f"{where}: {name!r} is not a valid name (lower case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return name


def _unique(values: list[str], where: str, key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            shown = "<hidden>" if key == "token" else repr(value)
            raise ConfigError(f"{where}[{i}].{key}: duplicate value {shown}")
        seen.add(value)


def _kind(data: object) -> str:
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(
        type(data), type(data).__name__
    )
