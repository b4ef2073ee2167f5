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
  fails), or the inspector raises :class:`~limen.events.buffer.AuditUnavailable`, nothing
  more of the client is read. With a ``farewell`` (PostgreSQL, between two client messages)
  the database is asked to end the session (Terminate), its last answers still reach the
  client, then the client gets the farewell's error and both connections close (aborted
  after ``FAREWELL_GRACE`` seconds if the database does not close); otherwise both
  connections are aborted at once. A malformed client message ends the session too.

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

__all__ = ["FAREWELL_GRACE", "AuditedRelay", "Farewell", "Inspector", "relay_session"]

log = logging.getLogger(__name__)

Inspector = Callable[[bytes, "AuditedRelay"], tuple[bytes, bool]]
"""``inspect(data, relay) -> (bytes to forward, audit buffer has room)``; may answer the
client itself with ``relay.reply(0, ...)``; raises BadParameter for a malformed message."""

Farewell = Callable[[str], "tuple[bytes, bytes] | None"]
"""``farewell(reason) -> (to the database, to the client last)`` to end a session in good order
(its audit failed, or a lock ended it), or None when it cannot now (then the connections are
aborted)."""

CLIENT, DATABASE = 0, 1
FAREWELL_GRACE = 10.0
LOCK_GRACE = 1.0


class AuditedRelay(Relay):
    def __init__(self, session: DBSession, inspect: Inspector,
                 farewell: Farewell | None = None) -> None:
        super().__init__(name=f"db session {session.request.session_id}", coalesce=False)
        self.session = session
        self._inspect = inspect
        self._farewell = farewell
        self._failed = False
        self._goodbye = b""
        session.emitter.on_failure = self._audit_failed
        session.terminate = self.end_session

    def received(self, side: int, data: bytes) -> None:
        if side == DATABASE:
            self.session.from_db.bytes += len(data)
            super().received(side, data)
            return
        if self._closing or self._failed:
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

    def eof(self, side: int) -> None:
        if side == DATABASE:
            self._say_goodbye()
        super().eof(side)

    def lost(self, side: int, exc: BaseException | None = None) -> None:
        if side == DATABASE:
            self._say_goodbye()
        super().lost(side, exc)

    def _audit_failed(self, err: AuditUnavailable) -> None:
        if self._failed:
            return
        log.error("db session %s ended: %s", self.session.request.session_id, err)
        self._end(str(err))

    def end_session(self, reason: str) -> None:
        """End the session for ``reason`` (a lock) now: the farewell when the protocol has one
        (the client reads the reason), then both connections are closed, a query running or
        not."""
        if self._failed or self._closing:
            return
        self._failed = True
        log.info("db session %s ended: %s", self.session.request.session_id, reason)
        plan = self._farewell(reason) if self._farewell is not None else None
        if plan is not None:
            to_database, to_client = plan
            self.reply(DATABASE, to_database)
            self.reply(CLIENT, to_client)
        self.close(reason)  # output flushed; aborted if a side does not close at once
        asyncio.get_running_loop().call_later(LOCK_GRACE, self.abort, reason)

    def _end(self, reason: str) -> None:
        self._failed = True
        plan = self._farewell(reason) if self._farewell is not None else None
        if plan is None or self._closing:
            self.abort(reason)
            return
        to_database, self._goodbye = plan
        self.hold(CLIENT)
        self.reply(DATABASE, to_database)
        asyncio.get_running_loop().call_later(FAREWELL_GRACE, self.abort, reason)

    def _say_goodbye(self) -> None:
        goodbye, self._goodbye = self._goodbye, b""
        if goodbye:
            self.reply(CLIENT, goodbye)


async def relay_session(session: DBSession, inspect: Inspector,
                        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        database: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        farewell: Farewell | None = None) -> None:
    """Relay the logged-in session until both connections are gone."""
    relay = AuditedRelay(session, inspect, farewell)
    hand_over(*client, relay, CLIENT)
    hand_over(*database, relay, DATABASE)
    await relay.wait_closed()
