"""TLS material (a throwaway CA and server certificate) and the kubeconfig for clients."""

from __future__ import annotations

import base64
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import trustme
import yaml

from .config import User

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class ServerTLS:
    """A fresh CA and a server certificate for loopback (plus ``extra_names``)."""

    def __init__(self, extra_names: Sequence[str] = ()) -> None:
        self.ca = trustme.CA(organization_name="kubesim")
        names = list(dict.fromkeys([*LOOPBACK_NAMES, *extra_names]))
        self.cert = self.ca.issue_cert(*names, common_name="kubesim")

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self.ca.cert_pem.bytes()

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for the server side."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts only this CA (for tests and tools)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def server_url(host: str, port: int) -> str:
    """``https://host:port``, with brackets for IPv6 and loopback for a wildcard bind."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"https://{host}:{port}"


def kubeconfig(server: str, ca_pem: bytes, users: Sequence[User]) -> dict[str, object]:
    """A kubeconfig: cluster ``kubesim``, one user and a ``kubesim-<user>`` context per user.

    The first (admin) user also gets the context ``kubesim``, which is the current context.
    """

    def context(name: str, user: User) -> dict[str, object]:
        return {
            "name": name,
            "context": {"cluster": "kubesim", "user": user.name, "namespace": "default"},
        }

    contexts = [context("kubesim", users[0])] + [context(f"kubesim-{u.name}", u) for u in users]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kubesim",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode("ascii"),
                },
            }
        ],
        "users": [{"name": u.name, "user": {"token": u.token}} for u in users],
        "contexts": contexts,
        "current-context": "kubesim",
        "preferences": {},
    }


def merged_kubeconfig(kubeconfigs: Mapping[str, Path], user: str) -> dict[str, object]:
    """One kubeconfig for several kubesims: a context per kubesim, named by its key, as ``user``.

    For a client of many clusters, such as the web shell's portal, where every context of its
    kubeconfig becomes a cluster: ``{"kubesim": first, "kubesim-2": second}`` gives the contexts
    ``kubesim`` and ``kubesim-2``, each with ``user``'s token for that kubesim.
    """
    merged: dict[str, list[dict[str, object]]] = {"clusters": [], "users": [], "contexts": []}
    for name, path in kubeconfigs.items():
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        [cluster] = config["clusters"]
        [token] = [u["user"]["token"] for u in config["users"] if u["name"] == user]
        merged["clusters"].append({"name": name, "cluster": cluster["cluster"]})
        merged["users"].append({"name": name, "user": {"token": token}})
        merged["contexts"].append({"name": name, "context": {"cluster": name, "user": name}})
    return {
        "apiVersion": "v1",
        "kind": "Config",
        **merged,
        "current-context": next(iter(kubeconfigs)),
        "preferences": {},
    }


def write_merged_kubeconfig(path: Path, kubeconfigs: Mapping[str, Path], user: str) -> None:
    """Write :func:`merged_kubeconfig` (mode 0600: it holds tokens)."""
    text = yaml.safe_dump(merged_kubeconfig(kubeconfigs, user), sort_keys=False)
    write_atomically(path, text.encode("utf-8"))


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_kubeconfig(path: Path, server: str, ca_pem: bytes, users: Sequence[User]) -> None:
    """Write the kubeconfig (mode 0600: it holds tokens) and the CA beside it as ``.ca.crt``."""
    text = yaml.safe_dump(kubeconfig(server, ca_pem, users), sort_keys=False)
    write_atomically(Path(f"{path}.ca.crt"), ca_pem, mode=0o644)
    write_atomically(path, text.encode("utf-8"))
