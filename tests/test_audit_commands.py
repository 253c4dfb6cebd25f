"""Command lines: the line as typed (keys through line editing) beside the line as shown (a
bounded screen model), with the marks when they disagree. The byte sequences are what bash 5.2
and dash wrote in a PTY for these keys."""

from __future__ import annotations

import pytest

from terminals.audit import commands as commands_module
from terminals.audit.commands import (
    CELLS_PER_UNIT,
    KEEP,
    LAZY_EVENTS,
    LAZY_INPUT,
    MAX_COLS,
    MAX_EVENTS,
    MAX_FRAME_ROWS,
    MAX_ROWS,
    MAX_TEXT_BYTES,
    MAX_WRAP,
    READ_COST,
    RESIZE_COST,
    SCREENFUL,
    TAIL,
    CommandExtractor,
    ScreenModel,
    split_prompt,
)
from terminals.audit.lineedit import MAX_LINE, LineEditor, Typed


def run(*steps, cols=80, rows=24, extractor=None):
    """Feed ("in", bytes), ("out", bytes) and ("size", (cols, rows)) steps, doing the work
    after each as a session's worker would; return the rows found (and the session's end)."""
    extractor = extractor or CommandExtractor(cols, rows)
    found = []
    for offset, (kind, data) in enumerate(steps):
        if kind == "in":
            found += extractor.stdin(data, offset)
        elif kind == "out":
            found += extractor.output(data, offset)
        else:
            found += extractor.resize(*data)
        found += extractor.drain()
    return found + extractor.finish()


def texts(found):
    return [c.text for c in found]


# Typed and shown agree.


def test_a_typed_command_is_read_off_the_screen_and_agrees_with_the_keys():
    found = run(("out", b"user@pod:~$ "), ("in", b"l"), ("out", b"l"), ("in", b"s"),
                ("out", b"s"), ("in", b"\r"), ("out", b"\r\nfile\r\nuser@pod:~$ "))  # fmt: skip
    [command] = found
    assert (command.line, command.text, command.typed) == ("user@pod:~$ ls", "ls", "ls")
    assert (command.echoed, command.mismatch, command.kind) == (True, False, Typed.EXACT)
    assert command.offset_us == 5


def test_a_line_typed_in_one_frame_agrees_once_its_echo_comes():
    # The Enter arrives before any echo (a paste, a fast typist on a slow link).
    [command] = run(("out", b"$ "), ("in", b"ls -l\r"), ("out", b"ls -l\r\ntotal 0\r\n$ "))
    assert (command.text, command.echoed, command.mismatch) == ("ls -l", True, False)


def test_a_custom_prompt_is_whatever_precedes_the_typed_line():
    [command] = run(("out", b"\xe2\x9d\xaf "), ("in", b"uptime\r"), ("out", b"uptime\r\n"))
    assert (command.line, command.text, command.mismatch) == ("\u276f uptime", "uptime", False)


def test_history_recall_gives_the_recalled_line_and_the_keys():
    found = run(
        ("out", b"$ "), ("in", b"\x1b[A"), ("out", b"echo from history"),
        ("in", b"\r"), ("out", b"\r\nfrom history\r\n$ "),
    )  # fmt: skip
    [command] = found
    assert (command.text, command.typed, command.kind) == ("echo from history", "⟨↑⟩", "keys")
    assert (command.echoed, command.mismatch) == (True, False)


def test_tab_completion_and_line_editing_give_the_final_line():
    found = run(
        ("out", b"# "), ("in", b"ech"), ("out", b"ech"), ("in", b"\t"), ("out", b"o "),
        ("in", b"hellp"), ("out", b"hellp"), ("in", b"\x7f"), ("out", b"\x08\x1b[K"),
        ("in", b"o"), ("out", b"o"), ("in", b"\r"), ("out", b"\r\nhello\r\n# "),
    )  # fmt: skip
    [command] = found
    assert (command.text, command.typed, command.kind) == ("echo hello", "ech⇥hello", "completed")
    assert not command.mismatch


def test_a_completion_the_screen_does_not_bear_out_is_marked():
    found = run(("out", b"$ "), ("in", b"cat /et\t"), ("out", b"c/"), ("in", b"\r"),
                ("out", b"\r\x1b[K$ rm -rf /srv\r\n"))  # fmt: skip
    [command] = found
    assert command.mismatch and command.typed == "cat /et⇥"


def test_a_long_command_that_wraps_reads_whole():
    line = b"echo " + b"x" * 100
    [command] = run(("out", b"$ "), ("in", line + b"\r"), ("out", line + b"\r\n"))
    assert command.text == line.decode() and not command.mismatch


def test_a_line_wider_than_the_model_reads_whole_on_a_wider_terminal():
    line = b"echo " + b"y" * 280  # one row of a 300-column terminal; the model has 240
    [command] = run(("out", b"$ "), ("in", line + b"\r"), ("out", line + b"\r\n"), cols=300)
    assert command.text == line.decode() and not command.mismatch


def test_a_pasted_block_gives_each_line_in_order():
    found = run(("out", b"$ "), ("in", b"echo a\recho b\r"), ("out", b"echo a\r\na\r\n$ "))
    assert texts(sorted(found, key=lambda c: c.offset_us)) == ["echo a", "echo b"]
    first, second = sorted(found, key=lambda c: c.offset_us)
    assert (first.kind, first.line) == ("exact", "$ echo a")
    assert (second.kind, second.line) == ("input", "")  # from the input: the screen not read


def test_a_bracketed_paste_runs_at_the_enter_one_command_per_line():
    found = run(
        ("out", b"\x1b[?2004h$ "),
        ("in", b"\x1b[200~echo p1\recho p2\r\x1b[201~"),
        ("out", b"\x1b[7mecho p1\x1b[27m\r\n\r\x1b[7mecho p2\x1b[27m\r\n\r"),
        ("in", b"\r"),
        ("out", b"\x1b[A\x1b[A\x1b[C\x1b[Cecho p1\r\n\recho p2\r\n\r\x1b[A\r\n\x1b[?2004l\rp1\r\n"),
    )  # fmt: skip
    assert texts(sorted(found, key=lambda c: c.offset_us)) == ["echo p1", "echo p2"]
    assert not any(c.mismatch for c in found)


def test_an_enter_on_an_empty_prompt_or_in_running_output_is_no_command():
    assert run(("out", b"$ "), ("in", b"\r"), ("out", b"\r\n$ ")) == []
    assert run(("out", b"64 bytes from 10.0.0.1: seq=1"), ("in", b"\r"), ("out", b"\r\n")) == []


def test_prompts_are_split_off():
    assert split_prompt("root@web:/app# ls -la") == "ls -la"
    assert split_prompt("bash-5.2$ echo $HOME") == "echo $HOME"
    assert split_prompt("no prompt here") == "no prompt here"


# Point 5: a command hidden or forged on the screen.

BASH_NO_ECHO = [
    ("out", b"\x1b[?2004h$ "), ("in", b"stty -echo\r"), ("out", b"stty -echo"),
    ("out", b"\r\n\x1b[?2004l\r"), ("out", b"\x1b[?2004h$ "), ("in", b"echo secret\r"),
    ("out", b"\x1b[?2004l\r\r\nsecret\r\n\x1b[?2004h$ "),
]  # fmt: skip
SH_NO_ECHO = [
    ("out", b"$ "), ("in", b"stty -echo\r"), ("out", b"stty -echo\r\n$ "),
    ("in", b"echo secret\r"), ("out", b"secret\r\n$ "), ("in", b"true\r"), ("out", b"$ "),
]  # fmt: skip


def test_a_command_typed_after_stty_minus_echo_in_bash_is_recorded_as_typed():
    found = run(*BASH_NO_ECHO)
    assert texts(found) == ["stty -echo", "echo secret"]
    hidden = found[1]
    assert (hidden.typed, hidden.line, hidden.echoed, hidden.mismatch) == (
        "echo secret", "$", False, False,
    )  # fmt: skip


def test_a_command_typed_after_stty_minus_echo_in_sh_is_not_replaced_by_its_output():
    found = run(*SH_NO_ECHO)
    assert texts(found) == ["stty -echo", "echo secret", "true"]
    hidden = found[1]
    assert (hidden.typed, hidden.line) == ("echo secret", "$ secret")
    assert not hidden.echoed and hidden.mismatch  # the screen showed its output instead
    # No newline followed "true": it is decided at the end of the session.
    assert (found[2].typed, found[2].echoed) == ("true", False)


@pytest.mark.parametrize(
    "echo_of_the_enter",
    [b"\r\n", b"\r\n\x1b[?2004h$ "],  # sh's read, bash's read
)
def test_a_forged_prompt_line_is_recorded_as_nobody_typed_it(echo_of_the_enter):
    typed = b'printf "\\033[2K\\r$ innocent"; read x\r'
    found = run(
        ("out", b"$ "), ("in", typed), ("out", typed[:-1] + b"\r\n"),
        ("out", b"\x1b[2K\r$ innocent"), ("in", b"\r"), ("out", echo_of_the_enter),
    )  # fmt: skip
    assert texts(found) == [typed[:-1].decode(), "innocent"]
    forged = found[1]
    assert (forged.line, forged.typed, forged.mismatch, forged.echoed) == (
        "$ innocent", "", True, True,
    )  # fmt: skip


def test_a_typed_command_drawn_over_before_its_newline_is_marked():
    found = run(("out", b"$ "), ("in", b"rm -rf /data"), ("out", b"rm -rf /data"),
                ("in", b"\r"), ("out", b"\r\x1b[2K$ ls\r\n"))  # fmt: skip
    [command] = found
    assert (command.text, command.typed, command.line) == ("rm -rf /data", "rm -rf /data", "$ ls")
    assert command.mismatch and command.echoed


# Point 5: a full-screen program, then a smaller window.


VI_THEN_SMALLER = [
    ("size", (120, 50)), ("out", b"$ "), ("in", b"vi notes\r"),
    ("out", b"vi notes\r\n\x1b[?1049h\x1b[1;50r\x1b[H\x1b[2J\x1b[50;1H\"notes\" [New]"),
    ("out", b"\x1b[2;1H~\x1b[3;1H~\x1b[1;1H"), ("in", b"ihello\x1b"), ("out", b"hello"),
    ("in", b":q!\r"), ("out", b"\x1b[50;1H:q!\x1b[50;1H\x1b[K\x1b[?1049l$ "),
    ("size", (80, 24)),
]  # fmt: skip


def vi_then_smaller(*after):
    """vi on a 120x50 terminal, quit, the window shrinks to 80x24, then ``after``."""
    return run(*VI_THEN_SMALLER, *after)


def test_commands_after_a_full_screen_program_and_a_smaller_window_are_recorded():
    found = vi_then_smaller(("in", b"echo after\r"), ("out", b"echo after\r\nafter\r\n$ "))
    assert texts(found) == ["vi notes", "ihello⟨Esc⟩:q!", "echo after"]
    assert found[1].kind == "fullscreen" and not found[1].mismatch
    assert (found[2].line, found[2].mismatch) == ("$ echo after", False)


def test_a_smaller_window_keeps_the_cursor_on_the_screen():
    screen = ScreenModel(80, 50)
    screen.feed(b"\x1b[50;1H$ ")
    screen.resize(80, 24)
    assert screen.screen.cursor.y == 23
    assert screen.line() == "$"  # the cursor's row moved up with it
    assert max(screen.screen.buffer) < 24
    screen.feed(b"ls\r\n")  # no IndexError, and the screen goes on
    assert screen.screen.cursor.y == 23


def test_the_main_screen_comes_back_after_a_full_screen_program():
    screen = ScreenModel(40, 10)
    screen.feed(b"$ vim\r\n\x1b[?1049h\x1b[H\x1b[2Jfull screen\x1b[10;1H-- INSERT --")
    assert screen.screen.alternate and screen.line() == "-- INSERT --"
    screen.feed(b"\x1b[?1049l$ ")
    assert not screen.screen.alternate
    assert screen.screen.row_text(0) == "$ vim" and screen.line() == "$"


# Points 6 and 8: bounded work and rows.


def test_a_paste_of_thousands_of_lines_in_one_frame_makes_a_bounded_number_of_rows():
    found = run(("out", b"$ "), ("in", b"#\r" * 32000), ("out", b"#\r\n$ "))
    assert len(found) == 1 + MAX_FRAME_ROWS + 1
    summary = max(found, key=lambda c: c.offset_us)
    assert summary.text == f"[{32000 - 1 - MAX_FRAME_ROWS} more lines in this frame: see its input]"


def test_the_screen_model_is_capped_whatever_the_terminal_size():
    extractor = CommandExtractor(1000, 1000)
    assert extractor.screen.size == (MAX_COLS, MAX_ROWS)
    for size in [(1000, 1000), (10, 3), (999, 998)]:
        extractor.resize(*size)
        extractor.drain()
        assert extractor.screen.size == (min(size[0], MAX_COLS), min(size[1], MAX_ROWS))


def test_reading_a_line_reads_the_cursors_row_not_the_screen(monkeypatch):
    def whole_screen(self):
        raise AssertionError("the whole screen was read")

    monkeypatch.setattr(commands_module._Screen, "display", property(whole_screen))
    extractor = CommandExtractor(1000, 1000)
    extractor.output(b"x\r\n" * 500 + b"$ ")
    extractor.drain()
    read = []
    original = commands_module._Screen.row_text

    def counted(self, y):
        read.append(y)
        return original(self, y)

    monkeypatch.setattr(commands_module._Screen, "row_text", counted)
    found = run(("in", b"ls\r"), ("out", b"ls\r\n"), extractor=extractor)
    assert texts(found) == ["ls"]
    assert 0 < len(read) <= 3 * (MAX_WRAP + 1)  # the Enter, its newline, the end: a row each


def test_work_is_done_within_the_budget_it_is_given(monkeypatch):
    fed = []
    original = ScreenModel.feed

    def counted(self, data):
        fed.append(len(data))
        original(self, data)

    monkeypatch.setattr(ScreenModel, "feed", counted)
    extractor = CommandExtractor(1000, 1000)
    extractor.output(b"0123456789abcdef\r\n" * 20000)  # 360 kB: only KEEP stay queued
    extractor.stdin(b"ls\r", 1)
    extractor.output(b"ls\r\n")
    steps = []
    while extractor.busy:
        used, _ = extractor.work(1024)
        steps.append(used)
    assert sum(fed) <= KEEP + len(b"ls\r\n")
    assert max(fed) <= 1024
    assert max(steps) <= 1024 + max(READ_COST, RESIZE_COST)


def test_output_alone_is_kept_lazily_and_bounded():
    extractor = CommandExtractor(20, 3, keep=1024)
    for n in range(10000):
        extractor.output(b"line %d\r\n" % n, n)
    assert not extractor.busy  # nothing asks for the screen yet
    assert extractor._queued_output <= 1024
    assert extractor.fed_seq > 9000  # what fell off is behind the snapshot's seq


def test_a_flood_beyond_the_queue_is_dropped_with_one_row():
    extractor = CommandExtractor()
    found = []
    for n in range(MAX_EVENTS + 10):
        found += extractor.stdin(b"x\r", n)
    assert len(extractor._queue) <= MAX_EVENTS
    assert any("more input than the index could follow" in c.text for c in found)


def test_text_is_clipped_for_the_index():
    long = "é" * 5000
    [command] = run(("out", b"$ "), ("in", long.encode() + b"\r"), ("out", b"\r\n"))
    for value in (command.text, command.typed):
        assert len(value.encode()) <= MAX_TEXT_BYTES


def test_saved_cursors_do_not_pile_up():
    screen = ScreenModel(20, 3)
    screen.feed(b"\x1b7" * 10000)
    assert len(screen.screen.savepoints) <= commands_module.MAX_SAVEPOINTS


def test_vims_private_sgr_does_not_break_the_screen():
    screen = ScreenModel(20, 3)
    screen.feed(b"\x1b[?4mplain text")
    assert screen.line() == "plain text"


def test_a_snapshot_redraws_the_screen_with_colours():
    screen = ScreenModel(20, 3)
    screen.feed(b"\x1b[31mred\x1b[0m ok\r\n$ ")
    drawn = screen.render().decode()
    assert "\x1b[0;31mred" in drawn
    again = ScreenModel(20, 3)
    again.feed(screen.render())
    assert again.screen.display == screen.screen.display
    assert (again.screen.cursor.x, again.screen.cursor.y) == (2, 1)


def test_a_snapshot_on_a_taller_terminal_draws_at_its_bottom():
    screen = ScreenModel(20, 3)
    screen.feed(b"one\r\ntwo\r\n$ ")
    taller = ScreenModel(20, 10)
    taller.feed(screen.render(rows=10))
    assert [taller.screen.row_text(y) for y in (7, 8, 9)] == ["one", "two", "$"]
    assert taller.screen.cursor.y == 9


def test_the_snapshot_seq_is_the_last_frame_the_screen_took():
    extractor = CommandExtractor()
    extractor.output(b"$ ", 0)
    extractor.stdin(b"ls\r", 1)
    extractor.output(b"ls\r\n", 2)
    extractor.output(b"file\r\n$ ", 3)
    extractor.drain()
    screen, seq = extractor.snapshot()
    assert seq == 0  # the newline after the Enter was read; frame 2 is not whole yet
    assert b"ls" in screen


# Lazy screen work: output is fed only when a line or a snapshot is wanted.


@pytest.fixture
def fed(monkeypatch):
    """The bytes fed to pyte, as they go."""
    chunks: list[bytes] = []
    original = ScreenModel.feed

    def counted(self, data):
        chunks.append(bytes(data))
        original(self, data)

    monkeypatch.setattr(ScreenModel, "feed", counted)
    return chunks


def worked(extractor, steps, step=1024):
    """Queue ``steps`` as a session does, its worker working in steps of ``step`` whenever
    the extractor is busy (not otherwise); the rows found."""
    found = []
    for offset, (kind, data) in enumerate(steps):
        if kind == "in":
            found += extractor.stdin(data, offset)
        elif kind == "out":
            found += extractor.output(data, offset)
        else:
            found += extractor.resize(*data)
        while extractor.busy:
            used, rows = extractor.work(step)
            assert used <= step + max(READ_COST, RESIZE_COST)
            found += rows
    return found


def typed_with_echo(text):
    """Keys one frame each, each echoed, as a person types at a shell."""
    return [step for key in text for step in (("in", bytes([key])), ("out", bytes([key])))]


LINES = b"".join(b"%07d 0123456789abcdef0123456789abcdef\r\n" % n for n in range(2000))  # 90 kB

LAZY_SCENARIOS = {
    "stty -echo in bash": BASH_NO_ECHO,
    "stty -echo in sh": SH_NO_ECHO,
    "vi, then a smaller window": [
        *VI_THEN_SMALLER, ("in", b"echo after\r"), ("out", b"echo after\r\nafter\r\n$ "),
    ],
    "keys, editing and completion": [
        ("out", b"# "), *typed_with_echo(b"ech"), ("in", b"\t"), ("out", b"o "),
        *typed_with_echo(b"hellp"), ("in", b"\x7f"), ("out", b"\x08\x1b[K"),
        ("in", b"o"), ("out", b"o"), ("in", b"\r"), ("out", b"\r\nhello\r\n# "),
    ],
    "a burst between commands": [
        ("out", b"$ "), *typed_with_echo(b"cat log"), ("in", b"\r"), ("out", b"\r\n"),
        *[("out", LINES)] * 4, ("out", b"$ "), *typed_with_echo(b"uptime"), ("in", b"\r"),
        ("out", b"\r\nup 3 days\r\n$ "),
    ],
}  # fmt: skip


@pytest.mark.parametrize("steps", LAZY_SCENARIOS.values(), ids=LAZY_SCENARIOS.keys())
def test_lazy_work_finds_the_rows_that_eager_work_finds(steps):
    eager = run(*steps)
    extractor = CommandExtractor()
    assert worked(extractor, steps) + extractor.finish() == eager
    assert eager  # each scenario records something


def test_output_keys_and_resizes_without_an_enter_cost_no_pyte_work(fed):
    extractor = CommandExtractor()
    start = [("out", b"$ "), ("in", b"vi notes\r"), ("out", b"vi notes\r\n\x1b[?1049h\x1b[H")]
    assert texts(worked(extractor, start)) == ["vi notes"]
    before = sum(map(len, fed))
    redraw = b"".join(b"\x1b[%d;1H~ %d\x1b[K" % (y, y) for y in range(1, 25))
    steps = [("out", LINES)]  # a burst nobody reads a line from, then an editor's keys
    for n in range(1000):
        steps += [("in", b"j"), ("out", redraw)]
        if n % 100 == 0:
            steps.append(("size", (80 + n % 3, 24)))
    assert worked(extractor, steps) == [] and not extractor.busy
    assert sum(map(len, fed)) == before  # not a byte
    assert extractor._queued_output <= KEEP
    inputs = [event for event in extractor._queue if isinstance(event, commands_module._Input)]
    assert len(inputs) == 1  # the keys joined, across the output and resizes in between
    # The next Enter feeds what is kept; the keys joined are edited one frame at a time
    # (a lone Escape ending a frame is the Escape key, not Meta with the next key).
    found = worked(extractor, [("in", b"\x1b"), ("in", b":"), ("in", b"q\r")])
    found += extractor.finish()
    assert [(c.kind, c.typed[-8:]) for c in found] == [("fullscreen", "j⟨Esc⟩:q")]
    assert 0 < sum(map(len, fed)) - before <= KEEP + 64


def test_an_enter_after_a_burst_reads_its_line_and_feeds_a_screenful_at_most(fed):
    extractor = CommandExtractor()
    steps = LAZY_SCENARIOS["a burst between commands"]
    found = worked(extractor, steps)
    assert [(c.text, c.echoed, c.mismatch) for c in found] == [
        ("cat log", True, False), ("uptime", True, False),
    ]  # fmt: skip
    assert sum(map(len, fed)) <= SCREENFUL * 80 * 24 + 200  # of 360 kB, 64 kB of them kept
    shown = [extractor.screen.screen.row_text(y) for y in range(24)]
    # The screen as the Enter found it: the burst's last lines, whole, then the command.
    assert shown == [line.decode() for line in LINES.splitlines()[-23:]] + ["$ uptime"]


def test_many_keys_or_resizes_without_an_enter_are_worked_through_not_dropped():
    extractor = CommandExtractor()
    found = []
    for n in range(LAZY_EVENTS * 4):
        found += extractor.resize(100 + n % 50, 30)
        found += extractor.output(b"\x1b[2J\x1b[H$ ")
        while extractor.busy:
            found += extractor.work(1024)[1]
    assert found == [] and len(extractor._queue) <= 2 * LAZY_EVENTS + 2  # and their output
    last = (100 + (LAZY_EVENTS * 4 - 1) % 50, 30)
    assert extractor.drain() == [] and extractor.screen.size == last
    keys = b"ab" * LAZY_INPUT  # typed without an Enter, beyond what waits lazily
    found = worked(extractor, [("out", b"$ "), *typed_with_echo(keys)])
    found += worked(extractor, [("in", b"\r"), ("out", b"\r\n")])
    assert [(c.text[:4], c.mismatch, c.echoed) for c in found] == [("abab", False, True)]


def test_a_snapshot_is_built_on_demand_from_the_output_kept(fed):
    extractor = CommandExtractor()
    for n in range(20000):
        extractor.output(b"line %d\r\n" % n, n)
    extractor.output(b"$ ", 20000)
    answers = []
    extractor.want_snapshot(24, lambda screen, seq: answers.append((screen, seq)))
    extractor.output(b"later\r\n", 20001)  # after the request: not needed for it
    assert fed == [] and extractor.busy
    while extractor.busy:
        used, _ = extractor.work(1024)
        assert used <= 1024 + 80 * 24 // CELLS_PER_UNIT
    [(screen, seq)] = answers
    assert seq == 20000 and b"later" not in screen
    assert all(b"line %d" % n in screen for n in range(19977, 20000))  # the screen, whole
    assert sum(map(len, fed)) <= SCREENFUL * 80 * 24  # a screenful, whatever came before


def test_a_snapshot_asked_while_a_flood_is_dropped_or_the_session_ends_is_answered():
    extractor = CommandExtractor()
    answers = []
    extractor.output(b"$ ", 0)
    extractor.want_snapshot(None, lambda screen, seq: answers.append(seq))
    for n in range(MAX_EVENTS):
        extractor.stdin(b"x\r", n)
    extractor.want_snapshot(None, lambda screen, seq: answers.append(seq))
    extractor.finish()
    # The screen as it was fed, and the frame it includes: a watcher replays the rest.
    assert answers == [-1, 0]


def test_a_session_that_ends_with_no_enter_waiting_feeds_nothing(fed):
    extractor = CommandExtractor()
    extractor.output(LINES, 0)
    extractor.stdin(b"abc", 1)
    extractor.resize(100, 40)
    assert extractor.finish() == [] and fed == []
    assert not extractor._queue and extractor.screen.size == (100, 40)


def test_trimming_keeps_the_line_a_queued_enter_reads():
    extractor = CommandExtractor(keep=16 * 1024)
    extractor.output(LINES, 0)
    extractor.output(b"user@pod:~$ ", 1)
    extractor.stdin(b"make all\r", 2)  # typed in one frame: its line is on the screen only
    extractor.output(b"make all\r\n", 3)
    for n in range(20):  # its output floods in before the worker has had a turn
        extractor.output(LINES, 4 + n)
    assert extractor._queued_output <= 16 * 1024
    [command] = extractor.drain() + extractor.finish()
    assert (command.line, command.text, command.echoed, command.mismatch) == (
        "user@pod:~$ make all", "make all", True, False,
    )  # fmt: skip


def test_shedding_keeps_the_last_line_of_each_run_and_the_lines_read():
    extractor = CommandExtractor()
    for n in range(3):
        echo = b"echo %d\r\n" % (n - 1) if n else b""
        extractor.output(echo + LINES + b"\x1b[1m$\x1b[0m ", 2 * n)
        extractor.stdin(b"echo %d\r" % n, 2 * n + 1)
    extractor.output(b"echo 2\r\n" + LINES + b"x" * (TAIL + 10))  # a last line over the tail
    extractor.shed()
    runs = [bytes(e.data) for e in extractor._queue if isinstance(e, commands_module._Output)]
    assert runs[:-1:2] == [b"\r\n\x1b[1m$\x1b[0m "] * 3  # the prompts' runs: their last line
    assert runs[-1] == b"x" * TAIL
    assert [(c.text, c.mismatch) for c in extractor.drain() + extractor.finish()] == [
        ("echo 0", False), ("echo 1", False), ("echo 2", False),
    ]  # fmt: skip


def test_output_is_cut_before_a_line_break_else_before_an_escape():
    extractor = CommandExtractor(keep=1024)
    extractor.output(b"".join(b"line %04d\r\n" % n for n in range(1000)))
    [run] = extractor._queue
    assert run.data.startswith(b"\r\nline ") and len(run.data) <= 1024
    extractor = CommandExtractor(keep=1024)
    extractor.output(b"\x1b[1;31mred" * 500)  # no line break: a sequence is not cut in two
    [run] = extractor._queue
    assert run.data.startswith(b"\x1b[1;31mred") and len(run.data) <= 1024


REDRAW = b"".join(b"\x1b[%d;1H~\x1b[K" % y for y in range(1, 25))


def test_a_cut_keeps_a_full_screen_program_on_the_alternate_screen():
    extractor = CommandExtractor(keep=8 * 1024)
    worked(extractor, [("out", b"$ "), ("in", b"vi notes\r"), ("out", b"vi notes\r\n")])
    extractor.output(b"\x1b[?1049h\x1b[H\x1b[2J" + REDRAW * 100)  # the switch is cut off
    assert b"\x1b[?1049h" not in b"".join(e.data for e in extractor._queue)
    found = worked(extractor, [("in", b"ihello\x1b"), ("out", b"hello"), ("in", b":wq\r")])
    [command] = found + extractor.finish()
    assert (command.kind, command.typed) == ("fullscreen", "ihello⟨Esc⟩:wq")


def test_a_cut_keeps_the_return_to_the_main_screen():
    extractor = CommandExtractor(keep=8 * 1024)
    worked(extractor, [("out", b"$ "), ("in", b"vi notes\r"), ("out", b"vi notes\r\n")])
    steps = [("out", b"\x1b[?1049h\x1b[H\x1b[2J"), ("in", b":q\r"), ("out", b"\r\n")]
    assert [(c.kind, c.text) for c in worked(extractor, steps)] == [("fullscreen", ":q")]
    assert extractor.screen.alternate
    extractor.output(REDRAW * 50 + b"\x1b[?1049l$ cat log\r\n" + LINES)  # vi quit: cut off
    assert b"\x1b[?1049l" not in b"".join(e.data for e in extractor._queue)
    found = worked(extractor, [("out", b"$ "), ("in", b"ls\r"), ("out", b"ls\r\n")])
    assert [(c.kind, c.text, c.mismatch) for c in found] == [("exact", "ls", False)]


# The line editor.


@pytest.mark.parametrize(
    ("keys", "text", "kind"),
    [
        (b"ls -la\r", "ls -la", "exact"),
        (b"lx\x7fs\r", "ls", "exact"),
        (b"lx\x08s\r", "ls", "exact"),
        (b"world\x01hello \r", "hello world", "exact"),
        (b"abc\x02\x02X\r", "aXbc", "exact"),
        (b"abc\x02\x02\x06Y\r", "abYc", "exact"),
        (b"echo a b\x17\x17x\r", "echo x", "exact"),
        (b"abc def\x15\r", "", "exact"),
        (b"abc def\x02\x02\x02\x0b\r", "abc ", "exact"),
        (b"one two\x17\x17\x19\r", "one two", "exact"),
        (b"ab\x1b[Dc\r", "acb", "exact"),
        (b"ab\x1bOD\x1b[3~\r", "a", "exact"),
        (b"abc\x1b[H\x1b[3~\x1b[F!\r", "bc!", "exact"),
        (b"ab\x01\x04\r", "b", "exact"),
        (b"junk\x03ls\r", "ls", "exact"),
        (b"l\x1b[12;5Rs\x1b[I\r", "ls", "exact"),  # a cursor report and a focus event
        (b"\x1b]11;rgb:0000/0000/0000\x1b\\ls\r", "ls", "exact"),  # a colour answer
        (b"ca\xc3", None, None),  # half a character: nothing yet
        (b"\x1b[A\r", "⟨↑⟩", "keys"),
        (b"ec\x12\r", "ec⟨^R⟩", "keys"),
        (b"ls\x1bb-l\r", "ls⟨M-b⟩-l", "keys"),
        (b"vi\x1b", None, None),  # a lone Escape ends the frame: the Escape key
        (b"ech\t o\r", "ech⇥ o", "completed"),
        (b"cd fo\t\x7f\r", "cd fo⇥⟨BS⟩", "keys"),  # into completed text: unknowable
    ],
)
def test_the_line_editor_follows_readline(keys, text, kind):
    lines = LineEditor().feed(keys)
    if text is None:
        assert lines == []
    else:
        assert [(line.text, line.kind) for line in lines] == [(text, kind)]


def test_the_line_editor_keeps_state_across_frames():
    editor = LineEditor()
    assert editor.feed(b"caf\xc3") == [] and editor.feed(b"\xa9 \x1b[") == []
    [line] = editor.feed(b"D\x7f!\r")  # the arrow's sequence was split across frames
    assert line.text == "caf! "
    assert editor.feed(b"vi\x1b") == []
    [line] = editor.feed(b":q\r")
    assert (line.text, line.kind) == ("vi⟨Esc⟩:q", "keys")


def test_the_line_editor_honours_bracketed_paste_only_when_the_program_asked():
    pasted = b"\x1b[200~a\rb\r\x1b[201~"
    assert LineEditor().feed(pasted, bracketed=True) == []
    editor = LineEditor()
    editor.feed(pasted, bracketed=True)
    assert [line.text for line in editor.feed(b"\r")] == ["a", "b"]
    # A shell without the mode runs each line as it comes.
    assert [line.text for line in LineEditor().feed(b"a\rb\r")] == ["a", "b"]


def test_the_line_editor_keeps_a_bounded_line():
    [line] = LineEditor().feed(b"x" * (MAX_LINE * 3) + b"\r")
    assert len(line.text) == MAX_LINE


def test_a_line_longer_than_the_rows_read_agrees_by_its_end():
    line = b": " + b"z" * (80 * (MAX_WRAP + 5))
    [command] = run(("out", b"$ "), ("in", line + b"\r"), ("out", line + b"\r\n"))
    assert command.line.startswith("\u2026z") and command.text == line.decode()
    assert not command.mismatch


def test_many_small_output_frames_keep_a_bounded_number_of_marks():
    extractor = CommandExtractor()
    for n in range(50_000):
        extractor.output(b"x", n)
    assert sum(len(e.marks) for e in extractor._queue) <= commands_module.MAX_MARKS


def test_the_end_of_a_session_does_the_little_work_left():
    extractor = CommandExtractor()
    extractor.output(b"$ ", 0)
    extractor.stdin(b"stty -echo\r", 1)  # not worked on yet when the session ends
    [command] = extractor.finish()
    assert (command.text, command.line) == ("stty -echo", "$")
    extractor.output(b"y" * 100_000, 2)
    extractor.stdin(b"late\r", 3)
    [dropped] = extractor.finish()
    assert dropped.text == "[the session ended before the index caught up: 1 line(s) not indexed]"


def test_the_key_transcript_is_bounded_too():
    editor = LineEditor()
    editor.feed(b"\x1b[A" + b"\x12" * 100_000)
    assert sum(len(key) for key in editor._keys) <= MAX_LINE + 8
    [line] = editor.feed(b"\r")
    assert line.kind == "keys" and len(line.text) <= MAX_LINE
