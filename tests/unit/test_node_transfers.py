"""SFTP request codec for the audit log: framing across chunks, skipped data, garbage."""

from __future__ import annotations

import itertools
import struct

from hypothesis import given
from hypothesis import strategies as st

from limen.agents.node.transfers import MAX_PACKET, SftpOp, SftpRequestParser


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(">I", len(raw)) + raw


def _packet(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


def _req(kind: int, *fields: bytes, rid: int = 7) -> bytes:
    return _packet(kind, struct.pack(">I", rid) + b"".join(fields))


INIT = _packet(1, struct.pack(">I", 3))
OPEN_W = _req(3, _s("/home/u/new.txt"), struct.pack(">I", 0x02 | 0x08 | 0x10), b"\0\0\0\0")
WRITE = _req(6, _s(b"handle"), struct.pack(">Q", 0), _s(b"x" * 70_000))
CLOSE = _req(4, _s(b"handle"))
STREAM = b"".join([
    INIT, OPEN_W, WRITE, CLOSE,
    _req(13, _s("old.txt")), _req(14, _s("dir")), _req(15, _s("dir")),
    _req(18, _s("a"), _s("b")), _req(9, _s("f"), b"\0\0\0\0"), _req(17, _s("stat-only")),
    _req(3, _s("r.txt"), struct.pack(">I", 0x01), b"\0\0\0\0"),
])
EXPECTED = [
    SftpOp("open", "/home/u/new.txt", flags="write,create,truncate"),
    SftpOp("remove", "old.txt"), SftpOp("mkdir", "dir"), SftpOp("rmdir", "dir"),
    SftpOp("rename", "a", target="b"), SftpOp("setstat", "f"),
    SftpOp("open", "r.txt", flags="read"),
]


def test_whole_stream() -> None:
    parser = SftpRequestParser()
    assert parser.feed(STREAM) == EXPECTED
    assert not parser.broken


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_any_chunking_gives_the_same_operations(cuts: list[int]) -> None:
    parser = SftpRequestParser()
    points = sorted({0, len(STREAM), *cuts})
    ops = []
    for start, end in itertools.pairwise(points):
        ops.extend(parser.feed(STREAM[start:end]))
    assert ops == EXPECTED


def test_byte_by_byte() -> None:
    parser = SftpRequestParser()
    ops = [op for i in range(len(STREAM)) for op in parser.feed(STREAM[i:i + 1])]
    assert ops == EXPECTED


def test_a_nonsense_length_turns_the_parser_off() -> None:
    parser = SftpRequestParser()
    assert parser.feed(struct.pack(">IB", MAX_PACKET + 1, 3)) == []
    assert parser.broken
    assert parser.feed(OPEN_W) == []


def test_truncated_fields_are_ignored() -> None:
    parser = SftpRequestParser()
    assert parser.feed(_req(13, b"\0\0\0\xff" + b"ab")) == []  # path longer than the packet
    assert parser.feed(_req(3, _s("x"))) == []  # open without flags
    assert parser.feed(_req(18, _s("only-one"))) == []
    assert parser.feed(_req(13, _s("ok"))) == [SftpOp("remove", "ok")]


@given(st.binary(max_size=2000))
def test_garbage_never_crashes(data: bytes) -> None:
    parser = SftpRequestParser()
    for op in parser.feed(data):
        assert isinstance(op, SftpOp)
