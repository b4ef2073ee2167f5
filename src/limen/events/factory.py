"""``open_audit_log``: the one place that decides where auth's audit events go, beside the
backend it runs on.

Called by ``limen start`` (``limen.cli.compose``) with the data directory and the configured
backend's options (``limen.backend.postgres_dsn.backend_options``): a SQLite (or memory)
backend keeps the audit log in day files (:class:`~limen.events.FileLog`,
``DATA_DIR/log/events``); a PostgreSQL backend, whose auth replicas share one database, keeps
it there too (:class:`~limen.events.PostgresLog`), so every replica writes the same chain and
``lmctl audit search`` on any of them sees every replica's events.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from limen.errors import BadParameter
from limen.events.event import AuditEvent
from limen.events.filelog import FileLog, SignerSource
from limen.files import private_dir

if TYPE_CHECKING:
    from limen.events.postgres_log import PostgresLog

__all__ = ["AuditLog", "events_dir", "open_audit_log"]


class AuditLog(Protocol):
    """What ``limen start`` needs of its audit log (``FileLog`` and ``PostgresLog``)."""

    async def emit(self, event: AuditEvent) -> None: ...

    async def emit_many(self, events: Sequence[AuditEvent]) -> None: ...

    def set_signer(self, source: SignerSource, *, start: bool = True) -> None: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


def events_dir(data_dir: Path) -> Path:
    """The day files of a file audit log: ``DATA_DIR/log/events``."""
    return Path(data_dir) / "log" / "events"


def open_audit_log(data_dir: Path, *, kind: str = "sqlite", dsn: str = "",
                   **options: Any) -> FileLog | PostgresLog:
    """The audit log for a backend of ``kind``: ``postgres`` (``dsn``: the backend's
    connection string) writes to that database, ``sqlite`` and ``memory`` to day files in
    ``DATA_DIR/log/events`` (its parents created 0700). ``options`` go to the log
    (``checkpoint_every``, ``checkpoint_interval``)."""
    if kind == "postgres":
        if not dsn:
            raise BadParameter("the postgres audit log needs the backend's dsn")
        from limen.events.postgres_log import PostgresLog  # psycopg: loaded for postgres only

        return PostgresLog(dsn, **options)
    if kind not in ("sqlite", "memory"):
        raise BadParameter(f"unknown backend kind {kind!r}; expected sqlite, postgres or memory")
    private_dir(Path(data_dir) / "log")
    return FileLog(events_dir(data_dir), **options)

