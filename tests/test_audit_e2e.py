"""The audit trail end to end, through a real Daphne and kubesim: what is stored is exactly what
the pod received and the browser was sent; failures close the session; exports play; commands,
verification and pruning work on real sessions."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.utils import timezone

from terminals.models import AuditPrune, Command, Frame, Session
from tests.fixtures.terminal_client import run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

WEB = "/ws/terminals/kubesim/default/web/?container=main"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cookie() -> str:
    return session_cookie(make_user("sam", everywhere=True))


@pytest.fixture
def auditor_client() -> Client:
    auditor = make_user("audrey")
    auditor.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="terminals",
            codename__in=["view_session", "watch_session", "end_session"],
        )
    )
    client = Client()
    client.force_login(auditor)
    return client


def stored(session_id: str, direction: str) -> bytes:
    frames = Frame.objects.filter(session_id=session_id, direction=direction).order_by("seq")
    return b"".join(bytes(frame.data) for frame in frames)


def kubesim_stdin(kubesim, session_start) -> bytes:
    """Everything kubesim's process received on stdin for the exec that ``session_start`` began."""
    exec_id = session_start["exec"]
    return b"".join(
        base64.b64decode(event["data"])
        for event in kubesim.transcript_events()
        if event["event"] == "stdin" and event["exec"] == exec_id
    )


async def test_stored_frames_equal_what_the_pod_received_and_the_browser_was_sent(
    daphne, kubesim, cookie
):
    async with terminal(daphne, WEB, cookie, size=(100, 30)) as client:
        ready = await client.until_message("ready")
        await run_line(client, "echo 'héllo wörld 日本'; " + say("one"), "one")
        await client.resize(120, 40)
        await run_line(client, "stty size; " + say("two"), "two")
        await client.type(
            b"printf 'A\\303'; sleep 0.2; printf '\\251B\\n'; " + say("three").encode() + b"\r"
        )
        await client.until_output("three")
        await client.type("exit\r")
        assert await client.until_closed() == 1000
    session_id = ready["session"]
    start = await kubesim.event(
        lambda e: e["event"] == "start" and e["pod"] == "web" and e.get("tty")
    )
    # The exec whose stdin carries this session's first command is this session's.
    starts = [e for e in kubesim.transcript_events() if e["event"] == "start" and e["pod"] == "web"]
    received = b""
    for start in starts:
        received = kubesim_stdin(kubesim, start)
        if "héllo wörld 日本".encode() in received:
            break
    await kubesim.event(lambda e: e["event"] == "exit" and e["exec"] == start["exec"])
    stdin = await sync_to_async(stored)(session_id, "i")
    stdout = await sync_to_async(stored)(session_id, "o")
    assert stdin == received
    assert stdout == bytes(client.output)
    resizes = await sync_to_async(
        lambda: [
            bytes(f.data)
            for f in Frame.objects.filter(session_id=session_id, direction="r").order_by("seq")
        ]
    )()
    assert resizes == [b"100x30", b"120x40"]
    session = await Session.objects.aget(pk=session_id)
    assert session.bytes_in == len(stdin) and session.bytes_out == len(stdout)
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "manage.py", "audit", "verify", session_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=_manage_env(),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{session_id}: intact" in out.stdout


def _manage_env():
    import os

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    env["WEBSHELL_TEST_DB_NAME"] = str(connection.settings_dict["NAME"])
    return env


def rename_table(old: str, new: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {old} RENAME TO {new}")


async def test_a_store_failure_mid_session_ends_it_with_4503_and_forwards_nothing_more(
    daphne, kubesim, cookie
):
    async with terminal(daphne, WEB, cookie) as client:
        ready = await client.until_message("ready")
        await run_line(client, say("before"), "before")
        await sync_to_async(rename_table)("terminals_frame", "terminals_frame_away")
        try:
            seen = len(client.output)
            await client.type("echo after-the-failure\r")
            assert await client.until_closed() == 4503
        finally:
            await sync_to_async(rename_table)("terminals_frame_away", "terminals_frame")
    assert client.messages[-1]["code"] == "audit_unavailable"
    # Output committed before the failure (the next prompt) may still arrive; nothing after it,
    # not even the echo of the line typed once the store was down.
    assert b"after-the-failure" not in client.output[seen:]
    session = await Session.objects.aget(pk=ready["session"])
    assert session.end_reason == Session.EndReason.AUDIT_UNAVAILABLE
    # The pod never got the line that could not be recorded.
    assert not any(
        b"after-the-failure" in base64.b64decode(e["data"])
        for e in kubesim.transcript_events()
        if e["event"] == "stdin"
    )


async def test_no_session_opens_while_the_store_is_down(daphne, cookie):
    await sync_to_async(rename_table)("terminals_session", "terminals_session_away")
    try:
        async with terminal(daphne, WEB, cookie) as client:
            assert await client.until_closed() == 4503
    finally:
        await sync_to_async(rename_table)("terminals_session_away", "terminals_session")
    assert client.messages[-1] == {
        "type": "error",
        "code": "audit_unavailable",
        "message": "The audit store is unavailable, so no terminal can open.",
    }


async def test_the_export_plays_in_asciinema_and_matches_the_output(
    daphne, cookie, auditor_client, tmp_path
):
    async with terminal(daphne, WEB, cookie, size=(90, 20)) as client:
        ready = await client.until_message("ready")
        await run_line(client, "printf '\\033[1mbold\\033[0m 中文 é\\n'; " + say("done"), "done")
        await client.type("exit\r")
        await client.until_closed()
    response = await sync_to_async(auditor_client.get)(
        f"/terminals/sessions/{ready['session']}.cast"
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-asciicast"
    cast = await sync_to_async(b"".join)(response.streaming_content)  # reads the store
    path = tmp_path / "session.cast"
    path.write_bytes(cast)
    played = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "asciinema"), "cat", str(path)],
        capture_output=True,
        timeout=60,
    )
    assert played.returncode == 0, played.stderr
    assert played.stdout == bytes(client.output)
    header = cast.split(b"\n", 1)[0].decode()
    assert '"width": 90' in header and '"height": 20' in header
    assert b'"i", "exit\\r"' in cast
    # manage.py audit export writes the same file.
    exported = tmp_path / "exported.cast"
    await sync_to_async(call_command)("audit", "export", ready["session"], "-o", str(exported))
    assert exported.read_bytes() == cast


async def test_commands_come_from_the_screen_with_history_and_tab_completion(daphne, cookie):
    async with terminal(daphne, WEB, cookie) as client:
        ready = await client.until_message("ready")
        await run_line(
            client, "cd $(mktemp -d) && touch unusual-file-name.txt && " + say("ready"), "ready"
        )
        await run_line(client, "echo first; " + say("one"), "one")
        start = len(client.output)
        await client.type(b"\x1b[A")  # up arrow: the previous line comes back
        await client.until_output("echo first", start)
        start = len(client.output)
        await client.type(b"\r")
        await client.until_output("one", start)
        start = len(client.output)
        await client.type(b"ls unus\t")  # tab completes the file name
        await client.until_output("ual-file-name.txt", start)
        await client.type(b"\r")
        await client.until_output("unusual-file-name.txt\r\n", start)
        await client.type("exit\r")
        await client.until_closed()
    texts = await sync_to_async(
        lambda: list(
            Command.objects.filter(session_id=ready["session"]).values_list("text", flat=True)
        )
    )()
    assert texts[-4:] == [
        f"echo first; {say('one')}",
        f"echo first; {say('one')}",
        "ls unusual-file-name.txt",
        "exit",
    ]


def tamper_and_verify(session_id: str, tamper) -> str:
    tamper()
    with pytest.raises(CommandError) as caught:
        call_command("audit", "verify", session_id, stdout=open("/dev/null", "w"))
    assert caught.value.returncode == 1
    return str(caught.value)


async def test_verify_names_the_first_bad_frame_of_an_edited_deleted_or_swapped_session(
    daphne, cookie, capsys
):
    sessions = []
    for _ in range(3):
        async with terminal(daphne, WEB, cookie) as client:
            ready = await client.until_message("ready")
            await run_line(client, say("recorded"), "recorded")
            await client.type("exit\r")
            await client.until_closed()
        sessions.append(ready["session"])
    edited, deleted, swapped = sessions

    def check():
        frames = lambda sid: Frame.objects.filter(session_id=sid)  # noqa: E731
        call_command("audit", "verify", edited)
        assert "intact" in capsys.readouterr().out
        frames(edited).filter(seq=3).update(data=b"something else")
        with pytest.raises(CommandError):
            call_command("audit", "verify", edited)
        assert "BROKEN at frame 3" in capsys.readouterr().out
        frames(deleted).filter(seq=2).delete()
        with pytest.raises(CommandError):
            call_command("audit", "verify", deleted)
        assert "BROKEN at frame 2: frame 2 is missing" in capsys.readouterr().out
        frames(swapped).filter(seq=1).update(seq=-1)
        frames(swapped).filter(seq=2).update(seq=1)
        frames(swapped).filter(seq=-1).update(seq=2)
        with pytest.raises(CommandError) as caught:
            call_command("audit", "verify")  # every session
        out = capsys.readouterr().out
        assert "BROKEN at frame 1" in out
        assert caught.value.returncode == 1 and "3 session(s) failed" in str(caught.value)

    await sync_to_async(check)()


async def test_prune_removes_old_ended_sessions_and_records_it(daphne, cookie, capsys):
    async with terminal(daphne, WEB, cookie) as client:
        ready = await client.until_message("ready")
        await client.type("exit\r")
        await client.until_closed()

    def check():
        tomorrow = (timezone.now() + timezone.timedelta(days=1)).date().isoformat()
        call_command("audit", "prune", "--before", tomorrow)
        assert "Removed 1 session(s)" in capsys.readouterr().out
        record = AuditPrune.objects.get()
        assert record.session_ids == [ready["session"]] and record.frames > 0
        assert not Session.objects.exists() and not Frame.objects.exists()
        with pytest.raises(CommandError, match="not a date"):
            call_command("audit", "prune", "--before", "last tuesday")

    await sync_to_async(check)()
