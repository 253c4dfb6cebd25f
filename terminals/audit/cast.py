"""asciicast v2 from a session's frames. Pure: frames in, lines of text out.

Output and input bytes are decoded with incremental UTF-8 decoders (one per direction), so a
character split across frames is never split across events and every event is valid UTF-8.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

MEDIA_TYPE = "application/x-asciicast"
DEFAULT_SIZE = (80, 24)


@dataclass(frozen=True)
class CastFrame:
    offset_us: int
    direction: str  # "i", "o", "r", or "m" (a marker, labelled with data)
    data: bytes


def parse_size(data: bytes) -> tuple[int, int] | None:
    """``b"120x40"`` → ``(120, 40)``; resize frames are stored in asciicast's own form."""
    cols, _, rows = data.decode("ascii", "replace").partition("x")
    if cols.isdigit() and rows.isdigit():
        return int(cols), int(rows)
    return None


def header(
    size: tuple[int, int],
    timestamp: int,
    title: str,
    command: str,
    duration: float | None = None,
    idle_time_limit: float | None = None,
) -> dict[str, Any]:
    """The header object: the first line of the file."""
    result: dict[str, Any] = {
        "version": 2,
        "width": size[0],
        "height": size[1],
        "timestamp": timestamp,
        "title": title,
        "command": command,
        "env": {"TERM": "xterm-256color"},
    }
    if duration is not None:
        result["duration"] = round(duration, 6)
    if idle_time_limit is not None:
        result["idle_time_limit"] = idle_time_limit
    return result


def events(frames: Iterable[CastFrame]) -> Iterator[str]:
    """One JSON line per event, without the header."""
    decoders = {
        "o": codecs.getincrementaldecoder("utf-8")("replace"),
        "i": codecs.getincrementaldecoder("utf-8")("replace"),
    }
    for frame in frames:
        seconds = round(frame.offset_us / 1_000_000, 6)
        if frame.direction == "r":
            size = parse_size(frame.data)
            if size:
                yield json.dumps([seconds, "r", f"{size[0]}x{size[1]}"])
            continue
        if frame.direction == "m":
            yield json.dumps(
                [seconds, "m", frame.data.decode("utf-8", "replace")], ensure_ascii=False
            )
            continue
        text = decoders[frame.direction].decode(frame.data)
        if text:
            yield json.dumps([seconds, frame.direction, text], ensure_ascii=False)
