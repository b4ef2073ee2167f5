"""The OpenSSH SFTP extensions that change files by path are audited like their standard
relatives (posix-rename and hardlink like rename, lsetstat like setstat); the read-only ones
are not."""

from __future__ import annotations

import struct

from limen.agents.node.transfers import SftpOp, SftpRequestParser

_EXTENDED = 200


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">I", len(raw)) + raw


def _extended(name: str, *fields: bytes, rid: int = 9) -> bytes:
    body = struct.pack(">I", rid) + _s(name) + b"".join(fields)
    return struct.pack(">IB", len(body) + 1, _EXTENDED) + body


def test_posix_rename_hardlink_and_lsetstat_are_reported() -> None:
    stream = b"".join([
        _extended("posix-rename@openssh.com", _s("/home/u/a"), _s("/home/u/b")),
        _extended("hardlink@openssh.com", _s("/etc/shadow"), _s("/home/u/link")),
        _extended("lsetstat@openssh.com", _s("/home/u/l"), b"\0\0\0\0"),
    ])
    assert SftpRequestParser().feed(stream) == [
        SftpOp("posix-rename", "/home/u/a", target="/home/u/b"),
        SftpOp("hardlink", "/etc/shadow", target="/home/u/link"),
        SftpOp("lsetstat", "/home/u/l"),
    ]


def test_byte_by_byte_gives_the_same() -> None:
    stream = _extended("hardlink@openssh.com", _s("x"), _s("y")) * 2
    parser = SftpRequestParser()
    ops = [op for i in range(len(stream)) for op in parser.feed(stream[i:i + 1])]
    assert ops == [SftpOp("hardlink", "x", target="y")] * 2


def test_read_only_and_malformed_extensions_are_not_reported() -> None:
    parser = SftpRequestParser()
    assert parser.feed(_extended("statvfs@openssh.com", _s("/"))) == []
    assert parser.feed(_extended("limits@openssh.com")) == []
    assert parser.feed(_extended("hardlink@openssh.com", _s("only-one"))) == []
    assert parser.feed(_extended("posix-rename@openssh.com")) == []
    assert not parser.broken
    assert parser.feed(_extended("posix-rename@openssh.com", _s("a"), _s("b"))) == [
        SftpOp("posix-rename", "a", target="b")]
