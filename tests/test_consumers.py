"""TerminalConsumer end to end: a real WebSocket client → real Daphne → kubesim → a real shell."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json

import pytest
from asgiref.sync import sync_to_async

from terminals.audit import store
from terminals.models import Session
from tests.fixtures.daphne import daphne_environment, run_daphne
from tests.fixtures.terminal_client import run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie
from tests.test_faults_process import ended_record

pytestmark = pytest.mark.django_db(transaction=True)

WEB = "/ws/terminals/kubesim/default/web/"
ALPINE = "/ws/terminals/kubesim/default/alpine/"
MULTI = "/ws/terminals/kubesim/default/multi/"


@pytest.fixture
def staff_cookie() -> str:
    """A user whom an access rule lets open every pod's shells."""
    return session_cookie(make_user("sam", everywhere=True))


async def test_a_shell_starts_answers_and_exits_with_its_code(daphne, staff_cookie):
    async with terminal(daphne, WEB, staff_cookie) as client:
        ready = await client.until_message("ready")
        assert ready["container"] == "main"
        assert ready["command"] == ["/bin/bash"]
        session = await Session.objects.aget(pk=ready["session"])
        assert (session.username, session.namespace, session.pod) == ("sam", "default", "web")
        out = await run_line(client, "echo hello-$((40+2))", "hello-42")
        assert b"hello-42" in out
        await client.type("exit 3\r")
        assert await client.until_closed() == 1000
        assert client.messages[-1] == {"type": "exit", "code": 3}
    session = await Session.objects.aget(pk=ready["session"])
    assert session.exit_code == 3
    assert session.end_reason == Session.EndReason.EXIT
    assert session.ended_at is not None


async def test_the_browser_size_is_applied_before_the_prompt_and_resizes_follow(
    daphne, staff_cookie
):
    async with terminal(daphne, WEB, staff_cookie, size=(101, 31)) as client:
        await client.until_message("ready")
        assert b"31 101" in await run_line(client, "stty size", "31 101")
        await client.resize(120, 40)
        assert b"40 120" in await run_line(client, "stty size", "40 120")


async def test_a_pod_with_only_sh_falls_back_without_the_user_seeing_it(daphne, staff_cookie):
    async with terminal(daphne, ALPINE, staff_cookie) as client:
        ready = await client.until_message("ready")
        assert ready["command"] == ["/bin/sh"]
        await run_line(client, say("fallback-ok"), "fallback-ok")
        assert b"not found" not in client.output
        assert [m["type"] for m in client.messages] == ["ready"]


async def test_a_container_is_chosen_by_query_or_defaults_to_the_first(daphne, staff_cookie):
    async with terminal(daphne, MULTI + "?container=sidecar", staff_cookie) as client:
        assert (await client.until_message("ready"))["container"] == "sidecar"
    async with terminal(daphne, MULTI, staff_cookie) as client:
        assert (await client.until_message("ready"))["container"] == "app"


async def test_an_explicit_shell_runs_without_fallback(daphne, staff_cookie):
    async with terminal(daphne, WEB + "?command=/bin/sh", staff_cookie) as client:
        assert (await client.until_message("ready"))["command"] == ["/bin/sh"]


async def test_input_typed_before_ready_is_held_and_delivered(daphne, staff_cookie):
    async with terminal(daphne, WEB, staff_cookie) as client:
        await client.type(say("early-bird") + "\r")
        await client.until_output("early-bird")
        assert client.messages[0]["type"] == "ready"


async def test_split_utf8_and_raw_bytes_arrive_as_bytes(daphne, staff_cookie):
    async with terminal(daphne, WEB, staff_cookie) as client:
        await client.until_message("ready")
        out = await run_line(
            client, "printf 'A\\303'; sleep 0.3; printf '\\251B-\\344\\270\\255\\n'", "B-中"
        )
        assert "AéB-中".encode() in out


async def test_ctrl_c_interrupts_and_ctrl_d_exits(daphne, staff_cookie):
    async with terminal(daphne, WEB, staff_cookie) as client:
        await client.until_message("ready")
        await client.type("sleep 100\r")
        await client.until_output("sleep 100")
        await client.type(b"\x03")
        await run_line(client, say("after-interrupt"), "after-interrupt")
        await client.type(b"\x04")
        assert await client.until_closed() == 1000
        assert client.messages[-1]["type"] == "exit"


async def test_a_one_mebibyte_paste_arrives_whole(daphne, staff_cookie):
    async with terminal(daphne, WEB, staff_cookie) as client:
        await client.until_message("ready")
        await run_line(client, "stty -echo; " + say("ready"), "ready")
        await client.type("wc -c\r")
        line = b"x" * 1023 + b"\n"
        paste = line * 1024
        for start in range(0, len(paste), 16 * 1024):  # as the page chunks it
            await client.type(paste[start : start + 16 * 1024])
        start = len(client.output)
        await client.type(b"\x04")
        await client.until_output("1048576", start)


async def test_fifty_mebibytes_of_output_arrive_intact(daphne, staff_cookie):
    count = 7_000_000  # 54.9 MB of numbered lines
    expected = hashlib.sha256("".join(f"{i}\n" for i in range(1, count + 1)).encode())
    async with terminal(daphne, WEB, staff_cookie) as client:
        await client.until_message("ready")
        await client.type(
            f"stty -echo -opost; {say('BEGIN')}; seq 1 {count}; {say('DONE')}; stty echo opost\r"
        )
        start = await client.until_output(b"BEGIN\n")
        end = await client.until_output(b"DONE\n", start, timeout=180)
        body = bytes(client.output[start : end - len(b"DONE\n")])
        assert len(body) > 50 * 1024 * 1024
        assert hashlib.sha256(body).hexdigest() == expected.hexdigest()


async def test_vi_full_screen_edits_a_file(daphne, staff_cookie):
    async with terminal(daphne, WEB, staff_cookie, size=(80, 24)) as client:
        await client.until_message("ready")
        await run_line(client, "cd $(mktemp -d) && " + say("in-tmp"), "in-tmp")
        await client.type("vi -u NONE notes.txt\r")
        await client.until_output("\x1b[")  # vi draws the screen
        await client.type("ihello from vi\x1b")
        await client.type(":wq\r")
        written = await client.until_output("written")
        await client.until_output("\x1b[?1049l", written)  # vi left the alternate screen
        out = await run_line(client, "cat notes.txt; " + say("end"), "end")
        assert b"hello from vi" in out


# Refusals: each close code the consumer can produce here, with the message the page shows.


@pytest.mark.parametrize(
    ("path", "code", "word", "text"),
    [
        ("/ws/terminals/kubesim/default/Bad_Pod/", 4400, "bad_request", "not a valid pod name"),
        ("/ws/terminals/kubesim/No-NS/web/", 4400, "bad_request", "not a valid namespace name"),
        (WEB + "?container=Bad!", 4400, "bad_request", "not a valid container name"),
        ("/ws/terminals/kubesim/default/nope/", 4404, "not_found", 'pods "nope" not found'),
        (WEB + "?container=nope", 4404, "not_found", "container nope is not valid for pod web"),
        (
            "/ws/terminals/elsewhere/default/web/",
            4404,
            "not_found",
            "no cluster called 'elsewhere'",
        ),
        ("/ws/terminals/kubesim/default/done/", 4404, "not_found", "is not running"),
        (WEB + "?command=vi", 4403, "forbidden", "may not open a terminal"),
    ],
)
async def test_refusals_say_why(daphne, staff_cookie, path, code, word, text):
    async with terminal(daphne, path, staff_cookie) as client:
        assert await client.until_closed() == code
        assert client.messages[-1]["code"] == word
        assert text in client.messages[-1]["message"]


async def test_anonymous_and_unprivileged_users_are_refused(daphne):
    async with terminal(daphne, WEB, None) as client:
        assert await client.until_closed() == 4401
    cookie = await sync_to_async(lambda: session_cookie(make_user("nobody", is_staff=True)))()
    async with terminal(daphne, WEB, cookie) as client:
        assert await client.until_closed() == 4403
        assert client.messages == [
            {
                "type": "error",
                "code": "forbidden",
                "message": "You may not open a terminal on kubesim/default/web.",
            }
        ]
    assert not await Session.objects.filter(username="nobody").aexists()


@pytest.mark.parametrize(
    ("frame", "code", "word"),
    [
        ("not json", 4400, "bad_request"),
        (json.dumps({"type": "resize", "cols": 0, "rows": 5}), 4400, "bad_request"),
        (b"x" * (64 * 1024 + 1), 4413, "frame_too_large"),
    ],
)
async def test_bad_frames_end_only_that_session(daphne, staff_cookie, frame, code, word):
    async with terminal(daphne, WEB, staff_cookie) as bystander:
        await bystander.until_message("ready")
        async with terminal(daphne, WEB, staff_cookie) as client:
            await client.until_message("ready")
            if isinstance(frame, bytes):
                await client.ws.send_bytes(frame)
            else:
                await client.ws.send_str(frame)
            assert await client.until_closed() == code
            assert client.messages[-1]["code"] == word
        assert b"still-here" in await run_line(bystander, say("still-here"), "still-here")


# Limits, each on a Daphne of its own with the limit set low.


@contextlib.contextmanager
def daphne_with(kubesim, **terminals):
    env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps(terminals)
    with run_daphne(env) as server:
        yield server


async def test_idle_sessions_end_with_4408(kubesim, staff_cookie):
    with daphne_with(kubesim, IDLE_TIMEOUT=2) as server:
        async with terminal(server, WEB, staff_cookie) as client:
            await client.until_message("ready")
            assert await client.until_closed() == 4408
            assert client.messages[-1]["code"] == "idle"
    session = await Session.objects.aget(username="sam")
    assert session.end_reason == Session.EndReason.IDLE


async def test_sessions_end_at_their_maximum_duration_with_4410(kubesim, staff_cookie):
    with daphne_with(kubesim, MAX_DURATION=3) as server:
        async with terminal(server, WEB, staff_cookie) as client:
            await client.until_message("ready")
            await client.type("while true; do echo busy; sleep 0.2; done\r")
            assert await client.until_closed() == 4410
            assert client.messages[-1]["code"] == "max_duration"


async def test_a_user_may_hold_only_so_many_sessions(kubesim, staff_cookie):
    with daphne_with(kubesim, MAX_SESSIONS_PER_USER=1) as server:
        async with terminal(server, WEB, staff_cookie) as first:
            ready = await first.until_message("ready")
            async with terminal(server, WEB, staff_cookie) as second:
                assert await second.until_closed() == 4429
                assert "close one first" in second.messages[-1]["message"]
        # The first one ended when its socket closed (recorded by the server a moment later:
        # poll the store), so a new one may open.
        await ended_record(ready["session"])
        async with terminal(server, WEB, staff_cookie) as third:
            await third.until_message("ready")


async def test_a_cluster_that_refuses_gives_4502_with_its_message(kubesim, staff_cookie):
    env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps(
        {"CLUSTERS": {"kubesim": {"kubeconfig": str(kubesim.kubeconfig), "context": "kubesim-bob"}}}
    )
    with run_daphne(env) as server:
        async with terminal(server, WEB + "?container=main", staff_cookie) as client:
            assert await client.until_closed() == 4502
            assert client.messages[-1]["code"] == "upstream"
            assert 'User "bob" cannot create resource "pods/exec"' in client.messages[-1]["message"]


async def test_an_unreachable_cluster_gives_4502(kubesim, staff_cookie, tmp_path):
    env = daphne_environment(kubesim)
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps(
        {"CLUSTERS": {"kubesim": {"kubeconfig": str(tmp_path / "missing"), "context": "x"}}}
    )
    with run_daphne(env) as server:
        async with terminal(server, WEB, staff_cookie) as client:
            assert await client.until_closed() == 4502
            assert client.messages[-1]["message"] == "The cluster is not configured."


async def test_a_browser_that_stops_acknowledging_stops_the_reading(daphne, staff_cookie):
    """Output waits for the browser: the server reads at most UNDELIVERED_LIMIT ahead."""
    window = 1024 * 1024  # TERMINALS["OUTPUT_BUFFER"]
    async with terminal(daphne, WEB, staff_cookie, acknowledge=False) as client:
        ready = await client.until_message("ready")
        await client.type(f"stty -echo; {say('BEGIN')}; seq 1 8000000; {say('DONE')}\r")
        await client.until_output("BEGIN")
        # Without acks the server sends one window and waits; it must not read the pod on.
        await client.until_output(b"\n", start=window - 64 * 1024)

        async def stored() -> int:
            # A live session's counters are written when it ends: count its stored frames.
            totals = await sync_to_async(store.totals)(ready["session"])
            return int(totals["bytes_out"])

        previous, now = -1, await stored()
        for _ in range(20):  # until the stored output stops growing (it must, and soon)
            if now == previous:
                break
            await asyncio.sleep(0.25)  # another process's progress: nothing to await but time
            previous, now = now, await stored()
        assert now == previous, "the server kept reading output nobody acknowledged"
        assert now <= window + 4 * 1024 * 1024 + 256 * 1024  # window + UNDELIVERED_LIMIT
        assert len(client.output) <= window + 64 * 1024

        # Acknowledging lets the rest through, intact.
        client.acknowledge = True
        await client.send_json({"type": "ack", "bytes": len(client.output)})
        client._unacked = 0
        await client.until_output("DONE", timeout=120)
    assert b"\r\n7999999\r\n8000000\r\n" in client.output
