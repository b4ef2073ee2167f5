"""The db agent's own MySQL/MariaDB connection as a Resource's ``admin_user``: log in with the
admin's client certificate (Limen's DB CA, no password) and run text queries.

Only what provisioning needs: ``COM_QUERY`` one statement at a time, text result sets (the
classic EOF-terminated form: ``CLIENT_DEPRECATE_EOF`` is not asked for), an ERR raised as
:class:`~limen.agents.db.provisioning_errors.AdminQueryFailed`. The statements are built by
:mod:`limen.agents.db.provisioning_mysql` with every name quoted. Called by that module.
"""

from __future__ import annotations

import asyncio
import ssl
from types import TracebackType

from limen.agents.db.mysql_engine import MySQLUpstream, login_upstream
from limen.agents.db.provisioning_errors import AdminQueryFailed
from limen.agents.db.upstream_tls import UpstreamTarget
from limen.dbproto import mysql as my
from limen.errors import BadParameter
from limen.net.streams import close_writer

__all__ = ["MySQLAdmin", "Row"]

_TIMEOUT = 15.0
_CHARSET_UTF8MB4 = 45
_MAX_PACKET = 1 << 24
_CAPABILITIES = (my.CLIENT_LONG_PASSWORD | my.CLIENT_LONG_FLAG | my.CLIENT_PROTOCOL_41
                 | my.CLIENT_TRANSACTIONS | my.CLIENT_SECURE_CONNECTION
                 | my.CLIENT_PLUGIN_AUTH)

Row = tuple[str | None, ...]


class MySQLAdmin:
    """One logged-in admin connection (``async with``: closed with COM_QUIT)."""

    def __init__(self, upstream: MySQLUpstream) -> None:
        self._up = upstream

    @classmethod
    async def connect(cls, target: UpstreamTarget, context: ssl.SSLContext, user: str,
                      database: str) -> MySQLAdmin:
        """Log in as ``user`` (to ``database`` when not empty); raises BadParameter, OSError,
        ssl.SSLError or TimeoutError with the reason."""
        upstream, _ = await login_upstream(target, context, user, database, _CAPABILITIES,
                                           _CHARSET_UTF8MB4, _MAX_PACKET, attributes=False)
        return cls(upstream)

    async def __aenter__(self) -> MySQLAdmin:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, err: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            self._up.writer.write(my.encode_packet(0, bytes([my.COM_QUIT])))
        finally:
            await close_writer(self._up.writer)

    async def _packet(self) -> my.Packet:
        async with asyncio.timeout(_TIMEOUT):
            return await self._up.packet()

    async def query(self, sql: str) -> list[Row]:
        """Run one statement; the rows of its result set (none for a statement without)."""
        self._up.writer.write(my.encode_packet(0, bytes([my.COM_QUERY]) + sql.encode("utf-8")))
        await self._up.writer.drain()
        first = await self._packet()
        if my.is_err(first.payload):
            err = my.decode_err(first.payload)
            raise AdminQueryFailed(f"{err.message} (in: {_statement(sql)})", err.sql_state)
        if my.is_ok(first.payload):
            return []
        columns, _ = my.read_lenenc_int(first.payload, 0)
        if not columns:
            raise BadParameter("malformed result set from the database")
        for _ in range(columns):
            await self._packet()  # column definitions: only the values are used
        if not my.is_eof((await self._packet()).payload):
            raise BadParameter("the database sent no EOF after the column definitions")
        rows: list[Row] = []
        while True:
            packet = await self._packet()
            if my.is_eof(packet.payload):
                return rows
            if my.is_err(packet.payload):
                err = my.decode_err(packet.payload)
                raise AdminQueryFailed(f"{err.message} (in: {_statement(sql)})", err.sql_state)
            rows.append(_text_row(packet.payload, columns))


def _statement(sql: str) -> str:
    """The start of a statement, for an error message (names only: no secrets are sent)."""
    return sql if len(sql) <= 80 else sql[:77] + "..."


def _text_row(payload: bytes, columns: int) -> Row:
    out: list[str | None] = []
    pos = 0
    for _ in range(columns):
        size, pos = my.read_lenenc_int(payload, pos)
        if size is None:
            out.append(None)
            continue
        if pos + size > len(payload):
            raise BadParameter("malformed row from the database: a value is cut short")
        out.append(payload[pos:pos + size].decode("utf-8", "replace"))
        pos += size
    return tuple(out)
