"""The command line: help, configuration errors, the serving line, clean shutdown."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import yaml

from tests.fixtures.kubesim import (
    KUBESIM_CONFIG,
    REPO_ROOT,
    exec_path,
    open_exec,
    read_exec,
    run_kubesim,
    stop_kubesim,
)


def kubesim_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m kubesim`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "kubesim", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_help_warns_that_pods_are_host_processes() -> None:
    done = kubesim_cli("--help")
    assert done.returncode == 0
    assert "processes of THIS host" in done.stdout
    assert "default: 127.0.0.1" in done.stdout
    for option in ("--config", "--port", "--kubeconfig", "--transcript", "--state-dir"):
        assert option in done.stdout


def test_a_bad_config_is_named_without_a_traceback(tmp_path: Path) -> None:
    config = yaml.safe_load(KUBESIM_CONFIG.read_text())
    config["namespaces"][0]["pods"][0]["phase"] = "Runing"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    done = kubesim_cli("--config", str(bad), "--kubeconfig", str(tmp_path / "kc"))
    assert done.returncode == 2
    assert done.stderr == (
        f"kubesim: error: {bad}: namespaces[0].pods[0].phase: must be one of Pending, Running, "
        "Succeeded, Failed, got 'Runing'\n"
    )
    assert not (tmp_path / "kc").exists()


async def test_serves_once_ready_and_stops_cleanly_killing_exec_processes(
    tmp_path: Path,
) -> None:
    with run_kubesim(KUBESIM_CONFIG, tmp_path / "ks") as server:
        kubeconfig = yaml.safe_load(server.kubeconfig.read_text())
        assert kubeconfig["clusters"][0]["cluster"]["server"] == server.url
        assert server.url.startswith("https://127.0.0.1:")
        connector = aiohttp.TCPConnector(ssl=server.ssl_context())
        async with aiohttp.ClientSession(base_url=server.url, connector=connector) as http:
            command = ["sh", "-c", "echo $$; sleep 60"]
            ws = await open_exec(http, server, exec_path("web", command, stdout=True))
            data = b""
            while not data.endswith(b"\n"):
                data += (await ws.receive(timeout=5)).data[1:]
            pid = int(data)
            reading = asyncio.create_task(read_exec(ws))  # keeps answering the server
            status = await asyncio.to_thread(stop_kubesim, server.process)  # SIGTERM
            assert status == 0
            out = await reading
            assert out.close_code == 1001  # going away
            assert out.channel(3) == b""  # no status: the process did not end by itself
        assert _gone(pid), "the exec process outlived kubesim"
        exit_event = [e for e in server.transcript_events() if e["event"] == "exit"][-1]
        assert exit_event["code"] == 129  # SIGHUP
        assert server.process.stdout.closed


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie waiting for init counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def test_the_demo_cluster_makes_its_tokens_per_run(tmp_path: Path) -> None:
    """No fixed token: each run's are random and only in the kubeconfig, which is 0600."""
    demo = REPO_ROOT / "kubesim" / "demo.yaml"
    runs = []
    for run in ("first", "second"):
        with run_kubesim(demo, tmp_path / run, transcript=False) as server:
            assert server.kubeconfig.stat().st_mode & 0o777 == 0o600
            connector = aiohttp.TCPConnector(ssl=server.ssl_context())
            async with aiohttp.ClientSession(base_url=server.url, connector=connector) as http:
                async with http.get("/api/v1/namespaces", headers=server.headers()) as answer:
                    assert answer.status == 200
                fixed = {"Authorization": "Bearer admin-token"}  # what the demo used to have
                async with http.get("/api/v1/namespaces", headers=fixed) as answer:
                    assert answer.status == 401
            runs.append(set(server.tokens.values()))
    assert len(runs[0]) == 4
    assert runs[0].isdisjoint(runs[1])
