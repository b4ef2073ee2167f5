"""The db agent's relay after the login: the client's messages go through the engine's
inspector (audit, refusals) on their way to the database; the database's bytes go back
untouched. Built on :class:`limen.net.relay.Relay` (asyncio Protocols: no task per read).

::

    proxy (side 0) ──data_received──▶ inspect(data) ──▶ forward ──▶ database (side 1)
                 ◀── reply(refusal) ──┘   └ session.record(query) ─▶ audit buffer
                 ◀────────────────────────────────────────────────── untouched bytes

* The inspector returns the bytes to forward and whether the audit buffer has room; with
  no room the relay stops reading the client until the buffer calls back (back pressure,
  nothing dropped).
* Fail closed: when the session's audit events cannot be written (the buffer's stream
  fails), or the inspector raises :class:`~limen.events.buffer.AuditUnavailable`, both
  connections are aborted at once; a malformed client message ends the session too.

Used by :mod:`limen.agents.db.postgres_engine` and :mod:`limen.agents.db.mysql_engine`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from limen.agents.db.session import DBSession
from limen.errors import BadParameter
from limen.events.buffer import AuditUnavailable
from limen.net.relay import Relay
from limen.net.streams import hand_over

__all__ = ["AuditedRelay", "Inspector", "relay_session"]

log = logging.getLogger(__name__)

Inspector = Callable[[bytes, "AuditedRelay"], tuple[bytes, bool]]
"""``inspect(data, relay) -> (bytes to forward, audit buffer has room)``; may answer the
client itself with ``relay.reply(0, ...)``; raises BadParameter for a malformed message."""

CLIENT, DATABASE = 0, 1


class AuditedRelay(Relay):
    def __init__(self, session: DBSession, inspect: Inspector) -> None:
        super().__init__(name=f"db session {session.request.session_id}")
        self.session = session
        self._inspect = inspect
        session.emitter.on_failure = self._audit_failed

    def received(self, side: int, data: bytes) -> None:
        if side == DATABASE:
            self.session.from_db.bytes += len(data)
            super().received(side, data)
            return
        if self._closing:
            return
        try:
            forward, room = self._inspect(data, self)
        except AuditUnavailable as err:
            self._audit_failed(err)
            return
        except BadParameter as err:
            log.warning("db session %s: malformed client message: %s",
                        self.session.request.session_id, err)
            self.abort(f"malformed client message: {err}")
            return
        if forward:
            self.session.to_db.bytes += len(forward)
            super().received(side, forward)
        if not room:
            self.hold(CLIENT)
            self.session.emitter.when_space(lambda: self.release(CLIENT))

    def _audit_failed(self, err: AuditUnavailable) -> None:
        log.error("db session %s ended: %s", self.session.request.session_id, err)
        self.abort(str(err))


async def relay_session(session: DBSession, inspect: Inspector,
                        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        database: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Relay the logged-in session until both connections are gone."""
    relay = AuditedRelay(session, inspect)
    hand_over(*client, relay, CLIENT)
    hand_over(*database, relay, DATABASE)
    await relay.wait_closed()
