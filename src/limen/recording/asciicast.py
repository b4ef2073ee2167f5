"""The asciicast v2 format: header and event lines, lossless byte encoding, parsing.

Pure code (no I/O besides :func:`read_cast`). Written by :mod:`limen.recording.writer` on the
node agent, read back by :func:`read_cast` for ``lmsh play`` and auth. A recording is JSON
lines (https://docs.asciinema.org/manual/asciicast/v2/)::

    {"version": 2, "width": 80, "height": 24, "timestamp": 1767225600, "title": "<session id>",
     "env": {"TERM": "xterm-256color", "SHELL": "/bin/bash"},
     "limen": {"session_id": ..., "user": ..., "login": ..., "incomplete": true}}
    [0.012345, "o", "output text"]
    [1.500000, "r", "100x30"]
    [2.000000, "i", "keystrokes"]          # only when input recording is on

Players (``asciinema play``, asciinema-player) ignore the extra ``limen`` header key, which
carries the session's metadata and, after crash recovery, ``"incomplete": true``.

Lossless bytes. Terminal output is bytes, asciicast data is text. Bytes are decoded as UTF-8
with ``surrogateescape`` by an incremental decoder per stream (:class:`StreamDecoder`), so a
multi-byte character split across two reads is kept whole and an invalid byte ``0xNN``
becomes the lone surrogate ``U+DCNN``, written in JSON as the escape ``\\udcNN``. Readers in
Limen turn the text back into the exact bytes (:func:`data_bytes`); other players show a
replacement character for such (rare) bytes.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeGuard

from limen.errors import BadParameter

__all__ = [
    "EVENT_CODES",
    "FORMAT_VERSION",
    "Cast",
    "CastEvent",
    "CastHeader",
    "StreamDecoder",
    "data_bytes",
    "encode_event",
    "encode_header",
    "parse_cast",
    "parse_event",
    "read_cast",
]

FORMAT_VERSION = 2
EVENT_CODES = frozenset({"o", "i", "r", "m"})
"""Output, input, resize (``WxH``), marker."""
LIMEN_KEY = "limen"
"""Header key holding Limen's metadata (``incomplete`` and the session's audit fields)."""


@dataclass(frozen=True)
class CastHeader:
    width: int
    height: int
    timestamp: int
    """Unix time of the session start (seconds)."""
    title: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    limen: Mapping[str, Any] = field(default_factory=dict)
    """Limen's metadata: session id, user, login, server; ``incomplete`` after recovery."""

    @property
    def incomplete(self) -> bool:
        return bool(self.limen.get("incomplete"))

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"version": FORMAT_VERSION, "width": self.width,
                               "height": self.height, "timestamp": self.timestamp}
        if self.title:
            doc["title"] = self.title
        if self.env:
            doc["env"] = dict(self.env)
        if self.limen:
            doc[LIMEN_KEY] = dict(self.limen)
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> CastHeader:
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise BadParameter("not an asciicast v2 recording (bad header)")
        width, height, timestamp = doc.get("width"), doc.get("height"), doc.get("timestamp", 0)
        if not (_count(width) and _count(height) and _count(timestamp)):
            raise BadParameter("asciicast header width, height and timestamp must be integers")
        env = doc.get("env") or {}
        limen = doc.get(LIMEN_KEY) or {}
        if not isinstance(env, dict) or not isinstance(limen, dict):
            raise BadParameter("asciicast header env and limen must be objects")
        title = doc.get("title") or ""
        return cls(width, height, timestamp, str(title),
                   {str(k): str(v) for k, v in env.items()}, limen)

    def mark_incomplete(self) -> CastHeader:
        return replace(self, limen={**self.limen, "incomplete": True})


def _count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class CastEvent:
    time: float
    """Seconds since the start of the recording."""
    code: str
    """``o`` output, ``i`` input, ``r`` resize, ``m`` marker."""
    data: str

    def to_list(self) -> list[Any]:
        return [self.time, self.code, self.data]

    @property
    def raw(self) -> bytes:
        """The data as the exact bytes that were recorded."""
        return data_bytes(self.data)


@dataclass(frozen=True)
class Cast:
    header: CastHeader
    events: tuple[CastEvent, ...]
    torn: bool = False
    """The last line was cut (the writer died mid-line) and was dropped."""

    @property
    def incomplete(self) -> bool:
        return self.torn or self.header.incomplete

    def output(self) -> bytes:
        """The output stream, byte for byte as the session produced it."""
        return b"".join(data_bytes(e.data) for e in self.events if e.code == "o")

    @property
    def duration(self) -> float:
        return self.events[-1].time if self.events else 0.0


def data_bytes(text: str) -> bytes:
    """Event text back to the recorded bytes (inverse of :class:`StreamDecoder`)."""
    return text.encode("utf-8", "surrogateescape")


class StreamDecoder:
    """Incremental UTF-8 decoding that never loses a byte (see the module docstring)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")

    def decode(self, data: bytes, final: bool = False) -> str:
        return self._decoder.decode(data, final)


def encode_header(header: CastHeader) -> bytes:
    """The header line (with its newline)."""
    return _dumps(header.to_dict()) + b"\n"


def encode_event(time: float, code: str, text: str) -> bytes:
    """One event line (with its newline); ``text`` may hold surrogates (escaped in JSON)."""
    return (b"[" + f"{time:.6f}".encode() + b", " + _dumps(code) + b", " + _dumps(text)
            + b"]\n")


def _dumps(value: Any) -> bytes:
    # ensure_ascii=False keeps non-ASCII text compact; the only characters UTF-8 cannot encode
    # are lone surrogates (undecodable bytes), and backslashreplace writes each as \udcNN —
    # exactly the JSON escape of that code unit (they only occur inside JSON strings).
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": ")).encode(
        "utf-8", "backslashreplace")


def _lines(data: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line, ends with a newline) for each non-empty line."""
    start, number = 0, 0
    while start < len(data):
        end = data.find(b"\n", start)
        number += 1
        if end < 0:
            yield number, data[start:], False
            return
        line = data[start:end]
        if line.strip():
            yield number, line, True
        start = end + 1


def parse_event(line: bytes) -> CastEvent:
    try:
        item = json.loads(line)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadParameter(f"invalid event line: {err}") from None
    if (not isinstance(item, list) or len(item) != 3 or isinstance(item[0], bool)
            or not isinstance(item[0], int | float) or not math.isfinite(item[0])
            or item[1] not in EVENT_CODES or not isinstance(item[2], str)):
        raise BadParameter("invalid event: expected [time, code, data]")
    return CastEvent(float(item[0]), item[1], item[2])


def parse_cast(data: bytes) -> Cast:
    """Parse a recording. A cut last line (no newline, or not valid JSON) is dropped and
    flagged ``torn``; any other invalid line raises :class:`BadParameter`."""
    lines = list(_lines(data))
    if not lines:
        raise BadParameter("empty recording")
    _, first, _ = lines[0]
    try:
        header = CastHeader.from_dict(json.loads(first))
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("not an asciicast v2 recording (bad header)") from None
    events: list[CastEvent] = []
    torn = False
    for index, (number, line, complete) in enumerate(lines[1:], start=1):
        last = index == len(lines) - 1
        try:
            events.append(parse_event(line))
        except BadParameter as err:
            if last and not complete:
                torn = True
                break
            raise BadParameter(f"recording line {number}: {err}") from None
    return Cast(header, tuple(events), torn)


def read_cast(path: str | Path) -> Cast:
    """Read and parse a recording file (``.cast`` or a leftover ``.cast.part``)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise BadParameter(f"cannot read recording {path}: {err.strerror}") from None
    try:
        return parse_cast(data)
    except BadParameter as err:
        raise BadParameter(f"{path}: {err}") from None
