"""Crash recovery: complete the recordings a dead agent left behind, then hand them over.

Called by the node agent when it starts (:meth:`NodeSSHServer.start`). In the sessions
directory, every ``<id>.cast.part`` is a session the agent did not finish (it crashed or was
killed): :func:`complete_part` keeps its valid lines (a cut last line is dropped), marks the
header ``"limen": {"incomplete": true}`` and writes it atomically as ``<id>.cast``, which
asciicast players still play. Every ``<id>.cast`` found (recovered, or finished but not yet
handed over when the agent died) then goes to the sink with ``incomplete`` in its metadata.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from limen.errors import BadParameter, LimenError
from limen.recording.asciicast import CastHeader, encode_header, parse_cast, parse_event
from limen.recording.sink import RecordingSink
from limen.recording.writer import PART_SUFFIX, SESSION_ID_PATTERN

__all__ = ["complete_part", "recover_recordings"]

log = logging.getLogger(__name__)


def complete_part(part: Path) -> Path:
    """Turn ``<id>.cast.part`` into a valid, incomplete-marked ``<id>.cast``; returns it."""
    session_id = part.name.removesuffix(PART_SUFFIX)
    data = part.read_bytes()
    try:
        header, body = parse_cast(data.split(b"\n", 1)[0]).header, _event_lines(data)
    except BadParameter:  # the header itself is unreadable: keep an empty, playable file
        header = CastHeader(80, 24, int(part.stat().st_mtime), session_id,
                            limen={"session_id": session_id})
        body = b""
    target = part.with_name(f"{session_id}.cast")
    tmp = part.with_name(f".{session_id}.cast.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(encode_header(header.mark_incomplete()))
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    part.unlink()
    return target


def _valid_prefix(data: bytes) -> bytes:
    """``data`` up to its last newline (the writer always ends a line before the next)."""
    end = data.rfind(b"\n")
    return data[:end + 1] if end >= 0 else data


def _event_lines(data: bytes) -> bytes:
    """The complete event lines of a part file, each checked; stops at the first bad one."""
    prefix = _valid_prefix(data)
    first_end = prefix.find(b"\n")
    kept: list[bytes] = []
    for line in prefix[first_end + 1:].splitlines(keepends=True):
        if not line.strip():
            continue
        try:
            parse_event(line)
        except BadParameter:
            break
        kept.append(line)
    return b"".join(kept)


async def recover_recordings(directory: Path, sink: RecordingSink) -> list[str]:
    """Complete every leftover ``.part`` and upload every ``.cast`` in ``directory``; returns
    the session ids handed to the sink. A file that fails is logged and left in place."""
    done: list[str] = []
    for path in await asyncio.to_thread(_complete_all, directory):
        session_id = path.name.removesuffix(".cast")
        if not SESSION_ID_PATTERN.match(session_id):
            continue
        try:
            meta = await asyncio.to_thread(_meta_of, path)
            await sink.upload(session_id, path, meta)
            done.append(session_id)
        except (OSError, LimenError) as err:
            log.error("cannot hand over recording %s: %s", path, err)
    return done


def _complete_all(directory: Path) -> list[Path]:
    """Complete every ``.part``; returns every ``.cast`` then present."""
    if not directory.is_dir():
        return []
    for part in sorted(directory.glob(f"*{PART_SUFFIX}")):
        try:
            complete_part(part)
        except OSError as err:
            log.error("cannot recover recording %s: %s", part, err)
    return sorted(directory.glob("*.cast"))


def _meta_of(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        first = handle.readline()
    cast = parse_cast(first)
    meta = dict(cast.header.limen)
    meta.setdefault("session_id", path.name.removesuffix(".cast"))
    meta["incomplete"] = cast.header.incomplete
    return meta
