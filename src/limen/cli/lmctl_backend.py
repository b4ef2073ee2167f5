"""``lmctl backend migrate --from sqlite:DIR --to postgres:DSN_FILE``: move a cluster's state
store to another backend, for a single-node cluster that grows into several auth replicas.

Every live key is copied with its value and expiry, in one transaction of the target (so
every key lands at the target's revision 1; watchers and clients re-list after the move). The
target must be empty (never written); a SQLite data directory is locked for the copy like
``limen start`` locks it, so stop the cluster first. ``postgres:`` with no file reads the DSN
from ``LIMEN_BACKEND_DSN``; the DSN itself is never printed. Either side may be either kind
(``--from postgres:... --to sqlite:DIR`` goes back). Audit logs and recordings are files of the
data directory, not backend keys: they are not copied.

The CAs' private records go into PostgreSQL encrypted only: ``--ca-key-file`` (the auth
replicas' ``backend.ca_key_file``) encrypts the plain ones of a SQLite store on the way
(``limen.auth.ca_sealing``), and the copy is refused without it. Records already encrypted are
copied as they are, after checking that the key opens them.

Registered on the ``lmctl`` group by ``limen.cli.lmctl``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import click

from limen.auth.authorities import seal_ca_items
from limen.auth.ca_key_file import sealer_from_file
from limen.auth.ca_sealing import CASealer
from limen.backend.base import Backend, Condition, Put
from limen.backend.factory import open_backend
from limen.backend.postgres_dsn import DSN_ENV, read_dsn
from limen.backend.sqlite import DB_FILENAME
from limen.cli.common import handle_errors
from limen.cli.datadir_lock import hold_data_dir
from limen.errors import BadParameter

__all__ = ["Copied", "Endpoint", "backend", "copy_state", "open_endpoint", "parse_endpoint"]

_KINDS = ("sqlite", "postgres")


@dataclass(frozen=True)
class Endpoint:
    """One side of a migration: ``sqlite`` and a data directory, or ``postgres`` and a DSN file
    (empty: ``LIMEN_BACKEND_DSN``)."""

    kind: str
    where: str

    def __str__(self) -> str:
        if self.kind == "postgres" and not self.where:
            return f"postgres:(${DSN_ENV})"
        return f"{self.kind}:{self.where}"


@dataclass(frozen=True)
class Copied:
    keys: int
    expiring: int
    value_bytes: int
    revision: int
    sealed: int = 0
    """CA private records encrypted on the way."""


def parse_endpoint(text: str) -> Endpoint:
    """``sqlite:DIR`` or ``postgres:DSN_FILE`` (``postgres:`` alone: the DSN from the env)."""
    kind, sep, where = text.partition(":")
    if not sep or kind not in _KINDS:
        raise BadParameter(
            f"{text!r} names no backend: use sqlite:DATA_DIR or postgres:DSN_FILE"
        )
    if kind == "sqlite" and not where:
        raise BadParameter("sqlite: needs the data directory, for example sqlite:/var/lib/limen")
    return Endpoint(kind, where)


@contextlib.asynccontextmanager
async def open_endpoint(endpoint: Endpoint, *, source: bool) -> AsyncIterator[Backend]:
    """The backend ``endpoint`` names, with no periodic tasks; a SQLite data directory is held
    locked meanwhile. A SQLite source must already hold a store."""
    with contextlib.ExitStack() as stack:
        if endpoint.kind == "sqlite":
            data_dir = Path(endpoint.where)
            if source and not (data_dir / DB_FILENAME).is_file():
                raise BadParameter(f"{data_dir} holds no backend ({DB_FILENAME} is missing)")
            stack.enter_context(hold_data_dir(data_dir))
            opened = open_backend(data_dir, sweep_interval=None, compact_interval=None)
        else:
            opened = open_backend(
                None, kind="postgres", dsn=read_dsn(endpoint.where or None),
                sweep_interval=None, compact_interval=None,
            )
        try:
            yield opened
        finally:
            await opened.close()


async def copy_state(source: Backend, target: Backend, *, ca_sealer: CASealer | None = None,
                     require_sealed: bool = False) -> Copied:
    """Copy every live key of ``source`` into the empty ``target`` in one transaction, the
    plain CA records encrypted with ``ca_sealer`` (refused without one if
    ``require_sealed``); ``BadParameter`` (and nothing written) when ``target`` has ever been
    written."""
    revision = await target.current_revision()
    present = len(await target.list(""))
    if revision or present:
        raise BadParameter(
            f"the target backend is not empty ({present} keys, revision {revision}); migrate "
            "only into a backend that has never been written"
        )
    items, sealed = seal_ca_items(await source.list(""), ca_sealer, require=require_sealed)
    if items:
        # "absent" conditions: a writer that slipped in since the check makes this fail whole
        revision = await target.atomic(
            [Condition(item.key, 0) for item in items],
            [Put(item.key, item.value, item.expires) for item in items],
        )
    return Copied(
        keys=len(items),
        expiring=sum(1 for item in items if item.expires is not None),
        value_bytes=sum(len(item.value) for item in items),
        revision=revision,
        sealed=sealed,
    )


async def _migrate(source: Endpoint, target: Endpoint, ca_sealer: CASealer | None) -> Copied:
    async with (
        open_endpoint(source, source=True) as reader,
        open_endpoint(target, source=False) as writer,
    ):
        return await copy_state(reader, writer, ca_sealer=ca_sealer,
                                require_sealed=target.kind == "postgres")


@click.group()
def backend() -> None:
    """The cluster's state store (SQLite or PostgreSQL)."""


@backend.command("migrate")
@click.option("--from", "source", required=True, metavar="sqlite:DIR|postgres:DSN_FILE",
              help="The backend to copy from (stop the cluster first).")
@click.option("--to", "target", required=True, metavar="postgres:DSN_FILE|sqlite:DIR",
              help="The empty backend to copy into (postgres: alone reads $LIMEN_BACKEND_DSN).")
@click.option("--ca-key-file", type=click.Path(dir_okay=False),
              help="The auth replicas' backend.ca_key_file: encrypts the CA private keys on "
                   "the way (required into postgres when they are plain text).")
@handle_errors
def migrate(source: str, target: str, ca_key_file: str | None) -> None:
    """Copy every key, with its value and expiry, into an empty backend."""
    origin, destination = parse_endpoint(source), parse_endpoint(target)
    if origin == destination:
        raise BadParameter("--from and --to name the same backend")
    sealer = sealer_from_file(ca_key_file) if ca_key_file else None
    copied = asyncio.run(_migrate(origin, destination, sealer))
    sealed = f" ({copied.sealed} CA private keys encrypted)" if copied.sealed else ""
    click.echo(
        f"copied {copied.keys} keys ({copied.expiring} with an expiry, {copied.value_bytes} "
        f"bytes of values) from {origin} to {destination}; the target is at revision "
        f"{copied.revision}{sealed}"
    )
