"""Command lines: the line as typed beside the line as shown. No I/O.

Each Enter is read by two witnesses. The keys are rebuilt into the line as typed
(:mod:`.lineedit`); a screen model (pyte) gives the line as shown when the program accepted
it. The person audited controls both the screen (``stty -echo``, ``printf`` of a fake prompt)
and, within limits, the line editing, but cannot make both tell the same lie: a command is
recorded with both, and marked when they disagree (``mismatch``) or when what was typed never
showed (``echoed`` false). The frames are the truth; these rows are an index into them.

When is a line read. An Enter (a stdin frame holding CR or LF) starts an entry; the screen's
line under the cursor is read then, and again just before the first newline the program
writes after it, which is where the entry is decided. An entry that sees no newline before
the next Enter (input not echoed, a full-screen program) is decided at that next Enter, and
the last one at the end of the session. The lines after the first of a multi-line frame (a
paste) are taken from the input alone (``Typed.INPUT``, shown line empty), at most
:data:`MAX_FRAME_ROWS` of them, then one row counting the rest.

The rules (:meth:`CommandExtractor._decide`), with ``T`` the typed line and ``L`` the screen line
(whitespace runs count as one space):

- ``L`` ends with ``T``: the line showed as typed. The command is ``T``; what precedes it on the
  screen is the prompt. With tab completion, the typed pieces must appear in ``L`` in order,
  the last one at its end, and the command is the screen's from the first piece on.
- Otherwise ``mismatch`` if the screen shows something else after the prompt, or showed ``T``
  at the Enter and no longer does; ``echoed`` is false if ``T`` did not show at the Enter either.
  The command is ``T`` (the screen's, with completion).
- ``T`` empty, the screen showing a prompt and a command that is not the last prompt seen:
  a line nobody typed (``printf`` of a fake prompt, then Enter for ``read``), recorded as
  shown with ``mismatch``. Without a prompt (Enter in running output) it is no command.
- Keys that cannot be followed (``Typed.KEYS``: history, search…) leave nothing to compare:
  the command is the screen's, the typed line is the transcript of the keys.
- An Enter while a full-screen program holds the alternate screen (``Typed.FULLSCREEN``) goes
  to that program: recorded with its keys, not compared (editors draw what they like).
- A line wrapping over more than :data:`MAX_WRAP` rows is read from its last rows only (the
  screen line then starts with :data:`CUT`): it agrees when what was read ends ``T``.

Limits, honestly. Every Enter is a candidate, whoever reads the line (the shell, ``read``, a
REPL, ``cat``): the index holds what was entered, not only what the shell ran. A line typed
ahead, before the previous one's newline came back (a slow link), is decided at the next Enter
and may be marked not echoed. Line editing is rebuilt with readline's default keys
(:mod:`.lineedit` says which, and where a shell without line editing differs: those lines are
marked, never silently wrong). A password typed at a prompt that does not echo is in ``typed``
(and marked not echoed), as it is in the input frames.

Lazy work. pyte costs about 1.4 µs a byte, so nothing here runs per frame beyond a few
``bytes.find``: frames are queued as events, and the screen is fed only when something needs
it: an Enter (its line is read then, and at the first newline after it), a watcher's snapshot
(:meth:`CommandExtractor.want_snapshot`), the end of a session with an Enter still waiting.
Output nobody reads a line from (a ``cat``, a full-screen program's redraws) is never fed; of a
run of output that is, only the last screenful (:data:`SCREENFUL` bytes a cell of the model,
7.5 KiB for 80x24: what a line read or a snapshot needs), the rest being dropped as a cut
(below). Keys without an Enter join the keys queued before them (keys touch the line editor
only, the output between them the screen only: their order does not matter); keys and resizes
are worked through only when more than :data:`LAZY_EVENTS` events or :data:`LAZY_INPUT` bytes
of keys wait. Reading a line costs the cursor's row and the rows it wraps from (at most
:data:`MAX_WRAP`), never the whole screen. :meth:`CommandExtractor.work` does a given amount of
work and stops, so a caller can slice it and give each session a budget
(``terminals.session.screen``). The model is at most :data:`MAX_COLS` by :data:`MAX_ROWS`
whatever the terminal's size: beyond that, lines wrap in the model where they do not on the
terminal (wrapped rows are joined, so the lines still read whole) and full-screen programs are
clipped. Queues that outgrow :data:`MAX_EVENTS` or :data:`MAX_QUEUED_INPUT` (a client flooding
faster than its budget) are dropped at once, with one row saying how many lines went unindexed.

Bounded output, and what trimming it costs. At most ``keep`` (:data:`KEEP`) bytes of output
wait to be fed. Past that, bytes are dropped, never fed: first the heads of the oldest runs of
output (a run: the output between two other events, e.g. before an Enter), each keeping its
last :data:`TAIL` bytes, where the line a read there needs is; then, if runs are that many, the
oldest whole. A session out of screen budget sheds every run to its last line (at most its
tail) at once (:meth:`CommandExtractor.shed`). A cut is made before a line break (so the rest
starts a new line), else before an escape sequence (none is cut in two), else anywhere. The
screen keeps, across a cut, the mode the dropped bytes left it in: the alternate screen of a
full-screen program (on which an Enter is recorded with its keys, not compared). It does not
keep what the dropped bytes drew (rows that the kept bytes do not scroll away still show what
was there before), nor cursor moves, scrolling regions, colours, character sets or other modes
they set.

For the index this means: an Enter after a trimmed or shed run reads its line right when that
line (prompt and echo, as drawn) starts after a line break and lies within the run's last
:data:`TAIL` bytes, as shells draw it; a longer line (over ~4 KiB with its escape codes), one
drawn over several lines (a shell that breaks a long echo with CR LF), or one placed or redrawn
with cursor moves made in dropped bytes, may read wrong. The typed line comes from the input,
which is never trimmed, so a wrong screen line is never silent: it is recorded beside the typed
line, marked ``mismatch`` or not ``echoed`` (the command is then the typed line, or with
completion the screen's, marked); an Enter on an empty line may be recorded as a line nobody
typed (marked). Only the key transcripts (``Typed.KEYS``), whose command is the screen's and
not compared, can take a wrong command unmarked. A snapshot after a cut shows the kept bytes
drawn over the screen as it was, and names as its ``seq`` the last frame kept or dropped, so a
watcher does not see the dropped bytes.
"""

from __future__ import annotations

import copy
import logging
import re
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyte
from pyte.screens import StaticDefaultDict

from .lineedit import COMPLETION_MARK, LineEditor, Typed, TypedLine

logger = logging.getLogger(__name__)

#: The screen model's largest size, whatever the terminal's (cells cost memory and time).
MAX_COLS, MAX_ROWS = 240, 80
#: Rows of one wrapped line read at most.
MAX_WRAP = 16
#: Output bytes kept for the screen model at most; the oldest go first, except that each run
#: of output (between two other events) keeps its last TAIL bytes longest.
KEEP, TAIL = 64 * 1024, 4 * 1024
#: A run of output is fed from its last SCREENFUL bytes per cell of the model at most (a
#: screenful of text with its escape codes: what a line read or a snapshot needs), or TAIL.
SCREENFUL = 4
#: Keys and resizes (events, and bytes of keys) queued before they are worked through
#: without an Enter (see busy).
LAZY_EVENTS, LAZY_INPUT = 64, 4 * 1024
#: Rows one frame makes from its lines after the first; the rest are counted in one more row.
MAX_FRAME_ROWS = 16
#: Events (Enters, newlines after them, resizes) queued at most, and input bytes.
MAX_EVENTS = 256
MAX_QUEUED_INPUT = 256 * 1024
#: Text kept per field (UTF-8 bytes): PostgreSQL's btree indexes refuse entries over ~2.7 kB.
MAX_TEXT_BYTES = 2000
#: Work units (about a byte fed to pyte each) a line read and a resize cost; a snapshot costs
#: a unit per CELLS_PER_UNIT cells drawn.
READ_COST, RESIZE_COST, CELLS_PER_UNIT = 64, 512, 3
#: Frame boundaries kept per run of output (for snapshots' seq), and the work done at the end.
MAX_MARKS, FINISH_WORK = 256, 16 * 1024
#: Saved cursors kept (``ESC 7`` without ``ESC 8`` would otherwise pile up).
MAX_SAVEPOINTS = 16
#: Starts a screen line whose beginning was not read (it wraps over more than MAX_WRAP rows).
CUT = "…"

# Prompts end in "$ ", "# ", "% " or "> " (sh, bash, zsh, fish, PowerShell); the first one on
# the line ends the prompt. A line without one is kept whole.
_PROMPT = re.compile(r"^(.{0,200}?[$#%>])(?: |$)")
_ALTERNATE = (47, 1047, 1049)  # private modes of the alternate screen
_SWITCH = re.compile(rb"\x1b\[\?(?:1049|1047|47)([hl])")
_ALTERNATE_ON, _ALTERNATE_OFF = b"\x1b[?1049h", b"\x1b[?1049l"
_BRACKETED_ON, _BRACKETED_OFF = b"\x1b[?2004h", b"\x1b[?2004l"

_SGR_COLOURS = {
    "black": 0, "red": 1, "green": 2, "brown": 3, "blue": 4, "magenta": 5, "cyan": 6, "white": 7,
}  # fmt: skip


@dataclass(frozen=True)
class CommandLine:
    """A line the user entered: the screen line, the command, the line as typed, the marks."""

    offset_us: int
    line: str  # the screen line, prompt included ("" when it was not read)
    text: str  # the command (see the module docstring for which witness gives it)
    typed: str = ""
    echoed: bool = True
    mismatch: bool = False
    kind: str = Typed.EXACT


def split_prompt(line: str) -> str:
    """The command part of a screen line."""
    match = _PROMPT.match(line)
    return line[match.end() :].strip() if match else line.strip()


def clip(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary)."""
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def _norm(text: str) -> str:
    return " ".join(text.split())


def _capped(cols: int, rows: int) -> tuple[int, int]:
    return max(1, min(cols, MAX_COLS)), max(1, min(rows, MAX_ROWS))


class _Screen(pyte.Screen):
    """pyte's screen, bounded, with soft wraps and the alternate screen, and tolerant of what
    real programs send and pyte does not know."""

    def __init__(self, columns: int, lines: int) -> None:
        self.alternate = False
        self._main: tuple[Any, Any] | None = None  # the main screen's buffer and cursor
        self._drawing = False
        super().__init__(columns, lines)

    def _new_buffer(self) -> Any:
        return defaultdict(lambda: StaticDefaultDict(self.default_char))

    def select_graphic_rendition(self, *attrs: int, private: bool = False, **kwargs: Any) -> None:
        # vim sends private SGR ("CSI ? 4 m"); pyte 0.8.2 crashes on it. It changes nothing
        # that a screen shows, so it is ignored.
        if not private:
            super().select_graphic_rendition(*attrs)

    def save_cursor(self) -> None:
        if len(self.savepoints) >= MAX_SAVEPOINTS:
            del self.savepoints[0]
        super().save_cursor()

    # Soft wraps: a row that continues the one above it because the line was too long.

    def draw(self, data: str) -> None:
        self._drawing = True
        try:
            super().draw(data)
        finally:
            self._drawing = False

    def linefeed(self) -> None:
        super().linefeed()
        # While drawing, a linefeed is pyte wrapping a line too long for the row.
        _mark(self.buffer[self.cursor.y], self._drawing)

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        super().erase_in_line(how, private)
        if how in (1, 2) or self.cursor.x == 0:  # the whole row is gone
            _mark(self.buffer.get(self.cursor.y), False)

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        super().erase_in_display(how, *args, **kwargs)
        for y, row in self.buffer.items():
            if how >= 2 or (how == 0 and y > self.cursor.y) or (how == 1 and y < self.cursor.y):
                _mark(row, False)

    def reset(self) -> None:
        self.alternate, self._main = False, None
        super().reset()

    def wrapped(self, y: int) -> bool:
        return bool(getattr(self.buffer.get(y), "wrapped", False))

    # The alternate screen of full-screen programs (pyte 0.8.2 has none).

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private") and any(mode in _ALTERNATE for mode in modes):
            if not self.alternate:
                self._main = (self.buffer, copy.copy(self.cursor))
                self.buffer = self._new_buffer()
                self.alternate = True
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private") and any(mode in _ALTERNATE for mode in modes):
            if self.alternate and self._main is not None:
                self.buffer, self.cursor = self._main
                self._main = None
                self.alternate = False
                self.buffer = self._fit(self.buffer, self.cursor, self.lines, self.columns)
        super().reset_mode(*modes, **kwargs)

    # Resizing: keep the cursor's row on the screen (as xterm does), drop what falls off.

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        lines, columns = lines or self.lines, columns or self.columns
        if (lines, columns) == (self.lines, self.columns):
            return
        self.buffer = self._fit(self.buffer, self.cursor, lines, columns)
        if self._main is not None:
            buffer, cursor = self._main
            self._main = (self._fit(buffer, cursor, lines, columns), cursor)
        self.lines, self.columns = lines, columns
        self.dirty = set(range(lines))
        self.set_margins()

    def _fit(self, buffer: Any, cursor: Any, lines: int, columns: int) -> Any:
        """``buffer`` for a screen of ``lines`` by ``columns``; ``cursor`` is moved into it."""
        shift = max(0, cursor.y - (lines - 1))
        fitted = self._new_buffer()
        for y, row in buffer.items():
            if 0 <= y - shift < lines:
                for x in [x for x in row if x >= columns]:
                    del row[x]
                fitted[y - shift] = row
        cursor.y -= shift
        cursor.x = min(cursor.x, columns)
        return fitted

    # Reading.

    def row_text(self, y: int) -> str:
        row = self.buffer.get(y)
        if not row:
            return ""
        return "".join(row[x].data for x in range(min(self.columns, max(row) + 1)))

    def logical_line(self) -> str:
        """The line under the cursor, with the rows it wraps from or onto; a line longer
        than :data:`MAX_WRAP` rows starts with :data:`CUT` where its reading began."""
        y = min(self.cursor.y, self.lines - 1)
        top = bottom = y
        while top > 0 and y - top < MAX_WRAP and self.wrapped(top):
            top -= 1
        while bottom + 1 < self.lines and bottom - top < MAX_WRAP and self.wrapped(bottom + 1):
            bottom += 1
        rows = [self.row_text(r) for r in range(top, bottom + 1)]
        # Rows a line wraps across are full: only the last one's padding is not the line's.
        text = "".join(row.ljust(self.columns) for row in rows[:-1]) + rows[-1].rstrip()
        return CUT + text if top > 0 and self.wrapped(top) else text


def _mark(row: Any, wrapped: bool) -> None:
    if row is not None and (wrapped or getattr(row, "wrapped", False)):
        row.wrapped = wrapped


class ScreenModel:
    """A bounded pyte screen fed with output bytes."""

    def __init__(self, cols: int = 80, rows: int = 24) -> None:
        self.screen = _Screen(*_capped(cols, rows))
        self.stream = pyte.ByteStream(self.screen)

    @property
    def size(self) -> tuple[int, int]:
        return self.screen.columns, self.screen.lines

    @property
    def alternate(self) -> bool:
        return self.screen.alternate

    def feed(self, data: bytes) -> None:
        try:
            self.stream.feed(data)
        except Exception:
            # A sequence pyte cannot parse must not cost the session its terminal: start
            # the parser afresh (the screen keeps what it shows).
            logger.warning("The screen model could not parse some output; it carries on.")
            self.stream = pyte.ByteStream(self.screen)

    def resize(self, cols: int, rows: int) -> None:
        """Follow the terminal's size, up to the model's largest."""
        cols, rows = _capped(cols, rows)
        self.screen.resize(rows, cols)

    def line(self) -> str:
        """The line under the cursor (wrapped rows joined), trailing blanks removed."""
        return self.screen.logical_line()

    def render(self, rows: int | None = None) -> bytes:
        """ANSI bytes that draw the screen; on a terminal of ``rows`` rows (more than the
        model has), at its bottom, where a shell's scrolling output is."""
        screen = self.screen
        top = max(0, (rows or screen.lines) - screen.lines)
        out = ["\x1b[0m\x1b[H\x1b[2J"]
        current: tuple[object, ...] | None = None
        blank = screen.default_char
        for y in range(screen.lines):
            row = screen.buffer.get(y)
            if not row:
                continue
            out.append(f"\x1b[{top + y + 1};1H")
            # The screen was cleared: cells like the default blank need not be drawn.
            width = min(screen.columns, max((x + 1 for x in row if row[x] != blank), default=0))
            for x in range(width):
                char = row[x]
                style = (char.fg, char.bg, char.bold, char.italics, char.underscore, char.reverse)
                if style != current:
                    out.append(_sgr(char))
                    current = style
                out.append(char.data or " ")
        cursor_x = min(screen.cursor.x, screen.columns - 1)
        out.append(f"\x1b[0m\x1b[{top + screen.cursor.y + 1};{cursor_x + 1}H")
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


# The events a session's frames become, in order.


@dataclass
class _Output:
    """A run of output: the bytes between two other events, kept until the screen needs them."""

    data: bytearray
    base: int  # where data[0] is in the session's output
    marks: deque[tuple[int, int]] = field(default_factory=deque)  # (end, seq) of its frames
    lead: bytes = b""  # fed before data: the state its dropped bytes left (see _cut)
    started: bool = False  # feeding it has begun (after cutting it to a screenful)


@dataclass
class _Input:
    data: bytes
    offset_us: int
    bracketed: bool  # the program had bracketed paste on
    enter: bool  # CR or LF in it
    ends: list[int] = field(default_factory=list)  # where its frames end (keys join, see stdin)
    done: int = 0  # bytes given to the editor so far
    lines: int = 0  # lines it ended
    skipped: list[str] = field(default_factory=list)  # lines past MAX_FRAME_ROWS (a few kept)
    more: int = 0  # and how many more of them


class _Echo:
    """The first newline written after an Enter: the line is decided there."""


@dataclass
class _Size:
    cols: int
    rows: int


@dataclass
class _Snapshot:
    """A watcher wants the screen with the output queued before it."""

    rows: int | None
    answer: Callable[[bytes, int], None]  # (the screen drawn, the last frame it includes)


@dataclass
class _Entry:
    """An Enter waiting for its line to be decided."""

    offset_us: int
    typed: TypedLine
    at_enter: str  # the screen line when the Enter came
    alternate: bool  # a full-screen program had the screen


_Event = _Output | _Input | _Echo | _Size | _Snapshot
_ECHO = _Echo()


def _needs_screen(event: _Event) -> bool:
    """Whether the event needs the screen fed up to it (a line read, a snapshot)."""
    return isinstance(event, (_Echo, _Snapshot)) or (isinstance(event, _Input) and event.enter)


def _last_switch(data: bytearray, end: int) -> bytes:
    """The last switch to or from the alternate screen in ``data[:end]``, as a sequence that
    makes it (b"" if none)."""
    if data.find(b"\x1b", 0, end) < 0:
        return b""  # no escape sequence at all: a quick scan (memchr)
    found = None
    for found in _SWITCH.finditer(data, 0, end):  # noqa: B007 (the last one is wanted)
        pass
    if found is None:
        return b""
    return _ALTERNATE_ON if found[1] == b"h" else _ALTERNATE_OFF


class CommandExtractor:
    """Turns a session's stdin, output and resizes, in order, into the command lines it ran.

    :meth:`stdin`, :meth:`output` and :meth:`resize` only queue (they return rows only when a
    flood is dropped); :meth:`work` does the queued work within a budget, and only as far as
    something needs the screen (:attr:`busy`).
    """

    def __init__(self, cols: int = 80, rows: int = 24, *, keep: int = KEEP) -> None:
        self.screen = ScreenModel(cols, rows)
        self.editor = LineEditor()
        self.keep = keep
        self.tail = min(TAIL, keep // 4)  # bytes of each run of output kept longest
        self.fed_seq = -1  # the last output frame the screen has taken (whole rows)
        self._queue: deque[_Event] = deque()
        self._marks = 0  # queued events other than output
        self._wanted = 0  # and of them, those that need the screen
        self._enters = 0  # queued input frames with an Enter
        self._out = 0  # output bytes seen
        self._queued_output = 0
        self._queued_input = 0
        self._keys: _Input | None = None  # the last input queued, if keys more may join
        self._awaiting_echo = False
        self._bracketed = False
        self._entry: _Entry | None = None
        self._prompt = ""  # the prompt before the last line that showed as typed
        self._used = 0  # work done in this call of work()
        self._draining = False  # drain(): every event is wanted

    # Taking frames: cheap, whatever their size.

    def stdin(self, data: bytes, offset_us: int) -> list[CommandLine]:
        """Queue input (committed at ``offset_us``)."""
        enter = b"\r" in data or b"\n" in data
        self._queued_input += len(data)
        if not enter and self._join_keys(data):
            return self._bound()
        event = _Input(bytes(data), offset_us, self._bracketed, enter, [len(data)])
        self._append(event)
        self._keys = None if enter else event
        if enter:
            self._enters += 1
            self._awaiting_echo = True
        return self._bound()

    def output(self, data: bytes, seq: int | None = None) -> list[CommandLine]:
        """Queue output; ``seq``: the last stored frame it completes, for snapshots."""
        on, off = data.rfind(_BRACKETED_ON), data.rfind(_BRACKETED_OFF)
        if on != off:
            self._bracketed = on > off
        newline = data.find(b"\n") if self._awaiting_echo else -1
        if newline >= 0:
            self._add_output(data[:newline], None)
            self._append(_ECHO)
            self._awaiting_echo = False
            data = data[newline:]
        self._add_output(data, seq)
        self._trim()
        return self._bound()

    def resize(self, cols: int, rows: int) -> list[CommandLine]:
        last = self._queue[-1] if self._queue else None
        if isinstance(last, _Size):
            last.cols, last.rows = cols, rows  # nothing happened in between: one will do
        else:
            self._append(_Size(cols, rows))
        return self._bound()

    def want_snapshot(
        self, rows: int | None, answer: Callable[[bytes, int], None]
    ) -> list[CommandLine]:
        """Ask for the screen with all the output queued so far: ``answer(screen, seq)`` is
        called by :meth:`work` once it has fed that output (or at once by a drop or the end).
        ``rows``: the terminal's, see :meth:`ScreenModel.render`."""
        self._append(_Snapshot(rows, answer))
        return self._bound()

    @property
    def busy(self) -> bool:
        """True while something needs the screen (an Enter, the newline after one, a
        snapshot), or more than :data:`LAZY_EVENTS` events or :data:`LAZY_INPUT` bytes of
        keys wait. Output, keys without an Enter and resizes are kept lazily until then."""
        if self._wanted > 0 or self._queued_input > LAZY_INPUT:
            return True
        return self._marks > (0 if self._draining else LAZY_EVENTS)

    def _append(self, event: _Event) -> None:
        self._queue.append(event)
        if not isinstance(event, _Output):
            self._marks += 1
            self._wanted += _needs_screen(event)

    def _join_keys(self, data: bytes) -> bool:
        """Keys without an Enter join the keys queued last, if no other input came after them
        (and bracketed paste is as it was): no line is read at keys, and the events between
        (output, resizes, the newline after an Enter, snapshots) touch the screen only, never
        the line editor, so the keys may go first. Typing without an Enter (in an editor, a
        pager) then stays one event however long it goes on."""
        keys = self._keys
        if keys is None or keys.bracketed != self._bracketed:
            return False
        keys.data += data
        keys.ends.append(len(keys.data))
        return True

    def _add_output(self, data: bytes, seq: int | None) -> None:
        last = self._queue[-1] if self._queue else None
        if not isinstance(last, _Output):
            last = _Output(bytearray(), self._out)
            self._queue.append(last)
        last.data += data
        self._out += len(data)
        self._queued_output += len(data)
        if seq is not None:
            if len(last.marks) >= MAX_MARKS:
                # Output in many small frames and no Enter: the newest mark stands for the
                # last few (a snapshot then names a frame a little before the screen's).
                last.marks.pop()
            last.marks.append((self._out, seq))

    # Keeping output bounded.

    def _trim(self) -> None:
        """Keep at most ``keep`` bytes of output: drop the heads of the oldest runs first,
        each keeping its last ``tail`` bytes (the line a read there needs), then what is left
        of the oldest runs. See the module docstring for what this can cost."""
        excess = self._queued_output - self.keep
        if excess <= 0:
            return
        runs = [event for event in self._queue if isinstance(event, _Output)]
        for run in runs:
            if excess <= 0:
                break
            most = len(run.data) - self.tail
            if most > 0:
                excess -= self._cut(run, min(excess, most), most)
        for run in runs:
            if excess <= 0:
                break
            excess -= self._cut(run, min(excess, len(run.data)), len(run.data))
        head = self._queue[0] if self._queue else None
        if isinstance(head, _Output):
            self._passed(head)

    def shed(self) -> None:
        """Drop every run of output down to its last line (from its last line break, at most
        its tail): what a session that outran its budget keeps. A line read needs no more (a
        shell draws its prompt and the echo on a line of their own); the rest of the screen
        is lost until output redraws it."""
        for run in self._queue:
            if not isinstance(run, _Output):
                continue
            data = run.data
            last = data.rfind(b"\n")  # -1: the whole run is its last line
            if last > 0 and data[last - 1] == 0x0D:  # CR LF
                last -= 1
            if len(data) - max(last, 0) > self.tail:
                self._cut(run, len(data) - self.tail, len(data))
            elif last > 0:
                self._cut(run, last, last)
        head = self._queue[0] if self._queue else None
        if isinstance(head, _Output):
            self._passed(head)

    def _cut(self, run: _Output, least: int, most: int) -> int:
        """Drop the first ``least`` to ``most`` bytes of ``run``; the number dropped.

        The cut is made before the first line break (CR LF or LF) in that range, so that the
        rest starts a new line; else before an escape sequence, so that none is cut in two;
        else anywhere. A switch to or from the alternate screen among the dropped bytes is
        kept (as ``run.lead``): the screen stays in the mode the program left it in.
        """
        data = run.data
        at = data.find(b"\n", least + 1, most + 1)
        if at > 0 and data[at - 1] == 0x0D:  # CR: the line break is CR LF
            at -= 1
        if at < 0:
            at = data.find(b"\x1b", least, most + 1)
        if at < 0:
            at = least
        switch = _last_switch(data, at)
        if switch:
            run.lead = switch
        del data[:at]
        run.base += at
        self._queued_output -= at
        return at

    def _bound(self) -> list[CommandLine]:
        if len(self._queue) <= MAX_EVENTS and self._queued_input <= MAX_QUEUED_INPUT:
            return []
        logger.warning("A session sent more than its screen model can follow; dropped.")
        return self._drop("more input than the index could follow")

    def reset(self) -> list[CommandLine]:
        """Start afresh (after a failure): what is queued is dropped as a flood is."""
        found = self._drop("the screen model failed")
        self.screen = ScreenModel(*self.screen.size)
        self.editor = LineEditor()
        return found

    def _drop(self, why: str) -> list[CommandLine]:
        """Drop everything queued: one row says how many lines went unindexed, and why.
        A snapshot asked for is answered first, with the screen as fed and its own seq (a
        watcher replays the rest from the store)."""
        for event in self._queue:
            if isinstance(event, _Snapshot):
                self._answer(event)
        lines, at = 0, -1
        size: _Size | None = None
        switch = b""
        for event in self._queue:
            if isinstance(event, _Output):
                switch = _last_switch(event.data, len(event.data)) or event.lead or switch
                if event.marks:
                    self.fed_seq = event.marks[-1][1]
            elif isinstance(event, _Input):
                lines += event.data.count(b"\r") + event.data.count(b"\n")
                at = event.offset_us if at < 0 else at
            elif isinstance(event, _Size):
                size = event
        self._queue.clear()
        self._keys = None
        self._marks = self._wanted = self._enters = 0
        self._queued_output = self._queued_input = 0
        self._awaiting_echo = False
        if size is not None:
            self.screen.resize(size.cols, size.rows)
        if switch:
            self.screen.feed(switch)
        self.editor.lost()
        found = self._decide_unread()
        if lines:
            text = f"[{why}: {lines} line(s) not indexed]"
            found.append(CommandLine(max(at, 0), "", text, "", kind=Typed.INPUT))
        return found

    # Working.

    def work(self, budget: int) -> tuple[int, list[CommandLine]]:
        """Do queued work worth about ``budget`` bytes fed to pyte; (work done, rows found).

        Only while something needs it (:attr:`busy`): output after the last such event stays
        queued. One step may overshoot by one line read, resize or snapshot; an input frame is
        edited in parts.
        """
        self._used = 0
        found: list[CommandLine] = []
        while self.busy and self._used < budget:
            event = self._queue[0]
            if isinstance(event, _Output):
                if not event.started:
                    self._start(event)
                self._feed(event, budget - self._used)
                continue
            if isinstance(event, _Input):
                found += self._edit(event, budget - self._used)
                if event.done < len(event.data):
                    continue
                found += self._frame_rows(event)
                self._queued_input -= len(event.data)
                self._enters -= event.enter
                if self._keys is event:
                    self._keys = None
            elif isinstance(event, _Echo):
                if self._entry is not None:
                    found += self._decide(self._entry, self._read())
                    self._entry = None
            elif isinstance(event, _Size):
                self._used += RESIZE_COST
                self.screen.resize(event.cols, event.rows)
            else:
                self._used += self._answer(event)
            self._queue.popleft()
            self._marks -= 1
            self._wanted -= _needs_screen(event)
        return self._used, found

    def drain(self) -> list[CommandLine]:
        """Do all the queued work but the output after the last event, wanted or not (tests,
        tools, the end of a session); what a session does within a budget."""
        found: list[CommandLine] = []
        self._draining = True
        try:
            while self.busy:
                found += self.work(1 << 30)[1]
        finally:
            self._draining = False
        return found

    def finish(self) -> list[CommandLine]:
        """The session ended: decide the Enter still waiting on what the screen then shows,
        after the little work left (or drop it, if it is a lot). Without an Enter to decide,
        nothing is fed; a snapshot still asked for gets the screen as it is."""
        if self._entry is None and not self._enters:
            self._drop("the session ended")  # no line is lost: this makes no row
            return []
        if self._queued_output + self._queued_input <= FINISH_WORK:
            found = self.drain()
        else:
            found = self._drop("the session ended before the index caught up")
        entry, self._entry = self._entry, None
        return found + (self._decide(entry, self.screen.line()) if entry is not None else [])

    def snapshot(self, rows: int | None = None) -> tuple[bytes, int]:
        """The screen drawn as far as it has been fed (see :meth:`ScreenModel.render`), and
        the last frame it includes; :meth:`want_snapshot` has it fed first."""
        return self.screen.render(rows), self.fed_seq

    def _answer(self, snapshot: _Snapshot) -> int:
        """Answer a snapshot with the screen as fed; the work that was."""
        cols, rows = self.screen.size
        snapshot.answer(self.screen.render(snapshot.rows), self.fed_seq)
        return cols * rows // CELLS_PER_UNIT

    def _read(self) -> str:
        self._used += READ_COST
        return self.screen.line()

    def _start(self, run: _Output) -> None:
        """Cut a run about to be fed to what the screen can show: its last screenful."""
        run.started = True
        cols, rows = self.screen.size
        screenful = min(self.keep, max(self.tail, SCREENFUL * cols * rows))
        if len(run.data) > screenful:
            self._cut(run, len(run.data) - screenful, len(run.data))
            self._passed(run)

    def _feed(self, event: _Output, budget: int) -> None:
        if event.lead:
            self._used += len(event.lead)
            self.screen.feed(event.lead)
            event.lead = b""
        chunk = bytes(event.data[: max(1, budget)])
        del event.data[: len(chunk)]
        event.base += len(chunk)
        self._queued_output -= len(chunk)
        self._used += len(chunk)
        if chunk:
            self.screen.feed(chunk)
        self._passed(event)
        if not event.data:
            self._queue.popleft()

    def _passed(self, event: _Output) -> None:
        while event.marks and event.marks[0][0] <= event.base:
            self.fed_seq = event.marks.popleft()[1]

    def _edit(self, event: _Input, budget: int) -> list[CommandLine]:
        # Each frame is given to the editor on its own (a lone Escape ending a frame is the
        # Escape key), a large one in parts.
        end = next(end for end in event.ends if end > event.done)
        chunk = event.data[event.done : min(end, event.done + max(1, budget))]
        event.done += len(chunk)
        self._used += len(chunk)
        found: list[CommandLine] = []
        for typed in self.editor.feed(chunk, event.bracketed):
            found += self._line(event, typed)
        return found

    def _line(self, event: _Input, typed: TypedLine) -> list[CommandLine]:
        """A line the keys ended: the frame's first waits for the screen, the rest are kept."""
        event.lines += 1
        if event.lines == 1:
            line = self._read()
            # An Enter still waiting saw no newline before this one: it is decided now.
            found = self._decide(self._entry, line) if self._entry is not None else []
            self._entry = _Entry(event.offset_us, typed, line, self.screen.alternate)
            return found
        if not typed.text.strip():
            event.lines -= 1
            return []
        if event.lines - 1 <= MAX_FRAME_ROWS:
            # A microsecond apart, so that they sort after the frame's first line.
            return [_unread(event.offset_us + event.lines - 1, typed)]
        if len(event.skipped) < 8:
            event.skipped.append(typed.text)
        event.more += 1
        return []

    def _frame_rows(self, event: _Input) -> list[CommandLine]:
        if not event.more:
            return []
        text = f"[{event.more} more lines in this frame: see its input]"
        typed = clip("\n".join(event.skipped))
        at = event.offset_us + MAX_FRAME_ROWS + 1
        return [CommandLine(at, "", text, typed, kind=Typed.INPUT)]

    def _decide_unread(self) -> list[CommandLine]:
        entry, self._entry = self._entry, None
        if entry is None or not entry.typed.text.strip():
            return []
        return [_unread(entry.offset_us, entry.typed)]

    def _decide(self, entry: _Entry, line: str) -> list[CommandLine]:
        """The command an Enter gave, from its typed line and the screen's (module docstring)."""
        typed = entry.typed
        shown = split_prompt(line)
        at = entry.offset_us
        if entry.alternate:
            if not typed.text.strip():
                return []
            text = typed.text.strip()
            return [_row(at, entry.at_enter, text, typed.text, kind=Typed.FULLSCREEN)]
        if typed.kind is Typed.KEYS:
            return [_row(at, line, shown or typed.text, typed.text, kind=Typed.KEYS)]
        wanted = _norm(typed.text)
        if not wanted.replace(COMPLETION_MARK, ""):
            if not shown or not _PROMPT.match(line) or _norm(line) == _norm(self._prompt):
                return []  # Enter on an empty prompt, or in a program's output
            return [_row(at, line, shown, "", mismatch=True, kind=typed.kind)]
        agrees = _agreement(typed, _norm(line))
        if agrees is not None:
            text = typed.text.strip() if typed.kind is Typed.EXACT else agrees
            if line.rstrip().endswith(text):
                self._prompt = line.rstrip()[: -len(text)]
            return [_row(at, line, text, typed.text, kind=typed.kind)]
        echoed = _agreement(typed, _norm(entry.at_enter)) is not None
        mismatch = bool(shown) or echoed
        text = typed.text.strip() if typed.kind is Typed.EXACT or not shown else shown
        return [_row(at, line, text, typed.text, echoed=echoed, mismatch=mismatch, kind=typed.kind)]


def _agreement(typed: TypedLine, line: str) -> str | None:
    """The command as ``line`` (normalized) shows it, if it shows ``typed``; else None.

    With completion, the pieces are placed from the end, each as far right as it goes: if
    any placement exists this one does, and a prompt holding the first piece is not taken.
    """
    pieces = [_norm(piece) for piece in typed.pieces]
    if line.startswith(CUT):
        # Only the end of a very long line was read: it must be the end of what was typed.
        seen = line[len(CUT) :].strip()
        if typed.kind is not Typed.COMPLETED:
            return pieces[0] if pieces[0].endswith(seen) else None
        return seen if seen.endswith(pieces[-1]) else None
    if not line.endswith(pieces[-1]):
        return None
    end = len(line) - len(pieces[-1])
    for piece in reversed(pieces[:-1]):
        end = line.rfind(piece, 0, end)
        if end < 0:
            return None
    return line[end:]


def _row(
    at: int,
    line: str,
    text: str,
    typed: str,
    *,
    echoed: bool = True,
    mismatch: bool = False,
    kind: str = Typed.EXACT,
) -> CommandLine:
    return CommandLine(at, clip(line.strip()), clip(text), clip(typed), echoed, mismatch, kind)


def _unread(at: int, typed: TypedLine) -> CommandLine:
    return _row(at, "", typed.text.strip(), typed.text, kind=Typed.INPUT)
