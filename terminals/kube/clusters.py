"""The cluster registry: ``TERMINALS["CLUSTERS"]`` turned into ready-to-use connection details.

The ``kubernetes`` package does the configuration work (kubeconfig contexts, in-cluster service
accounts, exec plugins and OIDC with their token refresh, client certificates); this module
turns its ``Configuration`` into what aiohttp needs for the exec WebSocket.
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes import client, config

from ..conf import get_config


class UnknownCluster(LookupError):
    """The cluster name is not in ``TERMINALS["CLUSTERS"]``."""


class ClusterUnavailable(Exception):
    """The cluster's configuration cannot be loaded (missing kubeconfig, bad context, …)."""


@dataclass(frozen=True)
class Connection:
    """What one request to the API server needs: base URL, headers and TLS."""

    host: str
    headers: dict[str, str]
    ssl: ssl.SSLContext | bool

    def url(self, path: str) -> str:
        """The HTTPS URL of an API path."""
        return self.host.rstrip("/") + path

    def ws_url(self, path: str) -> str:
        """The WebSocket URL of an API path."""
        url = self.url(path)
        if url.startswith("https://"):
            return "wss://" + url[len("https://") :]
        if url.startswith("http://"):
            return "ws://" + url[len("http://") :]
        return url


class Cluster:
    """One configured cluster. Loading blocks (files, exec plugins): call it from a thread."""

    def __init__(self, name: str, settings: dict[str, Any]) -> None:
        self.name = name
        self.settings = settings
        self.verbose_name: str = settings.get("verbose_name") or name
        self._lock = threading.Lock()
        self._loaded: tuple[float, client.Configuration] | None = None
        self._ssl: tuple[client.Configuration, ssl.SSLContext | bool] | None = None

    def __repr__(self) -> str:
        return f"<Cluster {self.name}>"

    def configuration(self) -> client.Configuration:
        """The ``kubernetes`` Configuration, reloaded when the kubeconfig file changes."""
        with self._lock:
            stamp = self._stamp()
            if self._loaded is None or self._loaded[0] != stamp:
                self._loaded = (stamp, self._load())
            return self._loaded[1]

    def connection(self) -> Connection:
        """Base URL, auth header (refreshed if the credential plugin says so) and TLS context."""
        cfg = self.configuration()
        headers: dict[str, str] = {}
        token = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
            "authorization"
        )
        if token:
            headers["Authorization"] = token
        elif cfg.username and cfg.password:
            headers["Authorization"] = cfg.get_basic_auth_token() or ""
        return Connection(host=cfg.host, headers=headers, ssl=self._ssl_for(cfg))

    def _ssl_for(self, cfg: client.Configuration) -> ssl.SSLContext | bool:
        # One TLS context per loaded configuration, shared by every session: building one
        # reads the CA bundle and costs far more memory than a session otherwise needs.
        with self._lock:
            if self._ssl is None or self._ssl[0] is not cfg:
                self._ssl = (cfg, _ssl_context(cfg))
            return self._ssl[1]

    def _stamp(self) -> float:
        path = self.settings.get("kubeconfig")
        if not path:
            return 0.0
        try:
            return os.stat(os.path.expanduser(str(path))).st_mtime
        except OSError:
            return -1.0

    def _load(self) -> client.Configuration:
        cfg = client.Configuration()
        try:
            if self.settings.get("in_cluster"):
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=os.path.expanduser(str(self.settings["kubeconfig"])),
                    context=self.settings.get("context"),
                    client_configuration=cfg,
                    persist_config=False,
                )
        except (
            config.ConfigException,
            OSError,
            KeyError,
            ValueError,
            TypeError,
            yaml.YAMLError,
        ) as exc:
            raise ClusterUnavailable(f"Cluster {self.name!r} is not configured: {exc}") from exc
        return cfg


def _ssl_context(cfg: client.Configuration) -> ssl.SSLContext | bool:
    if not cfg.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    if cfg.assert_hostname is False:
        context.check_hostname = False
    return context


_registry: dict[str, Cluster] = {}
_registry_source: object = None
_registry_lock = threading.Lock()


def get_cluster(name: str) -> Cluster:
    """The cluster called ``name``, or :class:`UnknownCluster`."""
    clusters = all_clusters()
    try:
        return clusters[name]
    except KeyError:
        raise UnknownCluster(name) from None


def all_clusters() -> dict[str, Cluster]:
    """Every configured cluster, in settings order; rebuilt when the settings change."""
    global _registry, _registry_source
    settings = get_config()["CLUSTERS"]
    with _registry_lock:
        if _registry_source is not settings:
            _registry = {name: Cluster(name, dict(value)) for name, value in settings.items()}
            _registry_source = settings
        return _registry
