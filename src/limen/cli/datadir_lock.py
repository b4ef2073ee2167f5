"""One ``limen start`` per data directory: an exclusive ``flock`` on ``DATA_DIR/limen.lock``.

The lock is taken before anything of the directory is opened and held for the life of the
process; the kernel drops it when the process ends, however it ends (no stale lock after a
crash). The holder's pid is written in the file, so a second ``limen start`` on the same
directory refuses at once with ``another limen process (pid N) is using DATA_DIR`` instead
of overwriting the first one's ``listeners.json``. ``lmctl --data-dir`` takes no lock: it
reads the running cluster's listeners and admin identity. The descriptor is close-on-exec,
so the shells and commands a node agent spawns never inherit the lock.

Called by ``limen.cli.compose.cluster_services``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from limen.errors import AlreadyExists
from limen.files import private_dir

__all__ = ["LOCK_FILE", "hold_data_dir"]

LOCK_FILE = "limen.lock"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"


@contextlib.contextmanager
def hold_data_dir(data_dir: Path) -> Iterator[Path]:
    """Hold the data directory's lock for the ``with`` block (``AlreadyExists`` when another
    live process holds it); yields the lock file's path."""
    private_dir(data_dir)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyExists(f"another limen process (pid {_holder(fd)}) is using "
                                f"{data_dir}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a newcomer)
