"""Where the PostgreSQL backend's connection string comes from, and what may be said about it.

The DSN (a libpq connection string or ``postgresql://`` URI, which may hold a password) is
read from ``backend.dsn_file`` or, when no file is configured, from ``LIMEN_BACKEND_DSN``; it
is never logged, never put in an error message and never written anywhere. ``describe`` gives
the harmless part (database, host) for messages.

Called by ``limen.cli.compose`` (``backend_options``: the ``open_backend`` arguments of the
configured backend), ``limen.cli.lmctl_backend`` (``read_dsn``) and
``limen.backend.postgres`` (``conninfo_with_defaults``, ``describe``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from limen.config import BackendSettings
from limen.errors import BadParameter

__all__ = ["DSN_ENV", "backend_options", "conninfo_with_defaults", "describe", "read_dsn"]

DSN_ENV = "LIMEN_BACKEND_DSN"
"""The environment variable holding the DSN when no ``dsn_file`` is configured."""

_MAX_DSN_BYTES = 64 * 1024


def read_dsn(dsn_file: str | Path | None, environ: Mapping[str, str] | None = None) -> str:
    """The DSN in ``dsn_file`` (surrounding white space dropped), else ``LIMEN_BACKEND_DSN``;
    ``BadParameter`` when neither gives one."""
    if dsn_file:
        path = Path(dsn_file)
        try:
            with path.open("rb") as handle:
                data = handle.read(_MAX_DSN_BYTES + 1)
        except OSError as err:
            raise BadParameter(
                f"cannot read the PostgreSQL DSN file {path}: {err.strerror or err}"
            ) from err
        if len(data) > _MAX_DSN_BYTES:
            raise BadParameter(f"the PostgreSQL DSN file {path} is larger than 64 KiB")
        try:
            dsn = data.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise BadParameter(f"the PostgreSQL DSN file {path} is not UTF-8 text") from err
        if not dsn:
            raise BadParameter(f"the PostgreSQL DSN file {path} is empty")
        return dsn
    dsn = (os.environ if environ is None else environ).get(DSN_ENV, "").strip()
    if not dsn:
        raise BadParameter(
            f"the postgres backend needs backend.dsn_file in the config or {DSN_ENV} in the "
            "environment"
        )
    return dsn


def backend_options(
    settings: BackendSettings, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``open_backend`` keyword arguments (``kind`` and, for postgres, ``dsn``) of the
    configured backend."""
    if settings.type == "postgres":
        return {"kind": "postgres", "dsn": read_dsn(settings.dsn_file, environ)}
    if settings.type != "sqlite":
        raise BadParameter(f"unknown backend type {settings.type!r}; expected sqlite or postgres")
    return {"kind": "sqlite"}


def conninfo_with_defaults(dsn: str, **defaults: str | int | None) -> str:
    """``dsn`` as a libpq connection string with ``defaults`` added where it sets nothing
    (``connect_timeout``, ``application_name``...). ``BadParameter`` for a malformed DSN, without
    quoting it: libpq's parse errors can echo a fragment of a password."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise BadParameter("the PostgreSQL DSN is empty")
    import psycopg  # loaded only where a PostgreSQL DSN is read (not on a SQLite cluster)
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        given = conninfo_to_dict(dsn)
        extra = {k: v for k, v in defaults.items() if k not in given and v is not None}
        return make_conninfo(dsn, **extra)
    except psycopg.Error:
        raise BadParameter(
            "the PostgreSQL DSN is not a valid libpq connection string or postgresql:// URI"
        ) from None


def describe(conninfo: str) -> str:
    """``database 'NAME' on HOST`` for messages: never the user's password or other options."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "the PostgreSQL backend"
    dbname = params.get("dbname") or params.get("user") or "?"
    host = params.get("host") or params.get("hostaddr") or "the default socket"
    return f"PostgreSQL database {str(dbname)!r} on {host}"
