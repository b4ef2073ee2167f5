"""File transfers in the audit log: the SFTP request codec and legacy scp command parsing.

Pure (bytes in, operations out). The node agent runs OpenSSH's ``sftp-server`` as the session
user and relays the channel to it untouched; :class:`SftpRequestParser` watches the client's
side of that stream (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks) and reports the
requests worth an ``sftp`` audit event. Packets are ``uint32 length, byte type, payload``;
reads, writes and listings are skipped by length without being copied. Of the OpenSSH
extensions (``SSH_FXP_EXTENDED``), the ones that change the file system by path are audited
like their standard relatives: ``posix-rename@openssh.com`` and ``hardlink@openssh.com`` like
rename and symlink, ``lsetstat@openssh.com`` like setstat. A stream that stops
making sense (a length over :data:`MAX_PACKET`) turns the parser off instead of guessing.
:func:`scp_direction` recognises the ``scp -t`` / ``scp -f`` server side of ``scp -O``.
"""

from __future__ import annotations

import os
import shlex
import struct
from dataclasses import dataclass

__all__ = ["MAX_PACKET", "SftpOp", "SftpRequestParser", "scp_direction"]

MAX_PACKET = 512 * 1024
"""Longer packets are not SFTP (sftp-server itself refuses more than 256 KiB)."""

_OPEN, _SETSTAT, _REMOVE, _MKDIR, _RMDIR, _RENAME, _SYMLINK = 3, 9, 13, 14, 15, 18, 20
_EXTENDED = 200
_PATH_OPS = {_SETSTAT: "setstat", _REMOVE: "remove", _MKDIR: "mkdir", _RMDIR: "rmdir"}
_TWO_PATH_OPS = {_RENAME: "rename", _SYMLINK: "symlink"}
_EXTENDED_PATH_OPS = {"lsetstat@openssh.com": "lsetstat"}
_EXTENDED_TWO_PATH_OPS = {"posix-rename@openssh.com": "posix-rename",
                          "hardlink@openssh.com": "hardlink"}
_AUDITED = {_OPEN, _EXTENDED, *_PATH_OPS, *_TWO_PATH_OPS}
_READ, _WRITE, _APPEND, _CREAT, _TRUNC = 0x01, 0x02, 0x04, 0x08, 0x10
_HEADER = 5  # length + type
_U32 = struct.Struct(">I")


@dataclass(frozen=True)
class SftpOp:
    action: str
    """``open``, ``remove``, ``mkdir``, ``rmdir``, ``setstat``, ``rename``, ``symlink``, and
    the extensions ``posix-rename``, ``hardlink``, ``lsetstat``."""
    path: str
    target: str = ""
    """The second path of ``rename`` / ``symlink`` / ``posix-rename`` / ``hardlink``."""
    flags: str = ""
    """For ``open``: ``read``, ``write``, ``create``, ``truncate``, ``append``, joined by ``,``."""


class SftpRequestParser:
    """Feed the client's bytes in order; get the audited requests out."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skip = 0
        self.broken = False

    def feed(self, data: bytes) -> list[SftpOp]:
        if self.broken:
            return []
        view = memoryview(data)
        if self._skip:
            skipped = min(self._skip, len(view))
            self._skip -= skipped
            view = view[skipped:]
        ops: list[SftpOp] = []
        while view:
            if len(self._buffer) < _HEADER:
                take = min(_HEADER - len(self._buffer), len(view))
                self._buffer += view[:take]
                view = view[take:]
                if len(self._buffer) < _HEADER:
                    break
            (length,) = _U32.unpack_from(self._buffer)
            if length < 1 or length > MAX_PACKET:
                self.broken = True
                return ops
            kind = self._buffer[4]
            if kind not in _AUDITED:  # skip the body without keeping it
                rest = length - 1 - (len(self._buffer) - _HEADER)
                skipped = min(rest, len(view))
                view = view[skipped:]
                self._buffer.clear()
                self._skip = rest - skipped
                if self._skip:
                    break
                continue
            need = 4 + length - len(self._buffer)
            take = min(need, len(view))
            self._buffer += view[:take]
            view = view[take:]
            if take < need:
                break
            op = _decode(kind, bytes(self._buffer[_HEADER:]))
            self._buffer.clear()
            if op is not None:
                ops.append(op)
        return ops


def _string(body: bytes, offset: int) -> tuple[str, int] | None:
    if offset + 4 > len(body):
        return None
    (size,) = _U32.unpack_from(body, offset)
    end = offset + 4 + size
    if end > len(body):
        return None
    return body[offset + 4:end].decode("utf-8", "replace"), end


def _decode(kind: int, body: bytes) -> SftpOp | None:
    """One audited request (``body``: request id onwards); None when malformed."""
    first = _string(body, 4)
    if first is None:
        return None
    path, offset = first
    if kind == _EXTENDED:
        return _decode_extended(path, body, offset)
    if kind == _OPEN:
        if offset + 4 > len(body):
            return None
        (pflags,) = _U32.unpack_from(body, offset)
        names = [name for bit, name in ((_READ, "read"), (_WRITE, "write"), (_CREAT, "create"),
                                        (_TRUNC, "truncate"), (_APPEND, "append"))
                 if pflags & bit]
        return SftpOp("open", path, flags=",".join(names))
    if kind in _PATH_OPS:
        return SftpOp(_PATH_OPS[kind], path)
    second = _string(body, offset)
    if second is None:
        return None
    return SftpOp(_TWO_PATH_OPS[kind], path, target=second[0])


def _decode_extended(name: str, body: bytes, offset: int) -> SftpOp | None:
    """An audited ``SSH_FXP_EXTENDED`` request ``name`` (its arguments from ``offset``)."""
    if name not in _EXTENDED_PATH_OPS and name not in _EXTENDED_TWO_PATH_OPS:
        return None
    first = _string(body, offset)
    if first is None:
        return None
    if name in _EXTENDED_PATH_OPS:
        return SftpOp(_EXTENDED_PATH_OPS[name], first[0])
    second = _string(body, first[1])
    if second is None:
        return None
    return SftpOp(_EXTENDED_TWO_PATH_OPS[name], first[0], target=second[0])


def scp_direction(command: str) -> tuple[str, str] | None:
    """``("upload" | "download", path)`` for a legacy scp server command, else None."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if not argv or os.path.basename(argv[0]) != "scp":
        return None
    flags = [a for a in argv[1:] if a.startswith("-")]
    paths = [a for a in argv[1:] if not a.startswith("-")]
    path = paths[-1] if paths else ""
    if any("t" in f for f in flags):
        return "upload", path
    if any("f" in f for f in flags):
        return "download", path
    return None
