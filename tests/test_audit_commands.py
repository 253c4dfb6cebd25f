"""Command lines from the screen model: what the user saw when pressing Enter."""

from terminals.audit.commands import CommandExtractor, ScreenModel, split_prompt


def session(*steps):
    """Feed ("in", bytes) and ("out", bytes) steps; return the command texts found."""
    extractor = CommandExtractor(80, 24)
    found = []
    for offset, (kind, data) in enumerate(steps):
        if kind == "in":
            found += extractor.stdin(data, offset)
        else:
            found += extractor.output(data)
    return found


def test_a_typed_command_is_read_off_the_screen():
    found = session(("out", b"user@pod:~$ "), ("in", b"l"), ("out", b"l"), ("in", b"s"),
                    ("out", b"s"), ("in", b"\r"), ("out", b"\r\nfile\r\nuser@pod:~$ "))  # fmt: skip
    assert [(c.line, c.text) for c in found] == [("user@pod:~$ ls", "ls")]
    assert found[0].offset_us == 5


def test_history_recall_gives_the_recalled_line():
    found = session(
        ("out", b"$ "), ("in", b"\x1b[A"), ("out", b"echo from history"),
        ("in", b"\r"), ("out", b"\r\nfrom history\r\n$ "),
    )  # fmt: skip
    assert [c.text for c in found] == ["echo from history"]


def test_tab_completion_and_line_editing_give_the_final_line():
    found = session(
        ("out", b"# "), ("in", b"ech"), ("out", b"ech"), ("in", b"\t"), ("out", b"o "),
        ("in", b"hellp"), ("out", b"hellp"), ("in", b"\x7f"), ("out", b"\x08\x1b[K"),
        ("in", b"o"), ("out", b"o"), ("in", b"\r"), ("out", b"\r\nhello\r\n# "),
    )  # fmt: skip
    assert [c.text for c in found] == ["echo hello"]


def test_a_pasted_block_gives_each_line():
    found = session(("out", b"$ "), ("in", b"echo a\recho b\r"), ("out", b"echo a\r\na\r\n$ "))
    assert sorted(c.text for c in found) == ["echo a", "echo b"]


def test_an_enter_on_an_empty_prompt_is_no_command():
    assert session(("out", b"$ "), ("in", b"\r"), ("out", b"\r\n$ ")) == []


def test_prompts_are_split_off():
    assert split_prompt("root@web:/app# ls -la") == "ls -la"
    assert split_prompt("bash-5.2$ echo $HOME") == "echo $HOME"
    assert split_prompt("no prompt here") == "no prompt here"


def test_vims_private_sgr_does_not_break_the_screen():
    screen = ScreenModel(20, 3)
    screen.output(b"\x1b[?4mplain text")
    assert screen.cursor_line() == "plain text"


def test_bulk_output_keeps_only_what_a_screen_can_show():
    screen = ScreenModel(20, 3, keep=1024)
    for n in range(10000):
        screen.output(b"line %d\r\n" % n)
    assert len(screen.pending) <= 2048
    screen.output(b"$ last")
    assert screen.cursor_line() == "$ last"


def test_a_snapshot_redraws_the_screen_with_colours():
    screen = ScreenModel(20, 3)
    screen.output(b"\x1b[31mred\x1b[0m ok\r\n$ ")
    drawn = screen.render().decode()
    assert "\x1b[0;31mred" in drawn
    again = ScreenModel(20, 3)
    again.output(screen.render())
    again.catch_up()
    assert again.screen.display == screen.screen.display
    assert (again.screen.cursor.x, again.screen.cursor.y) == (2, 1)
