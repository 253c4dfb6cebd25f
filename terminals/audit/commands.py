"""Command lines as the user saw them, from a terminal screen model (pyte). No I/O.

On Enter, the shell echoes a newline; the line under the cursor just before that newline is
what the user ran, after history recall, tab completion and line editing. pyte is slow (well
under 1 MB/s), so the screen is fed lazily: output only piles up in a bounded buffer, and the
screen catches up when a command line or a snapshot is wanted. After bulk output the screen is
rebuilt from the most recent ``keep`` bytes, which is what a screen shows anyway.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import pyte

logger = logging.getLogger(__name__)

# Prompts end in "$ ", "# ", "% " or "> " (sh, bash, zsh, fish, PowerShell); the first one on
# the line ends the prompt. A line without one is kept whole.
_PROMPT = re.compile(r"^(.{0,200}?[$#%>])(?: |$)")

_SGR_COLOURS = {
    "black": 0, "red": 1, "green": 2, "brown": 3, "blue": 4, "magenta": 5, "cyan": 6, "white": 7,
}  # fmt: skip


@dataclass(frozen=True)
class CommandLine:
    """A line the user entered: the screen line and the command without its prompt."""

    offset_us: int
    line: str
    text: str


def split_prompt(line: str) -> str:
    """The command part of a screen line."""
    match = _PROMPT.match(line)
    return line[match.end() :].strip() if match else line.strip()


class _Screen(pyte.Screen):
    """pyte's screen, tolerant of what real programs send and pyte does not know."""

    def select_graphic_rendition(self, *attrs: int, private: bool = False, **kwargs: Any) -> None:
        # vim sends private SGR ("CSI ? 4 m"); pyte 0.8.2 crashes on it. It changes nothing
        # that a screen shows, so it is ignored.
        if not private:
            super().select_graphic_rendition(*attrs)


class ScreenModel:
    """A pyte screen fed lazily from a bounded buffer of output."""

    def __init__(self, cols: int = 80, rows: int = 24, keep: int = 64 * 1024) -> None:
        self.screen = _Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.keep = keep
        self.pending = bytearray()

    def output(self, data: bytes) -> None:
        """Take output; cheap, whatever its size."""
        self.pending += data
        if len(self.pending) > 2 * self.keep:
            del self.pending[: -self.keep]

    def resize(self, cols: int, rows: int) -> None:
        """Follow the terminal's size."""
        self.catch_up()
        self.screen.resize(rows, cols)

    def catch_up(self) -> None:
        """Feed what is pending into the screen."""
        if self.pending:
            data, self.pending = bytes(self.pending), bytearray()
            try:
                self.stream.feed(data)
            except Exception:
                # A sequence pyte cannot parse must not cost the session its terminal: start
                # the parser afresh (the screen keeps what it shows).
                logger.warning("The screen model could not parse some output; it carries on.")
                self.stream = pyte.ByteStream(self.screen)

    def cursor_line(self) -> str:
        """The text of the line the cursor is on."""
        self.catch_up()
        return str(self.screen.display[self.screen.cursor.y]).rstrip()

    def render(self) -> bytes:
        """ANSI bytes that draw the current screen on a terminal of the same size."""
        self.catch_up()
        out = ["\x1b[0m\x1b[H\x1b[2J"]
        current: tuple[object, ...] | None = None
        blank = self.screen.default_char
        for y in range(self.screen.lines):
            out.append(f"\x1b[{y + 1};1H")
            row = self.screen.buffer[y]
            # The screen was cleared: cells like the default blank need not be drawn.
            width = max((x + 1 for x in row if row[x] != blank), default=0)
            for x in range(width):
                char = row[x]
                style = (char.fg, char.bg, char.bold, char.italics, char.underscore, char.reverse)
                if style != current:
                    out.append(_sgr(char))
                    current = style
                out.append(char.data or " ")
        out.append(f"\x1b[0m\x1b[{self.screen.cursor.y + 1};{self.screen.cursor.x + 1}H")
        return "".join(out).encode("utf-8", "replace")


def _sgr(char: pyte.screens.Char) -> str:
    codes = ["0"]
    if char.bold:
        codes.append("1")
    if char.italics:
        codes.append("3")
    if char.underscore:
        codes.append("4")
    if char.reverse:
        codes.append("7")
    codes += _colour(char.fg, 30)
    codes += _colour(char.bg, 40)
    return f"\x1b[{';'.join(codes)}m"


def _colour(name: str, base: int) -> list[str]:
    if name in _SGR_COLOURS:
        return [str(base + _SGR_COLOURS[name])]
    if name.startswith("bright") and name[6:] in _SGR_COLOURS:
        return [str(base + 60 + _SGR_COLOURS[name[6:]])]
    if re.fullmatch(r"[0-9a-fA-F]{6}", name):
        red, green, blue = (int(name[i : i + 2], 16) for i in (0, 2, 4))
        return [str(base + 8), "2", str(red), str(green), str(blue)]
    return []  # "default"


class CommandExtractor:
    """Turns a session's stdin and output, in order, into the command lines it ran."""

    def __init__(self, cols: int = 80, rows: int = 24) -> None:
        self.screen = ScreenModel(cols, rows)
        self.enter_at: int | None = None  # offset of an Enter whose echo is awaited

    def resize(self, cols: int, rows: int) -> None:
        self.screen.resize(cols, rows)

    def stdin(self, data: bytes, offset_us: int) -> list[CommandLine]:
        """Note an Enter. Lines after the first in one frame (a paste) come from the input."""
        if b"\r" not in data and b"\n" not in data:
            return []
        lines = re.split(rb"[\r\n]", data)
        found: list[CommandLine] = []
        if self.enter_at is None:
            self.enter_at = offset_us
        # "a\rb\rc" pasted at once: a is read off the screen at its echo; b is typed input.
        for typed in lines[1:-1]:
            text = _printable(typed)
            if text:
                found.append(CommandLine(offset_us, text, text))
        return found

    def output(self, data: bytes) -> list[CommandLine]:
        """Take output; return the command line whose Enter this output echoes, if any."""
        if self.enter_at is None:
            self.screen.output(data)
            return []
        newline = data.find(b"\n")
        if newline < 0:
            self.screen.output(data)
            return []
        # The line as it stood when the shell accepted it: before the echoed newline.
        before = data[:newline]
        self.screen.output(before[:-1] if before.endswith(b"\r") else before)
        line = self.screen.cursor_line()
        self.screen.output(data[len(before[:-1]) if before.endswith(b"\r") else newline :])
        entered, self.enter_at = self.enter_at, None
        text = split_prompt(line)
        return [CommandLine(entered, line.strip(), text)] if text else []


def _printable(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return "".join(ch for ch in text if ch.isprintable()).strip()
