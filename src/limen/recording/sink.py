"""Where finished recordings go: the ``RecordingSink`` seam, the ``RecordingStore`` that auth
also reads them back from, and the local-directory store.

The node agent hands every finished (or recovered) recording to a sink. In single-process
mode, :class:`LocalDirectorySink` moves it into auth's recordings directory
(``DATA_DIR/log/recordings/<session_id>.cast``) next to a JSON sidecar with the session's
metadata (``<session_id>.json``: user, login, server, times, ``incomplete``), written first:
when the ``.cast`` is there, so is its sidecar. A sink that
uploads to auth over its API (separate agents) implements the same protocol.

Auth stores and serves recordings through a :class:`RecordingStore` (a sink that can also be
read): the directory for a SQLite backend, the database every replica shares for a PostgreSQL
one (``limen.auth.recordings_postgres``; chosen by ``limen.auth.recordings.recording_store``).
Another store (an object store) implements the same five methods.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from limen.errors import NotFound
from limen.files import write_private
from limen.recording.writer import SESSION_ID_PATTERN, check_session_id

__all__ = ["LocalDirectorySink", "RecordingSink", "RecordingStore", "directory_listing",
           "directory_metadata", "recordings_dir", "sessions_dir"]


def sessions_dir(data_dir: Path) -> Path:
    """Recordings being written on an agent: ``DATA_DIR/log/sessions``."""
    return data_dir / "log" / "sessions"


def recordings_dir(data_dir: Path) -> Path:
    """Auth's store of finished recordings: ``DATA_DIR/log/recordings``."""
    return data_dir / "log" / "recordings"


@runtime_checkable
class RecordingSink(Protocol):
    async def upload(self, session_id: str, path: Path, meta: Mapping[str, Any]) -> None:
        """Take ownership of the finished recording at ``path`` (the caller forgets it)."""
        ...


@runtime_checkable
class RecordingStore(RecordingSink, Protocol):
    """Auth's store of finished recordings: a sink that can be read back. Metadata dicts are
    the recorder's sidecar plus ``session_id``."""

    async def stored_meta(self, session_id: str) -> dict[str, Any] | None:
        """The metadata stored for ``session_id``, even for a recording whose store was
        interrupted (whose host owns the id); None when there is none."""
        ...

    async def metadata(self, session_id: str) -> dict[str, Any] | None:
        """The metadata of the stored recording ``session_id``, or None when there is none."""
        ...

    async def list_metadata(self) -> list[dict[str, Any]]:
        """The metadata of every stored recording."""
        ...

    async def read(self, session_id: str) -> bytes:
        """The asciicast file of recording ``session_id``; ``NotFound`` when there is none."""
        ...


def _sidecar(directory: Path, session_id: str) -> dict[str, Any] | None:
    try:
        found = json.loads((directory / f"{session_id}.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        found = {}
    meta = dict(found) if isinstance(found, dict) else {}
    meta["session_id"] = session_id
    return meta


def directory_metadata(directory: Path, session_id: str) -> dict[str, Any] | None:
    """The metadata of recording ``session_id`` (a checked id) in ``directory``, or None when
    its ``.cast`` is not there (blocking)."""
    if not (directory / f"{session_id}.cast").is_file():
        return None
    return _sidecar(directory, session_id) or {"session_id": session_id}


def directory_listing(directory: Path) -> list[dict[str, Any]]:
    """The metadata of every recording in ``directory``, by session id (blocking)."""
    if not directory.is_dir():
        return []
    return [_sidecar(directory, path.name.removesuffix(".cast"))
            or {"session_id": path.name.removesuffix(".cast")}
            for path in sorted(directory.glob("*.cast"))
            if SESSION_ID_PATTERN.match(path.name.removesuffix(".cast"))]


class LocalDirectorySink:
    """Moves recordings into ``directory`` (0700) with a ``<session_id>.json`` sidecar; a
    :class:`RecordingStore` (auth reads them back from there)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def cast_path(self, session_id: str) -> Path:
        return self.directory / f"{check_session_id(session_id)}.cast"

    def meta_path(self, session_id: str) -> Path:
        return self.directory / f"{check_session_id(session_id)}.json"

    async def upload(self, session_id: str, path: Path, meta: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._store, session_id, path, dict(meta))

    async def stored_meta(self, session_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(_sidecar, self.directory, check_session_id(session_id))

    async def metadata(self, session_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(directory_metadata, self.directory,
                                       check_session_id(session_id))

    async def list_metadata(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(directory_listing, self.directory)

    async def read(self, session_id: str) -> bytes:
        path = self.cast_path(session_id)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(f"no recording of session {session_id}") from None

    def _store(self, session_id: str, path: Path, meta: dict[str, Any]) -> None:
        # The sidecar first: once <id>.cast exists, its metadata is there too.
        target = self.cast_path(session_id)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(self.meta_path(session_id),
                      json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        try:
            os.replace(path, target)
        except OSError:  # another file system: copy, sync, then rename into place
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(path, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
            path.unlink()
