"""``open_backend``: the one place that turns a backend kind into a ``Backend``.

Called by ``limen start`` and the offline ``lmctl --data-dir`` commands (``kind="sqlite"``, the
default) and by tests (``kind="memory"``). Callers depend on the ``Backend`` protocol only.

Adding a backend (e.g. PostgreSQL for replicated auth servers) is one opener function in
``_OPENERS``: ``open_backend(data_dir, kind="postgres", dsn=...)`` then works for every caller
that already passes the configured kind and options through, with no other change.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from limen.backend.base import Backend
from limen.backend.memory import MemoryBackend
from limen.backend.sqlite import DB_FILENAME, SQLiteBackend
from limen.errors import BadParameter

__all__ = ["BACKEND_KINDS", "open_backend"]


def _check_options(kind: str, target: Callable[..., object], options: dict[str, Any]) -> None:
    try:
        inspect.signature(target).bind_partial(**options)
    except TypeError as err:
        raise BadParameter(f"bad option for the {kind} backend: {err}") from err


def _open_sqlite(data_dir: Path | None, **options: Any) -> Backend:
    if data_dir is None:
        raise BadParameter("the sqlite backend needs a data directory")
    _check_options("sqlite", SQLiteBackend, options)
    return SQLiteBackend(Path(data_dir) / DB_FILENAME, **options)


def _open_memory(data_dir: Path | None, **options: Any) -> Backend:
    _check_options("memory", MemoryBackend, options)
    return MemoryBackend(**options)


_OPENERS: dict[str, Callable[..., Backend]] = {
    "sqlite": _open_sqlite,
    "memory": _open_memory,
}

BACKEND_KINDS: tuple[str, ...] = tuple(_OPENERS)
"""The kinds ``open_backend`` accepts."""


def open_backend(data_dir: Path | None, *, kind: str = "sqlite", **options: Any) -> Backend:
    """Open the backend of ``kind``: ``sqlite`` keeps ``DATA_DIR/backend.sqlite``; ``memory``
    ignores ``data_dir``. ``options`` go to the implementation's constructor (``clock``,
    ``poll_interval``, ``sweep_interval``, history limits, ...). ``BadParameter`` for an
    unknown kind or option."""
    opener = _OPENERS.get(kind)
    if opener is None:
        raise BadParameter(
            f"unknown backend kind {kind!r}; expected one of {', '.join(BACKEND_KINDS)}"
        )
    return opener(data_dir, **options)
