"""Where finished recordings go: the ``RecordingSink`` seam and the local-directory sink.

The node agent hands every finished (or recovered) recording to a sink. In single-process
mode, :class:`LocalDirectorySink` moves it into auth's recordings directory
(``DATA_DIR/log/recordings/<session_id>.cast``) next to a JSON sidecar with the session's
metadata (``<session_id>.json``: user, login, server, times, ``incomplete``), written first:
when the ``.cast`` is there, so is its sidecar. A sink that
uploads to auth over its API (separate agents) implements the same protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from limen.files import write_private
from limen.recording.writer import check_session_id

__all__ = ["LocalDirectorySink", "RecordingSink", "recordings_dir", "sessions_dir"]


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


class LocalDirectorySink:
    """Moves recordings into ``directory`` (0700) with a ``<session_id>.json`` sidecar."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def cast_path(self, session_id: str) -> Path:
        return self.directory / f"{check_session_id(session_id)}.cast"

    def meta_path(self, session_id: str) -> Path:
        return self.directory / f"{check_session_id(session_id)}.json"

    async def upload(self, session_id: str, path: Path, meta: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._store, session_id, path, dict(meta))

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
