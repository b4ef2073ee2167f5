"""``open_backend``: the one place that turns a backend kind into a ``Backend``.

Called by ``limen start`` (the configured kind: ``sqlite``, the default, or ``postgres`` with
``dsn=``, see ``limen.backend.postgres_dsn.backend_options``), the offline ``lmctl --data-dir``
commands (``sqlite``), ``lmctl backend migrate`` and tests (also ``kind="memory"``). Callers
depend on the ``Backend`` protocol only; adding a backend is one opener function in
``_OPENERS``.
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


def _open_postgres(data_dir: Path | None, *, dsn: str = "", **options: Any) -> Backend:
    if not dsn:
        raise BadParameter("the postgres backend needs a dsn (a libpq connection string)")
    from limen.backend.postgres import PostgresBackend  # psycopg: loaded for postgres only

    _check_options("postgres", PostgresBackend, options)
    return PostgresBackend(dsn, **options)


_OPENERS: dict[str, Callable[..., Backend]] = {
    "sqlite": _open_sqlite,
    "postgres": _open_postgres,
    "memory": _open_memory,
}

BACKEND_KINDS: tuple[str, ...] = tuple(_OPENERS)
"""The kinds ``open_backend`` accepts."""


def open_backend(data_dir: Path | None, *, kind: str = "sqlite", **options: Any) -> Backend:
    """Open the backend of ``kind``: ``sqlite`` keeps ``DATA_DIR/backend.sqlite``; ``postgres``
    (``dsn=`` a libpq connection string) and ``memory`` ignore ``data_dir``. ``options`` go to
    the implementation's constructor (``clock``, ``poll_interval``, ``sweep_interval``, history
    limits, ...). ``BadParameter`` for an unknown kind or option."""
    opener = _OPENERS.get(kind)
    if opener is None:
        raise BadParameter(
            f"unknown backend kind {kind!r}; expected one of {', '.join(BACKEND_KINDS)}"
        )
    return opener(data_dir, **options)
