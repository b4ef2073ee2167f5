"""The db agent's own PostgreSQL connection as a Resource's ``admin_user``: log in with the
admin's client certificate (Limen's DB CA, no password) and run simple queries, rows as text.

Only what provisioning needs: the simple query protocol, text results, the first error of a
query raised as :class:`AdminQueryFailed` once the server is ready again. The statements
are built by :mod:`limen.agents.db.provisioning_postgres` with every name quoted. Called by
that module.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from types import TracebackType

from limen.agents.db.postgres_engine import open_upstream
from limen.agents.db.provisioning_errors import AdminQueryFailed
from limen.agents.db.upstream_tls import UpstreamTarget
from limen.dbproto import postgres as pg
from limen.errors import BadParameter
from limen.net.streams import close_writer

__all__ = ["PostgresAdmin", "Row"]

_TIMEOUT = 15.0
_KEEP = frozenset(bytes([b]) for b in range(256))
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")

Row = tuple[str | None, ...]


class PostgresAdmin:
    """One logged-in admin connection (``async with``: closed with a Terminate)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._splitter = pg.MessageSplitter(keep=_KEEP, max_message=1 << 24)
        self._frames: list[pg.Frame] = []

    @classmethod
    async def connect(cls, target: UpstreamTarget, context: ssl.SSLContext, user: str,
                      database: str) -> PostgresAdmin:
        """Log in as ``user`` to ``database``; raises AdminQueryFailed (refused), BadParameter,
        OSError, ssl.SSLError or TimeoutError."""
        reader, writer = await open_upstream(target, context)
        admin = cls(reader, writer)
        try:
            writer.write(pg.encode_startup({"user": user, "database": database,
                                            "application_name": "limen-db-agent"}))
            await admin._until_ready(login=True)
        except BaseException:
            await close_writer(writer)
            raise
        return admin

    async def __aenter__(self) -> PostgresAdmin:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, err: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            self._writer.write(pg.encode_terminate())
        finally:
            await close_writer(self._writer)

    async def query(self, sql: str) -> list[Row]:
        """Run ``sql`` (one or more statements); the rows of its results, as text."""
        self._writer.write(pg.encode_query(sql))
        await self._writer.drain()
        return await self._until_ready(login=False)

    async def _frame(self) -> pg.Frame:
        while not self._frames:
            async with asyncio.timeout(_TIMEOUT):
                data = await self._reader.read(65536)
            if not data:
                raise BadParameter("the database closed the admin connection")
            self._frames.extend(self._splitter.feed(data))
        return self._frames.pop(0)

    async def _until_ready(self, *, login: bool) -> list[Row]:
        rows: list[Row] = []
        error: AdminQueryFailed | None = None
        while True:
            frame = await self._frame()
            payload = frame.payload or b""
            if frame.type == b"R" and login:
                code, _ = pg.decode_authentication(payload)
                if code != pg.AUTH_OK:
                    raise BadParameter("the database asked the admin user for a password: it "
                                       "must authenticate Limen's client certificate "
                                       "(pg_hba.conf 'cert')")
            elif frame.type == b"E":
                fields = pg.decode_error_fields(payload)
                error = error or AdminQueryFailed(fields.get("M", "error"), fields.get("C", ""))
                if login:
                    raise error
            elif frame.type == b"D":
                rows.append(_data_row(payload))
            elif frame.type == b"Z":
                if error is not None:
                    raise error
                return rows


def _data_row(payload: bytes) -> Row:
    """A DataRow's columns as text (None for NULL)."""
    try:
        (count,) = _I16.unpack_from(payload, 0)
        offset = 2
        out: list[str | None] = []
        for _ in range(count):
            (size,) = _I32.unpack_from(payload, offset)
            offset += 4
            if size < 0:
                out.append(None)
                continue
            out.append(payload[offset:offset + size].decode("utf-8"))
            offset += size
    except (struct.error, UnicodeDecodeError) as err:
        raise BadParameter(f"malformed DataRow from the database: {err}") from None
    return tuple(out)
