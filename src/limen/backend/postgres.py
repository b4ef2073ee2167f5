"""``PostgresBackend``: the ``Backend`` on a PostgreSQL database shared by several auth replicas.

Opened by ``limen.backend.factory.open_backend(data_dir, kind="postgres", dsn=...)`` for
``limen start`` with ``backend: {type: postgres}`` and for ``lmctl backend migrate``::

    replica A                                   replica B
    ops ──▶ pool (≤ pool_size connections) ──▶ ┌───────────────────────────────┐ ◀── pool ◀── ops
    watchers: poll events > cursor             │ limen_backend_meta / items /  │
      woken by NOTIFY (listener connection),   │ events; every write locks the │
      by a local write, or every poll_interval │ revision row, NOTIFY at commit │
                                               └───────────────────────────────┘

The statements and the schema are in ``limen.backend.postgres_sql``; the connections in
``limen.backend.postgres_pool``. Writers of every replica take turns on the revision row, so
the contract's guarantees (one revision per ``atomic``, compare-and-swap, expiry) hold across
processes exactly as they do in one. Watchers read the events table from their cursor: one that
loses the database waits and resumes from its cursor when it is back, missing nothing.

While the database is unreachable every operation raises ``ConnectionProblem`` (never a
psycopg error) and works again once it is back: pooled connections left stale by a restart are
dropped, and work that failed on one before its ``COMMIT`` was sent is retried once on a fresh
connection. Periodic tasks (on every replica; the work is idempotent) sweep expired items and
compact the event history like the SQLite backend's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import psycopg

from limen.aio.changed import Changed, wait_event
from limen.aio.tasks import cancel_and_wait
from limen.backend import postgres_sql as sql
from limen.backend._common import (
    DEFAULT_HISTORY_MIN_AGE,
    DEFAULT_HISTORY_MIN_EVENTS,
    DEFAULT_SWEEP_INTERVAL,
    Check,
    WriteVerbs,
    closed_error,
    validate_after,
    validate_key,
)
from limen.backend.base import Delete, Event, Item, Put
from limen.backend.postgres_dsn import conninfo_with_defaults, describe
from limen.backend.postgres_pool import ConnectionPool, Lease, translate
from limen.errors import BadParameter, ConnectionProblem, LimenError

__all__ = ["PostgresBackend"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_LISTEN_RETRY_MAX = 2.0


def _pg_text(text: str, what: str) -> str:
    """``text`` if PostgreSQL can store it in a text column (UTF-8, no NUL)."""
    if "\x00" in text:
        raise BadParameter(f"a {what} for the PostgreSQL backend cannot contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadParameter(f"a {what} must be encodable as UTF-8: {err.reason}") from None
    return text


def _key(key: str) -> str:
    return _pg_text(validate_key(key), "key")


def _prefix(prefix: str) -> str:
    if not isinstance(prefix, str):
        raise BadParameter(f"a key prefix must be a string, not {type(prefix).__name__}")
    return _pg_text(prefix, "key prefix")



class PostgresBackend(WriteVerbs):
    """``Backend`` over the PostgreSQL database ``dsn`` names (a libpq connection string or
    ``postgresql://`` URI; never logged).

    The constructor connects synchronously once (at most ``connect_timeout`` seconds), creates
    the schema if missing and checks its version, so a bad DSN or an unreachable database fails
    at once: ``BadParameter`` for a malformed DSN or a foreign schema, ``ConnectionProblem``
    otherwise. Use an instance from one event loop.
    """

    def __init__(
        self,
        dsn: str,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 1.0,
        sweep_interval: float | None = DEFAULT_SWEEP_INTERVAL,
        compact_interval: float | None = 60.0,
        history_min_events: int = DEFAULT_HISTORY_MIN_EVENTS,
        history_min_age: float = DEFAULT_HISTORY_MIN_AGE,
        pool_size: int = 4,
        poll_window: int = 1000,
        connect_timeout: int = 5,
        operation_timeout: float = 30.0,
    ) -> None:
        conninfo = conninfo_with_defaults(
            dsn, connect_timeout=connect_timeout, application_name="limen-backend",
            keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
        )
        self.description = describe(conninfo)
        self._clock = clock
        self._poll_interval = poll_interval
        self._intervals = {"sweep": sweep_interval, "compact": compact_interval}
        self._history_min_events = history_min_events
        self._history_min_age = history_min_age
        self._poll_window = poll_window
        self._operation_timeout = operation_timeout
        try:
            self._known_revision = sql.open_schema(conninfo)
        except psycopg.Error as err:
            raise translate(err, self.description) from err
        self._pool = ConnectionPool(conninfo, size=pool_size, where=self.description)
        self._changed = Changed()
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    def __repr__(self) -> str:
        return f"<PostgresBackend {self.description}>"

    # -- reads ---------------------------------------------------------------------------

    async def get(self, key: str) -> Item | None:
        return await self._use(functools.partial(sql.get, key=_key(key), now=self._clock()))

    async def list(self, prefix: str) -> list[Item]:
        return await self._use(
            functools.partial(sql.list_items, prefix=_prefix(prefix), now=self._clock())
        )

    async def current_revision(self) -> int:
        revision = await self._use(sql.revision)
        self._observe(revision)
        return revision

    # -- writes (the verbs: limen.backend._common.WriteVerbs) -----------------------------

    def _check_key(self, key: str) -> str:
        return _key(key)

    async def sweep(self) -> int:
        """Delete every expired item now (one revision of DELETE events); returns how many."""
        swept, revision = await self._use(functools.partial(sql.sweep, now=self._clock()))
        if swept:
            self._observe(revision)
            self._changed.notify()
        return swept

    async def compact(self) -> int:
        """Apply the history retention rule now; returns the compacted revision (watching
        ``after`` a revision below it raises ``BadParameter``)."""
        return await self._use(
            functools.partial(
                sql.compact, now=self._clock(), min_events=self._history_min_events,
                min_age=self._history_min_age,
            )
        )

    # -- watch ---------------------------------------------------------------------------

    def watch(self, prefix: str, *, after: int | None = None) -> AsyncIterator[Event]:
        """Events under ``prefix`` after ``after`` (None: after the latest revision this
        process has seen, its own writes and other replicas' notifications). Ends when the
        backend closes; ``BadParameter`` if ``after`` has been compacted (re-list, then watch
        from the list's revision). While the database is unreachable the watcher waits and
        then resumes from where it was."""
        if self._closed:
            raise closed_error()
        start = validate_after(after)
        return self._follow(_prefix(prefix), self._known_revision if start is None else start)

    async def _follow(self, prefix: str, cursor: int) -> AsyncIterator[Event]:
        failing = False
        while not self._closed:
            changed = self._changed.event
            try:
                events, cursor, latest = await self._use(
                    functools.partial(
                        sql.poll, prefix=prefix, cursor=cursor, max_revisions=self._poll_window
                    )
                )
            except ConnectionProblem as err:
                if self.closed:
                    return
                if not failing:
                    _log.warning("backend watch of %r waits for the database: %s", prefix, err)
                failing = True
                await wait_event(changed, self._poll_interval)
                continue
            if failing:
                _log.info("backend watch of %r resumed after revision %d", prefix, cursor)
                failing = False
            self._observe(latest)
            for event in events:
                yield event
            if cursor >= latest:
                await wait_event(changed, self._poll_interval)

    # -- tables beside the backend's -----------------------------------------------------

    async def run(self, work: Callable[[Lease], Awaitable[_T]]) -> _T:
        """Run ``work`` on one of the backend's pooled connections, as its own statements run:
        psycopg errors become ``ConnectionProblem``/``BadParameter``, a stale connection is
        replaced and ``work`` retried once if it failed before its ``COMMIT`` (so ``work``
        must be one transaction, ``lease.transaction()``, or only read). For the tables other
        parts keep in the same database (``limen.auth.recordings_postgres``)."""
        return await self._use(work)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Stop the periodic tasks and the listener, end every watcher, close the connections.
        Later calls raise ``ConnectionProblem``; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self._changed.notify()
        await cancel_and_wait(*self._tasks)
        await self._pool.close()

    # -- internals -----------------------------------------------------------------------

    def _enter(self) -> None:
        if self._closed:
            raise closed_error()
        if not self._started:
            self._started = True
            self._start_tasks(asyncio.get_running_loop())

    async def _use(self, work: Callable[[Lease], Awaitable[_T]]) -> _T:
        """Run ``work`` on a pooled connection, translating psycopg errors; retried once on a
        fresh connection when a reused one failed before any ``COMMIT`` was sent."""
        self._enter()
        for attempt in (1, 2):
            async with self._pool.lease() as lease:
                if self._closed:
                    raise closed_error()
                try:
                    async with asyncio.timeout(self._operation_timeout):
                        return await work(lease)
                except psycopg.OperationalError as err:
                    lease.discard = True
                    if attempt == 1 and lease.reused and not lease.committing:
                        await self._pool.discard_idle()
                        continue
                    raise translate(err, self.description) from err
                except psycopg.Error as err:
                    raise translate(err, self.description) from err
                except TimeoutError:
                    lease.discard = True
                    raise ConnectionProblem(
                        f"{self.description} did not answer within "
                        f"{self._operation_timeout:g} seconds"
                    ) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _write(self, checks: Sequence[Check], ops: Sequence[Put | Delete]) -> int:
        revision = await self._use(
            functools.partial(sql.write, checks=checks, ops=ops, now=self._clock())
        )
        self._observe(revision)
        self._changed.notify()
        return revision

    def _observe(self, revision: int) -> None:
        self._known_revision = max(self._known_revision, revision)

    def _start_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        self._tasks.append(loop.create_task(self._listen(), name="limen-postgres-listen"))
        jobs: dict[str, Callable[[], Awaitable[object]]] = {
            "sweep": self.sweep, "compact": self.compact,
        }
        for name, interval in self._intervals.items():
            if interval is not None:
                self._tasks.append(
                    loop.create_task(
                        self._every(interval, name, jobs[name]), name=f"limen-postgres-{name}"
                    )
                )

    async def _every(
        self, interval: float, name: str, job: Callable[[], Awaitable[object]]
    ) -> None:
        failing = False
        while not self._closed:
            await asyncio.sleep(interval)
            try:
                await job()
            except LimenError as err:
                if self.closed:
                    return
                # once per outage: a sweep every second must not flood the log meanwhile
                level = logging.DEBUG if failing else logging.WARNING
                _log.log(level, "backend %s of %s failed: %s", name, self.description, err)
                failing = True
            else:
                failing = False

    async def _listen(self) -> None:
        """Keep one connection LISTENing on the revision channel and wake the watchers on every
        notification; after a (re)connection wake them too, so that they re-read what they may
        have missed while it was down."""
        delay = 0.1
        while not self._closed:
            try:
                conn = await self._pool.connect()
                try:
                    await conn.execute("LISTEN " + sql.CHANNEL)
                    delay = 0.1
                    self._changed.notify()
                    async for note in conn.notifies():
                        if note.payload.isdigit():
                            self._observe(int(note.payload))
                        self._changed.notify()
                finally:
                    await conn.close()
            except (ConnectionProblem, psycopg.Error) as err:
                if self.closed:
                    return
                _log.debug("backend listener of %s reconnects: %s", self.description, err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LISTEN_RETRY_MAX)

