"""Private file writing for client and daemon state: atomic replace, 0700 dirs, 0600 files.

Called by the client (``~/.limen``), host credentials and the daemon. Imports nothing of Limen.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["private_dir", "replace_atomically", "write_private"]


def private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700, and every missing parent with mode 0700 too (a
    ``LIMEN_HOME`` or data directory created on the way is private); fix ``path``'s mode if it
    exists. Existing parents are left as they are."""
    missing = []
    parent = path
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    """Write atomically: a temp file in the same dir (created 0600), fsync, rename over ``path``."""
    private_dir(path.parent)
    return replace_atomically(path, data, mode)


def replace_atomically(path: Path, data: bytes | str, mode: int) -> Path:
    """Replace ``path`` with ``data`` (mode ``mode``) in one rename: a temp file in the same
    existing directory, fsynced first; a reader sees the old content or the new, never a part."""
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
