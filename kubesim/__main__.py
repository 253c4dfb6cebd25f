"""Command line: ``python -m kubesim --config FILE --kubeconfig OUT [...]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from .config import ClusterConfig, ConfigError, load_config
from .server import create_app
from .tls import LOOPBACK_NAMES, ServerTLS, server_url, write_kubeconfig

logger = logging.getLogger("kubesim")

DESCRIPTION = """\
An emulated Kubernetes API server (discovery, namespaces, pods, pods/exec over WebSocket)
for development, demos and tests.

WARNING: its "pods" are processes of THIS host, run as the user running kubesim. Anyone who
can reach the port with a token can run commands here. It binds to 127.0.0.1 unless --host
says otherwise; do not expose it.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m kubesim",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", required=True, type=Path, help="cluster YAML (users, rbac, namespaces)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback)"
    )
    parser.add_argument(
        "--port", default=6443, type=int, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--kubeconfig", required=True, type=Path, help="where to write the kubeconfig for clients"
    )
    parser.add_argument(
        "--transcript", type=Path, help="append one JSON line per exec event to this file"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="container working and bin directories "
        "(default: a temporary directory, removed at exit)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


async def serve(args: argparse.Namespace, config: ClusterConfig, state_dir: Path) -> None:
    """Run until SIGTERM or SIGINT."""
    extra = [] if args.host in ("", "0.0.0.0", "::", *LOOPBACK_NAMES) else [args.host]
    tls = ServerTLS(extra)
    app = create_app(config, state_dir, args.transcript)
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("kubesim.access") if args.verbose else None,
        access_log_format='%a "%r" %s %Tfs',
        shutdown_timeout=HANDLER_SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port, ssl_context=tls.server_context())
        await site.start()
        port = runner.addresses[0][1]
        url = server_url(args.host, port)
        write_kubeconfig(args.kubeconfig, url, tls.ca_pem, config.users)
        logger.info("kubeconfig written to %s", args.kubeconfig)
        print(f"kubesim: serving {url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logger.info("stopping")
    finally:
        await runner.cleanup()


# How long open exec handlers get to finish (hang up, reap) once the server stops.
HANDLER_SHUTDOWN_TIMEOUT = 5.0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="kubesim %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logger.setLevel(logging.INFO)  # our own concise lifecycle lines, not every request
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"kubesim: error: {exc}", file=sys.stderr)
        return 2
    temporary = args.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="kubesim-")) if temporary else args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(serve(args, config, state_dir))
    except OSError as exc:
        print(f"kubesim: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if temporary:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
