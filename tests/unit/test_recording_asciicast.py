"""asciicast v2 format: header/event encoding, lossless bytes, parsing and torn lines, render."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from limen.errors import BadParameter
from limen.recording import (
    Cast,
    CastEvent,
    CastHeader,
    StreamDecoder,
    data_bytes,
    encode_event,
    encode_header,
    parse_cast,
    render,
)

HEADER = CastHeader(80, 24, 1_700_000_000, "sess-1", {"TERM": "xterm", "SHELL": "/bin/bash"},
                    {"session_id": "sess-1", "user": "alice"})


def _cast_bytes(chunks: list[bytes]) -> bytes:
    decoder = StreamDecoder()
    lines = [encode_header(HEADER)]
    for i, chunk in enumerate(chunks):
        text = decoder.decode(chunk)
        if text:
            lines.append(encode_event(i * 0.5, "o", text))
    rest = decoder.decode(b"", final=True)
    if rest:
        lines.append(encode_event(len(chunks) * 0.5, "o", rest))
    return b"".join(lines)


def test_header_is_asciicast_v2_with_limen_metadata() -> None:
    doc = json.loads(encode_header(HEADER))
    assert doc == {"version": 2, "width": 80, "height": 24, "timestamp": 1_700_000_000,
                   "title": "sess-1", "env": {"TERM": "xterm", "SHELL": "/bin/bash"},
                   "limen": {"session_id": "sess-1", "user": "alice"}}
    assert CastHeader.from_dict(doc) == HEADER
    assert not HEADER.incomplete
    assert HEADER.mark_incomplete().incomplete


def test_event_line_is_a_json_array() -> None:
    line = encode_event(1.25, "o", "héllo\r\n")
    assert line.endswith(b"\n")
    assert json.loads(line) == [1.25, "o", "héllo\r\n"]
    assert "héllo".encode() in line  # non-ASCII stays compact UTF-8


def test_round_trip_keeps_events() -> None:
    cast = parse_cast(_cast_bytes([b"hello ", b"world\r\n"]))
    assert cast.header == HEADER
    assert [e.code for e in cast.events] == ["o", "o"]
    assert cast.output() == b"hello world\r\n"
    assert not cast.torn
    assert not cast.incomplete


def test_split_multibyte_character_and_invalid_bytes_survive() -> None:
    euro = "€".encode()
    chunks = [b"a" + euro[:1], euro[1:] + b"\xff\xfe", b"\x1b[31m\xc3", b"(tail"]
    cast = parse_cast(_cast_bytes(chunks))
    assert cast.output() == b"".join(chunks)
    # the split character was written whole, in one event
    assert any("€" in e.data for e in cast.events)


def test_truncated_character_at_end_of_stream_is_kept() -> None:
    chunks = [b"ok", "€".encode()[:2]]
    assert parse_cast(_cast_bytes(chunks)).output() == b"ok" + "€".encode()[:2]


@given(st.lists(st.binary(max_size=40), max_size=12))
def test_any_byte_stream_renders_back_byte_for_byte(chunks: list[bytes]) -> None:
    out = io.BytesIO()
    render(parse_cast(_cast_bytes(chunks)), "text", out)
    assert out.getvalue() == b"".join(chunks)


def test_torn_last_line_is_dropped_and_flagged() -> None:
    data = _cast_bytes([b"one", b"two"]) + b'[1.5, "o", "thr'
    cast = parse_cast(data)
    assert cast.torn
    assert cast.incomplete
    assert cast.output() == b"onetwo"


def test_invalid_line_in_the_middle_is_an_error() -> None:
    data = encode_header(HEADER) + b"garbage\n" + encode_event(1, "o", "x")
    with pytest.raises(BadParameter, match="line 2"):
        parse_cast(data)


@pytest.mark.parametrize("data", [
    b"", b"{}\n", b'{"version": 1, "width": 80, "height": 24}\n', b"[1, 2]\n",
    b'{"version": 2, "width": -1, "height": 24}\n', b"\xff\xfe\n",
])
def test_bad_headers_are_refused(data: bytes) -> None:
    with pytest.raises(BadParameter):
        parse_cast(data)


@pytest.mark.parametrize("line", [
    b'[1, "x", "a"]', b'["1", "o", "a"]', b'[1, "o"]', b'[1, "o", 5]', b'{"t": 1}',
    b'[true, "o", "a"]', b"[NaN, \"o\", \"a\"]",
])
def test_bad_events_are_refused(line: bytes) -> None:
    with pytest.raises(BadParameter):
        parse_cast(encode_header(HEADER) + line + b"\n")


def test_render_json_lists_header_and_events() -> None:
    out = io.BytesIO()
    render(parse_cast(_cast_bytes([b"a", b"\xff"])), "json", out)
    doc = json.loads(out.getvalue())
    assert doc["header"]["version"] == 2
    assert doc["incomplete"] is False
    assert [e[1] for e in doc["events"]] == ["o", "o"]
    assert data_bytes(doc["events"][1][2]) == b"\xff"


def test_render_pty_waits_the_recorded_gaps_divided_by_speed() -> None:
    cast = Cast(HEADER, (CastEvent(0.5, "o", "a"), CastEvent(1.0, "r", "90x30"),
                         CastEvent(2.5, "o", "b"), CastEvent(2.5, "o", "c"),
                         CastEvent(12.5, "o", "d")))
    sleeps: list[float] = []
    out = io.BytesIO()
    render(cast, "pty", out, speed=2.0, sleep=sleeps.append)
    assert out.getvalue() == b"abcd"
    assert sleeps == [0.25, 1.0, 5.0]
    sleeps.clear()
    render(cast, "pty", io.BytesIO(), speed=1.0, max_idle=3.0, sleep=sleeps.append)
    assert sleeps == [0.5, 2.0, 3.0]


def test_render_refuses_unknown_format_and_bad_speed() -> None:
    cast = parse_cast(_cast_bytes([b"a"]))
    with pytest.raises(BadParameter, match="unknown format"):
        render(cast, "html", io.BytesIO())
    with pytest.raises(BadParameter, match="speed"):
        render(cast, "pty", io.BytesIO(), speed=0)
