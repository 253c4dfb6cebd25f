"""Two Daphne processes behind nginx, as deploy/nginx/webshell.conf deploys them.

Sessions opened through nginx spread over both processes (plain round-robin), the client address
recorded is the one nginx saw (not what the client wrote in X-Forwarded-For), nginx serves the
static files, and an auditor whose watch socket one process serves watches and ends a session
that the other process holds: through Redis, with PostgreSQL as the shared store.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from asgiref.sync import sync_to_async

from scripts.scale_stack import SITE_TEMPLATE, ScaleStack, find_nginx, render_site, scale_stack
from terminals.models import Session
from tests.fixtures.daphne import _wait_for_other_connections_to_close, daphne_environment
from tests.fixtures.terminal_client import TerminalClient, run_line, say
from tests.test_watch import REASON, end_session, people

WEB = "/ws/terminals/kubesim/default/web/?container=main"
SESSIONS = 4
SPOOFED = "198.51.100.23"  # what a client claims to be in X-Forwarded-For


def needs_the_stack(test: Any) -> Any:
    """nginx, PostgreSQL and Redis, or a skip that says which is missing."""
    for condition, reason in [
        (find_nginx() is None, "nginx is not installed (Debian: apt-get install nginx)"),
        (
            not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
            "needs PostgreSQL (DATABASE_URL): the store several processes share",
        ),
        (
            not os.environ.get("REDIS_URL"),
            "needs Redis (REDIS_URL): processes reach each other's sessions only through it",
        ),
    ]:
        test = pytest.mark.skipif(condition, reason=reason)(test)
    return pytest.mark.django_db(transaction=True)(test)


async def open_terminal(stack: ScaleStack, cookie: str) -> TerminalClient:
    """A terminal through nginx, as the page opens it, claiming another address than its own."""
    http = aiohttp.ClientSession()
    headers = {"Origin": stack.origin, "Cookie": f"sessionid={cookie}", "X-Forwarded-For": SPOOFED}
    try:
        ws = await http.ws_connect(stack.ws_url + WEB, headers=headers, max_msg_size=0)
    except BaseException:
        await http.close()
        raise
    client = TerminalClient(ws=ws, http=http)
    await client.resize(80, 24)
    return client


def holders(session_ids: list[str], timeout: float = 20) -> dict[str, int]:
    """The pid of the process holding each session, once every one has its server recorded
    (a process adopts a session opened before it had registered at its next heartbeat)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = dict(
            Session.objects.filter(pk__in=session_ids, server__isnull=False).values_list(
                "pk", "server__pid"
            )
        )
        if len(rows) == len(session_ids) or time.monotonic() > deadline:
            return {str(pk): pid for pk, pid in rows.items()}
        time.sleep(0.05)  # another process's writes: nothing to await but the database


def test_the_stack_runs_the_deployments_site_with_its_own_ports_and_no_tls():
    template = SITE_TEMPLATE.read_text()
    site = render_site(
        template,
        listen="127.0.0.1:9000",
        upstreams=["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"],
        static_root=Path("/srv/static files"),
    )
    assert re.findall(r"^\s*(listen .*);", site, re.M) == ["listen 127.0.0.1:9000"]
    upstream = re.search(r"^upstream webshell \{([^}]*)\}", site, re.M)[1]
    assert re.findall(r"^\s*server (\S+);", upstream, re.M) == [
        "127.0.0.1:9001",
        "127.0.0.1:9002",
        "127.0.0.1:9003",
    ]
    assert 'alias "/srv/static files/";' in site
    assert "ssl" not in site and "return 301" not in site
    # Everything that makes the proxy work is the operator's file, line for line.
    directives = [line for line in template.splitlines() if re.match(r"\s*(proxy_|location)", line)]
    assert directives == [line for line in site.splitlines() if line in directives]
    assert len(directives) > 10
    with pytest.raises(ValueError, match="upstream webshell"):
        render_site(
            template.replace("upstream webshell", "upstream other"),
            listen="x",
            upstreams=[],
            static_root=Path("/"),
        )


@needs_the_stack
async def test_an_auditor_through_one_process_ends_a_session_the_other_holds(kubesim, tmp_path):
    env = await sync_to_async(daphne_environment)(kubesim)
    user, auditor, _ = await sync_to_async(people)()
    static = tmp_path / "static"
    static.mkdir()
    (static / "probe.txt").write_text("served by nginx\n")
    clients: list[TerminalClient] = []
    watchers: list[TerminalClient] = []
    with scale_stack(2, env, static_root=static) as stack:
        try:
            # Static files come from nginx: Daphne has no such file.
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{stack.url}/static/probe.txt") as response:
                    assert response.status == 200
                    assert await response.text() == "served by nginx\n"

            for n in range(SESSIONS):
                client = await open_terminal(stack, user)
                clients.append(client)
                await client.until_message("ready")
                await run_line(client, say(f"hello-{n}"), f"hello-{n}")
            ids = [str(c.messages[0]["session"]) for c in clients]
            held_by = await sync_to_async(holders)(ids)
            assert len(held_by) == SESSIONS, f"sessions without a server: {held_by}"
            # Round-robin, no stickiness: both processes hold sessions of the one browser.
            assert set(held_by.values()) == {d.pid for d in stack.daphnes}, held_by

            # The auditor watches the first session from the process that does not hold it.
            # nginx chooses; a watcher that lands on the holder is closed and another opened.
            target, target_id = clients[0], ids[0]
            path = f"/ws/terminals/watch/{target_id}/"
            for _ in range(2 * len(stack.daphnes)):
                before = stack.accepted_counts(path)
                watcher = await TerminalClient.connect(
                    stack.ws_url, path, auditor, origin=stack.origin, size=None
                )
                watchers.append(watcher)
                await watcher.until_message("snapshot")
                serving = stack.serving(path, before)
                if serving.pid != held_by[target_id]:
                    break
                await watcher.close()
            else:
                pytest.fail("nginx sent every watcher to the process holding the session")

            await watcher.until_output("hello-0")  # the screen, from the other process
            await run_line(target, say("while-watched"), "while-watched")
            await watcher.until_output("while-watched")  # live output, read from the store

            await end_session(stack, target_id, auditor)
            assert await target.until_closed() == 4409
            assert target.messages[-1] == {
                "type": "error",
                "code": "ended_by_auditor",
                "message": f"audrey ended this session: {REASON}",
            }
            ended = await watcher.until_message("ended")
            assert ended["ended_by"] == "audrey"
            assert await watcher.until_closed() == 1000

            # Only that session ended: one held by the watcher's process goes on.
            other = next(c for c, i in zip(clients, ids, strict=True) if held_by[i] == serving.pid)
            await run_line(other, say("still-here"), "still-here")
        finally:
            for client in clients + watchers:
                await client.close()

    record = await Session.objects.select_related("server").aget(pk=uuid.UUID(target_id))
    assert record.ended_at is not None
    assert record.end_reason == Session.EndReason.ENDED_BY_AUDITOR
    assert record.ended_by_username == "audrey"
    assert record.server is not None and record.server.pid == held_by[target_id]
    # nginx appended the peer it saw; the Daphnes trust that one entry (one proxy).
    addresses = [
        address
        async for address in Session.objects.filter(pk__in=ids).values_list(
            "client_address", flat=True
        )
    ]
    assert addresses == ["127.0.0.1"] * SESSIONS
    # The test database can be dropped only once the processes' backends are gone.
    await sync_to_async(_wait_for_other_connections_to_close)()
