"""The line as typed: rebuilt from the keys a browser sent, through line editing. No I/O.

:class:`LineEditor` applies to the input what readline's default (emacs) bindings do, which
is what bash, Python's REPL and most shells' line editors do with these keys:

- printable characters are inserted at the cursor;
- Backspace (DEL or ^H) deletes before the cursor, ^D and Delete (``ESC [ 3 ~``) at it (^D on
  an empty line is end of input: the line is dropped);
- ^A / Home and ^E / End go to the start and the end; ^B / Left and ^F / Right move by one;
- ^U kills to the start, ^K to the end, ^W the word before the cursor; ^Y yanks the last kill
  (consecutive kills add up, as in readline);
- ^C discards the line; ^L and ^G change nothing; Enter (CR or LF) ends it;
- Tab completes: what the shell inserts is not in the input, so the line is marked
  :attr:`Typed.COMPLETED` and a completion point ``⇥`` stands in the typed line; the screen's
  line is the better guess, and agrees when the typed pieces appear in it in order;
- inside a bracketed paste (``ESC [ 200 ~`` … ``ESC [ 201 ~``, only while the program has
  turned the mode on) everything is inserted as it is, newlines included; the Enter after it
  gives one line per pasted line, as the shell runs them;
- the terminal's own answers (cursor position reports, device attributes, colour queries,
  focus and mouse reports) are not keys and are ignored.

Anything else (history recall with Up/Down or ^P/^N, reverse search ^R, Meta/Alt keys, ^T,
^V, undo, function keys, vi mode's Escape) makes the line unknowable from the keys alone:
the line is marked :attr:`Typed.KEYS` and from there on the typed line is a transcript of the
keys (``⟨↑⟩``, ``⟨^R⟩``, ``⟨M-b⟩``…) after what had been rebuilt so far.

Limits. A shell without line editing (``sh``/dash reading a cooked TTY) edits with the TTY's
rules instead: Backspace, ^U (the whole line) and ^W agree, but arrows and ^A/^E are plain
characters there, so such a line is rebuilt wrongly and will differ from the screen. Key
bindings changed with ``bind``/``inputrc`` and vi editing mode are not followed (vi mode's
Escape marks the line as keys). Input typed while a program other than the shell reads it
(``read``, ``cat``, an editor) is rebuilt just the same: the key transcript is what that
program got, which is what the audit needs.
"""

from __future__ import annotations

import codecs
import enum
import re
from dataclasses import dataclass

#: Longest line kept (characters); the rest of a longer line is not kept.
MAX_LINE = 4096
#: An escape sequence longer than this is not a key: it is dropped.
MAX_ESCAPE = 256
#: A completion point in the buffer; NUL cannot reach the buffer as a typed character.
COMPLETION = "\x00"
COMPLETION_MARK = "⇥"

_CSI_FINAL = re.compile(r"[\x40-\x7e]")


class Typed(enum.StrEnum):
    """How the typed line of a command is known (``Command.kind``)."""

    EXACT = "exact"  # rebuilt from the keys
    COMPLETED = "completed"  # with tab completion: the screen has what the shell inserted
    KEYS = "keys"  # keys not modelled (history, search…): the typed line is their transcript
    INPUT = "input"  # from the input only: the screen's line was not read
    FULLSCREEN = "fullscreen"  # entered in a full-screen program: not compared with the screen


@dataclass(frozen=True)
class TypedLine:
    """One line ended by Enter: its text (``⇥`` at completion points) and how it is known."""

    text: str
    kind: Typed

    @property
    def pieces(self) -> list[str]:
        """The typed pieces between completion points."""
        return self.text.split(COMPLETION_MARK) if self.kind is Typed.COMPLETED else [self.text]


_NAMED = {
    "[A": "↑", "[B": "↓", "[C": "→", "[D": "←", "OA": "↑", "OB": "↓", "OC": "→", "OD": "←",
    "[H": "Home", "[F": "End", "OH": "Home", "OF": "End", "[2~": "Ins", "[3~": "Del",
    "[5~": "PgUp", "[6~": "PgDn",
}  # fmt: skip


def key_name(key: str) -> str:
    """A readable token for a key in a transcript: ``⟨↑⟩``, ``⟨^R⟩``, ``⟨M-b⟩``."""
    if key.startswith("\x1b"):
        rest = key[1:]
        if rest in _NAMED:
            return f"⟨{_NAMED[rest]}⟩"
        if len(rest) == 1 and rest.isprintable():
            return f"⟨M-{rest}⟩"
        if rest == "":
            return "⟨Esc⟩"
        return "⟨Esc" + "".join(c if c.isprintable() else "?" for c in rest) + "⟩"
    if key == "\x7f":
        return "⟨BS⟩"
    if key == "\t":
        return COMPLETION_MARK
    if len(key) == 1 and ord(key) < 0x20:
        return f"⟨^{chr(ord(key) + 64)}⟩"
    return key


class LineEditor:
    """Rebuilds the line being typed; :meth:`feed` returns the lines each Enter ended."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._escape = ""  # an escape sequence being read, possibly across frames
        self._pasting = False
        self._killed = ""
        self._reset()

    def _reset(self) -> None:
        self._chars: list[str] = []
        self._cursor = 0
        self._kind = Typed.EXACT
        self._keys: list[str] = []  # the transcript, once the line is KEYS
        self._keys_length = 0
        self._last_was_kill = False

    def lost(self) -> None:
        """Some input never reached the editor (it was dropped): this line is unknowable."""
        self._to_keys("⟨…⟩")

    def feed(self, data: bytes, bracketed: bool = False) -> list[TypedLine]:
        """Apply a frame of input; ``bracketed``: the program has bracketed paste turned on."""
        lines: list[TypedLine] = []
        for char in self._decoder.decode(data):
            if self._escape:
                self._escape_char(char, bracketed)
            elif char == "\x1b":
                self._escape = char
            elif self._pasting:
                self._insert("\n" if char == "\r" else char)
            elif char in "\r\n":
                lines += self._enter()
            else:
                self._key(char)
        if self._escape == "\x1b":
            # A browser sends a key's sequence in one frame: a lone Escape ending one is the
            # Escape key itself (vi), not the start of a sequence to come.
            self._escape = ""
            self._unknown("\x1b")
        return lines

    # Escape sequences.

    def _escape_char(self, char: str, bracketed: bool) -> None:
        sequence = self._escape = self._escape + char
        if len(sequence) == 2:
            if char in "[O]P_^X":
                return  # a CSI, SS3 or string sequence follows
            self._escape = ""
            if self._pasting:
                self._insert(sequence)
            else:
                self._unknown(sequence)  # Meta-key (Alt) or a lone Escape
            return
        kind = sequence[1]
        if kind == "O":
            self._escape = ""
            self._sequence(sequence, bracketed)
        elif kind == "[":
            if _CSI_FINAL.fullmatch(char):
                self._escape = ""
                self._sequence(sequence, bracketed)
            elif len(sequence) > MAX_ESCAPE:
                self._escape = ""
        elif char == "\x07" or sequence.endswith("\x1b\\") or len(sequence) > MAX_ESCAPE:
            self._escape = ""  # a string (OSC, DCS…): the terminal answering a query

    def _sequence(self, sequence: str, bracketed: bool) -> None:
        body = sequence[1:]
        if body == "[200~" and bracketed:
            self._pasting = True
            return
        if body == "[201~":
            self._pasting = False
            return
        if self._pasting:
            self._insert(sequence)
            return
        final = body[-1]
        if body in ("[I", "[O") or body.startswith("[<") or body == "[M":
            return  # focus and mouse reports
        if body.startswith("[") and final in "Rcnty":
            return  # the terminal's answers: cursor position, attributes, window reports
        move = {
            "[C": self._right, "OC": self._right, "[D": self._left, "OD": self._left,
            "[H": self._home, "OH": self._home, "[1~": self._home, "[7~": self._home,
            "[F": self._end, "OF": self._end, "[4~": self._end, "[8~": self._end,
            "[3~": self._delete,
        }.get(body)  # fmt: skip
        if move is None or self._kind is Typed.KEYS:
            self._unknown(sequence)
        else:
            move()

    # Keys.

    def _key(self, char: str) -> None:
        if self._kind is Typed.KEYS:
            if char == "\x03":
                self._reset()
            else:
                self._note(key_name(char))
            return
        if char.isprintable():
            self._insert(char)
            return
        kill = self._last_was_kill
        self._last_was_kill = False
        action = {
            "\x7f": self._backspace, "\x08": self._backspace, "\x01": self._home,
            "\x05": self._end, "\x02": self._left, "\x06": self._right, "\x04": self._ctrl_d,
            "\x0b": lambda: self._kill_to_end(kill), "\x15": lambda: self._kill_to_start(kill),
            "\x17": lambda: self._kill_word(kill), "\x19": self._yank, "\x03": self._reset,
            "\t": self._complete, "\x0c": _nothing, "\x07": _nothing,
        }.get(char)  # fmt: skip
        if action is None:
            self._unknown(char)
        else:
            action()

    def _insert(self, text: str) -> None:
        if self._kind is Typed.KEYS:
            self._note(text)
            return
        self._last_was_kill = False
        room = MAX_LINE - len(self._chars)
        if room > 0:
            chars = list(text[:room])
            self._chars[self._cursor : self._cursor] = chars
            self._cursor += len(chars)

    def _backspace(self) -> None:
        if self._cursor and self._chars[self._cursor - 1] == COMPLETION:
            self._unknown("\x7f")  # into completed text: how much went is not known
        elif self._cursor:
            del self._chars[self._cursor - 1]
            self._cursor -= 1

    def _delete(self) -> None:
        if self._cursor < len(self._chars) and self._chars[self._cursor] == COMPLETION:
            self._unknown("\x1b[3~")
        elif self._cursor < len(self._chars):
            del self._chars[self._cursor]

    def _ctrl_d(self) -> None:
        if self._chars:
            self._delete()
        else:
            self._reset()  # end of input: the shell exits or the program reads EOF

    def _home(self) -> None:
        self._cursor = 0

    def _end(self) -> None:
        self._cursor = len(self._chars)

    def _left(self) -> None:
        if self._cursor and self._chars[self._cursor - 1] == COMPLETION:
            self._unknown("\x1b[D")  # across completed text of unknown length
        elif self._cursor:
            self._cursor -= 1

    def _right(self) -> None:
        if self._cursor < len(self._chars) and self._chars[self._cursor] == COMPLETION:
            self._unknown("\x1b[C")
        elif self._cursor < len(self._chars):
            self._cursor += 1

    def _cut(self, start: int, end: int, append: bool, before: bool) -> None:
        if COMPLETION in self._chars[start:end]:
            self._unknown("\x15" if before else "\x0b")
            return
        text = "".join(self._chars[start:end])
        if append:  # consecutive kills make one
            self._killed = text + self._killed if before else self._killed + text
        else:
            self._killed = text
        del self._chars[start:end]
        self._cursor = start
        self._last_was_kill = True

    def _kill_to_end(self, append: bool) -> None:
        self._cut(self._cursor, len(self._chars), append, before=False)

    def _kill_to_start(self, append: bool) -> None:
        self._cut(0, self._cursor, append, before=True)

    def _kill_word(self, append: bool) -> None:
        start = self._cursor
        while start and self._chars[start - 1].isspace():
            start -= 1
        while start and not self._chars[start - 1].isspace():
            start -= 1
        self._cut(start, self._cursor, append, before=True)

    def _yank(self) -> None:
        self._insert(self._killed)

    def _complete(self) -> None:
        if self._kind is Typed.EXACT:
            self._kind = Typed.COMPLETED
        if not (self._cursor and self._chars[self._cursor - 1] == COMPLETION):
            self._insert(COMPLETION)  # a second Tab lists the choices: one point still

    def _unknown(self, key: str) -> None:
        self._to_keys(key_name(key))

    def _to_keys(self, token: str) -> None:
        if self._kind is not Typed.KEYS:
            self._keys, self._keys_length = [], 0
            self._note(self._text())
            self._kind = Typed.KEYS
        self._note(token)
        self._last_was_kill = False

    def _note(self, token: str) -> None:
        """Add to the transcript, up to :data:`MAX_LINE` characters."""
        if self._keys_length < MAX_LINE:
            self._keys.append(token)
            self._keys_length += len(token)

    def _text(self) -> str:
        return "".join(self._chars).replace(COMPLETION, COMPLETION_MARK)

    def _enter(self) -> list[TypedLine]:
        """End the line: one line, or one per line of a bracketed paste."""
        if self._kind is Typed.KEYS:
            lines = [TypedLine("".join(self._keys)[:MAX_LINE], Typed.KEYS)]
        else:
            kind = self._kind
            lines = [TypedLine(part, kind) for part in self._text().split("\n")]
            if len(lines) > 1 and not lines[-1].text:
                lines.pop()  # the paste's last newline
        self._reset()
        return lines


def _nothing() -> None:
    pass
