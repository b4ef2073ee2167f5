"""Private file writing for client and daemon state: atomic replace, 0700 dirs, 0600 files.

A directory Limen owns is made 0700. One it does not own keeps its mode (Limen cannot change
it): typically a Kubernetes volume's root, which the kubelet gives to root with the pod's
``fsGroup`` (2775 on a PersistentVolumeClaim, 2777 for an emptyDir). Such a directory is used
only when this process can write to it and other users (outside owner and group) have no
access at all; otherwise :class:`~limen.errors.BadParameter` says why and what to do — use a
directory of Limen's own inside it, as the operator's pods do (``/var/lib/limen/data`` in a
volume mounted at ``/var/lib/limen``).

Called by the client (``~/.limen``), host credentials and the daemon (its data directory).
Imports nothing of Limen but its errors.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from limen.errors import BadParameter

__all__ = ["private_dir", "replace_atomically", "write_private"]


def private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700, and every missing parent with mode 0700 too (a
    ``LIMEN_HOME`` or data directory created on the way is private); make an existing ``path``
    0700 when this process owns it, or check one it does not own (see the module doc).
    Existing parents are left as they are."""
    missing = []
    parent = path
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    _make_private(path)
    return path


def _make_private(path: Path) -> None:
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise BadParameter(f"{path} is not a directory")
    mode, me = stat.S_IMODE(info.st_mode), os.geteuid()
    if mode == 0o700:
        return
    if info.st_uid == me or me == 0:
        os.chmod(path, 0o700)
        return
    owner = f"{path} belongs to uid {info.st_uid}, not to this process (uid {me})"
    if mode & 0o007:
        raise BadParameter(
            f"{owner}, and other users have access to it (mode {mode:04o}); Limen cannot make "
            f"it private: use a directory of its own inside it (e.g. {path / 'data'}), or give "
            f"this one to uid {me}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise BadParameter(f"{owner}, and this process cannot write to it (mode {mode:04o}, "
                           f"group {info.st_gid})")


def write_private(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    """Write atomically: a temp file in the same dir (created 0600), fsync, rename over ``path``."""
    private_dir(path.parent)
    return replace_atomically(path, data, mode)


def replace_atomically(path: Path, data: bytes | str, mode: int) -> Path:
    """Replace ``path`` with ``data`` (mode ``mode``) in one rename: a temp file in the same
    existing directory, fsynced first; a reader sees the old content or the new, never a part."""
    payload = data.encode() if isinstance(data, str) else data
    import tempfile  # here: the ProxyCommand reads files only, and tempfile imports random

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
