"""Command lines end to end, through a real Daphne, kubesim and bash or sh in a PTY: what the
person hides or forges on the screen is recorded as typed and marked; a full-screen program and
a smaller window lose nothing; a paste of thousands of lines makes a bounded number of rows."""

from __future__ import annotations

import random
import string

import pytest
from asgiref.sync import sync_to_async

from terminals.audit.commands import MAX_FRAME_ROWS, MAX_TEXT_BYTES
from terminals.models import Command
from tests.fixtures.terminal_client import run_line, say, terminal
from tests.fixtures.users import make_user, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

BASH = "/ws/terminals/kubesim/default/web/?container=main"  # bash
SH = "/ws/terminals/kubesim/default/alpine/?container=main"  # sh only
SHELLS = pytest.mark.parametrize("path", [BASH, SH], ids=["bash", "sh"])


@pytest.fixture
def cookie() -> str:
    return session_cookie(make_user("sam", everywhere=True))


async def commands_of(session_id: str) -> list[Command]:
    return await sync_to_async(
        lambda: list(Command.objects.filter(session_id=session_id).order_by("offset_us", "pk"))
    )()


async def finish(client) -> None:
    await client.type("exit\r")
    assert await client.until_closed() == 1000


def no_extraction_failures(daphne) -> None:
    log = "\n".join(daphne.log)
    assert "Command extraction failed" not in log and "IndexError" not in log


@SHELLS
async def test_a_command_typed_after_stty_minus_echo_is_recorded_as_typed(daphne, cookie, path):
    async with terminal(daphne, path, cookie) as client:
        ready = await client.until_message("ready")
        await run_line(client, "stty -echo; " + say("quiet"), "quiet")
        await run_line(client, "echo hidden-$((6*7))", "hidden-42")
        await run_line(client, "stty echo; " + say("loud"), "loud")
        await finish(client)
    by_typed = {command.typed: command for command in await commands_of(ready["session"])}
    hidden = by_typed["echo hidden-$((6*7))"]
    assert hidden.text == "echo hidden-$((6*7))"  # not its output in its place
    assert not hidden.echoed
    assert "hidden-42" not in hidden.text
    assert by_typed["stty -echo; " + say("quiet")].echoed
    no_extraction_failures(daphne)


@SHELLS
async def test_a_forged_prompt_line_is_recorded_beside_what_was_typed(daphne, cookie, path):
    async with terminal(daphne, path, cookie) as client:
        ready = await client.until_message("ready")
        start = len(client.output)
        # \044 is "$": the echo of this line does not show "$ innocent", its output does.
        await client.type("printf '\\033[2K\\r\\044 innocent'; read x\r")
        await client.until_output("$ innocent", start)
        await client.type("\r")
        await run_line(client, say("after"), "after")
        await finish(client)
    [forged] = [c for c in await commands_of(ready["session"]) if c.text == "innocent"]
    assert (forged.line, forged.typed, forged.mismatch) == ("$ innocent", "", True)
    no_extraction_failures(daphne)


async def test_commands_after_vi_and_a_smaller_window_are_recorded(daphne, cookie):
    async with terminal(daphne, BASH, cookie, size=(120, 50)) as client:
        ready = await client.until_message("ready")
        await run_line(client, say("before"), "before")
        start = len(client.output)
        await client.type("vi -u NONE notes.txt\r")
        await client.until_output("notes.txt", start + len("vi -u NONE notes.txt"))
        await client.type("ihello\x1b")
        await client.until_output("hello", start + 30)
        start = len(client.output)
        await client.type(":q!\r")
        await client.until_output("\x1b[?1049l", start)
        await client.resize(80, 24)
        await run_line(client, "echo after-vi; " + say("one"), "one")
        await run_line(client, "echo again; " + say("two"), "two")
        await finish(client)
    texts = [c.text for c in await commands_of(ready["session"])]
    assert texts[-3:] == ["echo after-vi; " + say("one"), "echo again; " + say("two"), "exit"]
    assert "vi -u NONE notes.txt" in texts
    no_extraction_failures(daphne)


async def test_a_paste_of_thousands_of_lines_makes_a_bounded_number_of_rows(daphne, cookie):
    async with terminal(daphne, BASH, cookie) as client:
        ready = await client.until_message("ready")
        await run_line(client, say("ready"), "ready")
        await client.type(b": pasted\r" * 7000)  # 63,000 bytes: one frame
        await run_line(client, say("pasted"), "pasted")
        await finish(client)
    rows = [c for c in await commands_of(ready["session"]) if ": pasted" in c.text + c.typed]
    assert len(rows) <= 1 + MAX_FRAME_ROWS + 1
    assert rows[-1].text == f"[{7000 - 1 - MAX_FRAME_ROWS} more lines in this frame: see its input]"
    no_extraction_failures(daphne)


async def test_a_very_long_command_line_is_indexed_clipped_and_the_session_goes_on(daphne, cookie):
    # Incompressible: PostgreSQL's btree index refuses an entry over 2,704 bytes, which would
    # fail the audit commit and end the session (4503) if the row were not clipped.
    noise = "".join(random.Random(7).choices(string.ascii_letters + string.digits, k=6000))
    async with terminal(daphne, BASH, cookie) as client:
        ready = await client.until_message("ready")
        await run_line(client, f": typed {noise}; " + say("long"), "long")
        # A long line inside a paste (the lines after the first come from the input).
        await run_line(client, f": first\r: pasted {noise}\r" + say("pasted"), "pasted")
        await run_line(client, say("still-here"), "still-here")
        await finish(client)
    rows = await commands_of(ready["session"])
    long = [c for c in rows if c.typed.startswith((": typed ", ": pasted "))]
    assert [c.text[:9] for c in long] == [": typed " + noise[0], ": pasted "]
    for command in long:
        assert len(command.text.encode()) <= MAX_TEXT_BYTES
        assert len(command.typed.encode()) <= MAX_TEXT_BYTES
