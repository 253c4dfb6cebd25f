"""Certificates and the kubeconfig kubesim writes for its clients."""

from __future__ import annotations

import asyncio
import base64
import ssl
import stat
from pathlib import Path

import pytest
import yaml

from kubesim.config import User
from kubesim.tls import ServerTLS, kubeconfig, server_url, write_atomically, write_kubeconfig

USERS = [User("admin", "admin-token", ("system:masters",)), User("bob", "bob-token")]


@pytest.fixture(scope="module")
def tls() -> ServerTLS:
    """One CA and certificate for the module (key generation is the slow part)."""
    return ServerTLS()


@pytest.mark.parametrize("hostname", ["127.0.0.1", "localhost"])
async def test_certificate_verifies_for_loopback_names(tls: ServerTLS, hostname: str) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=tls.server_context())
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls.client_context(), server_hostname=hostname
        )
        assert await reader.read() == b"hello"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_client_without_the_ca_refuses_the_certificate(tls: ServerTLS) -> None:
    server = await asyncio.start_server(
        lambda r, w: w.close(), "127.0.0.1", 0, ssl=tls.server_context()
    )
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=ssl.create_default_context())
    finally:
        server.close()
        await server.wait_closed()


def test_kubeconfig_has_a_context_per_user_and_verifies_tls(tls: ServerTLS) -> None:
    config = kubeconfig("https://127.0.0.1:6443", tls.ca_pem, USERS)
    [cluster] = config["clusters"]
    assert cluster["name"] == "kubesim"
    assert cluster["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == tls.ca_pem
    assert "insecure-skip-tls-verify" not in cluster["cluster"]
    assert config["users"] == [
        {"name": "admin", "user": {"token": "admin-token"}},
        {"name": "bob", "user": {"token": "bob-token"}},
    ]
    contexts = {c["name"]: c["context"]["user"] for c in config["contexts"]}
    assert contexts == {"kubesim": "admin", "kubesim-admin": "admin", "kubesim-bob": "bob"}
    assert config["current-context"] == "kubesim"


def test_kubeconfig_file_is_private_and_has_the_ca_beside_it(
    tls: ServerTLS, tmp_path: Path
) -> None:
    path = tmp_path / "out" / "kubeconfig"
    write_kubeconfig(path, "https://127.0.0.1:1234", tls.ca_pem, USERS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds tokens
    assert yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"].endswith(":1234")
    assert Path(f"{path}.ca.crt").read_bytes() == tls.ca_pem
    assert sorted(p.name for p in path.parent.iterdir()) == ["kubeconfig", "kubeconfig.ca.crt"]


def test_atomic_write_leaves_no_temporary_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "kubeconfig"
    target.write_text("old")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["kubeconfig"]


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "https://127.0.0.1:6443"),
        ("0.0.0.0", "https://127.0.0.1:6443"),
        ("::1", "https://[::1]:6443"),
        ("::", "https://[::1]:6443"),
        ("localhost", "https://localhost:6443"),
    ],
)
def test_server_url(host: str, url: str) -> None:
    assert server_url(host, 6443) == url
