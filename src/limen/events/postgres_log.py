"""``PostgresLog``: the audit log in a PostgreSQL database that every auth replica writes and
reads — the :class:`~limen.events.FileLog` of a cluster whose backend is PostgreSQL.

Opened by :func:`limen.events.open_audit_log` (``limen start`` with ``backend: {type:
postgres}``); read by the auth API's ``GET /v1/events`` (``lmctl audit search``, whichever
replica answers) and by ``lmctl audit verify --postgres``. Tables and statements:
:mod:`limen.events.postgres_log_sql`. The same interface as ``FileLog`` (``emit``,
``emit_many``, ``write``, ``set_signer``, ``close``/``aclose``) plus ``search``::

    replica A: emit() ─┐                          ┌─ replica B: emit()
                       ▼                          ▼
           writer thread: one transaction per batch and day
             lock the day's chain row (SELECT ... FOR UPDATE)  ◀── the replicas take turns
             skip uids already logged · chain each line to the head · INSERT · new head
           COMMIT ──▶ emit() returns

* **One chain, whoever writes.** Each UTC day is one chain, exactly as one day file: the same
  lines, seeded by the day file's name, with the same signed checkpoints
  (:mod:`limen.events.chain`). The next position is taken under the lock of the day's chain
  row inside the inserting transaction, so two replicas never fork it; the commit order is the
  chain order.
* **Durable and exactly once.** ``emit()`` returns after the commit. A delivery repeated —
  the outbox drained again after a crash, an agent re-sending to another replica — is
  written once: lines are unique by event ``uid`` and a transaction first skips the uids
  already there, so work whose commit went unanswered is simply run again.
* **Checkpoints** (signed by auth's JWT CA key through ``set_signer``): in the transaction
  that takes a chain to ``checkpoint_every`` unsigned lines (``periodic``) or appends to an
  earlier day (``rotate``: a late event's day is sealed again at once); every
  ``checkpoint_interval`` seconds, on a chain whose lines have waited that long
  (``periodic``) and on every earlier day not sealed yet (``rotate``: whichever replica comes
  first seals the day that ended, also for a replica that died); at ``close()`` on the days
  this writer wrote (``close``). Without a signer nothing is signed (``lmctl audit verify``
  then reports the unsigned lines).
* **Append-only** is not a permission the database can enforce on its owner (see
  :mod:`limen.events.postgres_log_sql`): the chain and the checkpoints detect edits.
* While the database is unreachable ``emit()`` raises ``ConnectionProblem`` (the auth server
  keeps a change's events in its store outbox meanwhile); the writer reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any

from psycopg import errors as pg_errors

from limen.errors import BadParameter, LimenError
from limen.events import postgres_log_sql as sql
from limen.events.chain import (
    CHAIN_KEY,
    SEALING_REASONS,
    CheckpointSigner,
    chain_line,
    checkpoint_body,
)
from limen.events.event import AuditEvent, format_time
from limen.events.filelog import SignerSource, day_file_name
from limen.events.postgres_conn import AuditConnection, Connection
from limen.events.search import event_type_filter

__all__ = ["PostgresLog"]

log = logging.getLogger(__name__)

_SIGNER_RETRY = 1.0
_WAKE = "wake"

_Pending = tuple[AuditEvent, "Future[None]"]


def _pg_text(value: str) -> str:
    """An index column's text as PostgreSQL stores it (no NUL); the line keeps the original."""
    return value.replace("\x00", "\ufffd")


class PostgresLog:
    """Append audit events to the PostgreSQL database ``dsn`` names (never logged).
    An :class:`~limen.events.Emitter`.

    ``await log.emit(event)`` from async code, ``log.write(event)`` from other threads; both
    return once the event is committed and raise ``ConnectionProblem`` if it could not be.
    ``close()`` (or ``await aclose()``) seals this writer's days and stops the writer.
    Nothing connects before the first write, search or signer.
    """

    def __init__(
        self, dsn: str, *, signer: SignerSource | None = None, checkpoint_every: int = 500,
        checkpoint_interval: float = 30.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if checkpoint_every < 1 or checkpoint_interval <= 0:
            raise ValueError("checkpoints need a positive line count and interval")
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self._clock = clock
        self._writer_conn = AuditConnection(dsn, application_name="limen-audit")
        self._reader_conn = AuditConnection(dsn, application_name="limen-audit-search")
        self.description = self._writer_conn.description
        self._schema_ready = False
        self._queue: queue.SimpleQueue[_Pending | str | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._signer: SignerSource | None = None
        # Owned by the writer thread only:
        self._sealed = False
        """The earlier days have been looked at since a signer became available."""
        self._next_tick = 0.0
        self._touched: set[date] = set()
        self._failing = False
        if signer is not None:
            self.set_signer(signer)

    def __repr__(self) -> str:
        return f"<PostgresLog {self.description}>"

    # -- public API -----------------------------------------------------------------------

    async def emit(self, event: AuditEvent) -> None:
        await asyncio.wrap_future(self._submit(event))

    async def emit_many(self, events: Sequence[AuditEvent]) -> None:
        """Emit ``events`` in order; returns once all are committed (in batches). Raises the
        first failure after every event was attempted."""
        pending = [self._submit(event) for event in events]
        if pending:
            await asyncio.to_thread(wait_futures, pending)
        for done in pending:
            done.result()

    def write(self, event: AuditEvent) -> None:
        """``emit`` for threads other than the event loop's."""
        self._submit(event).result()

    def set_signer(self, source: SignerSource, *, start: bool = True) -> None:
        """Sign checkpoints with what ``source()`` returns (asked at every checkpoint, from
        the writer thread). ``start``: begin the periodic checkpoints now (a daemon); else
        with the first event written."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"audit log {self.description} is closed")
            self._signer = source
            if start or self._thread is not None:
                self._start_locked()
                self._queue.put(_WAKE)

    async def search(
        self, types: Iterable[str] | str | None = None, user: str | None = None,
        since: datetime | None = None, until: datetime | None = None,
        limit: int | None = None, *, descending: bool = False, chain: bool = False,
    ) -> list[dict[str, Any]]:
        """The events of every replica matching every given filter, ordered by time; the
        same arguments and result as :func:`limen.events.search`."""
        wanted = event_type_filter(types)
        for name, bound in (("since", since), ("until", until)):
            if bound is not None and bound.tzinfo is None:
                raise BadParameter(f"{name} must be a timezone-aware datetime")
        if limit is not None and limit < 0:
            raise BadParameter("limit must not be negative")

        def query(conn: Connection) -> list[str]:
            self._ensure_schema(conn)
            return sql.search_lines(
                conn, types=None if wanted is None else sorted(wanted), user=user,
                since=since, until=until, limit=limit, descending=descending)

        lines = await asyncio.to_thread(self._reader_conn.run, query)
        found: list[dict[str, Any]] = []
        for line in lines:
            event = json.loads(line)
            if not chain:
                event.pop(CHAIN_KEY, None)
            found.append(event)
        return found

    def read_day(self, day: date) -> tuple[sql.ChainHead | None, list[str]]:
        """``day``'s chain head and lines (blocking; for the verifier)."""
        def read(conn: Connection) -> tuple[sql.ChainHead | None, list[str]]:
            self._ensure_schema(conn)
            return sql.read_day(conn, day)
        return self._reader_conn.run(read)

    def days(self) -> list[date]:
        """The days that have a chain, oldest first (blocking)."""
        def read(conn: Connection) -> list[date]:
            self._ensure_schema(conn)
            return sql.list_days(conn)
        return self._reader_conn.run(read)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join()
        self._writer_conn.close()
        self._reader_conn.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> PostgresLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- submission -----------------------------------------------------------------------

    def _submit(self, event: AuditEvent) -> Future[None]:
        done: Future[None] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"audit log {self.description} is closed")
            self._start_locked()
            self._queue.put((event, done))
        return done

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="limen-audit-postgres", daemon=True)
            self._thread.start()

    # -- writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._next_wakeup())
            except queue.Empty:
                item = _WAKE
            stop = item is None
            batch: list[_Pending] = [item] if isinstance(item, tuple) else []
            while not stop:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                elif isinstance(more, tuple):
                    batch.append(more)
            try:
                self._write_batch(batch)
            except Exception as err:  # never leave an emitter waiting forever
                for _, done in batch:
                    _fail(done, err)
            try:
                self._housekeeping(closing=stop)
            except Exception:
                log.exception("audit log %s: cannot write a checkpoint", self.description)
            if stop:
                return

    def _next_wakeup(self) -> float | None:
        if self._signer is None:
            return None
        if not self._sealed:
            return _SIGNER_RETRY
        return max(0.0, self._next_tick - self._clock())

    def _ensure_schema(self, conn: Connection) -> None:
        if not self._schema_ready:
            sql.ensure_schema(conn)
            self._schema_ready = True

    def _write_batch(self, batch: list[_Pending]) -> None:
        by_day: dict[date, list[tuple[AuditEvent, bytes, Future[None]]]] = {}
        for event, done in batch:
            try:
                body = event.to_json().encode()
            except Exception as err:  # an event that cannot serialise fails alone
                _fail(done, err)
                continue
            by_day.setdefault(event.time.astimezone(UTC).date(), []).append((event, body, done))
        for day, group in sorted(by_day.items()):
            try:
                self._write_day(day, [(event, body) for event, body, _ in group])
            except Exception as err:
                for _, _, done in group:
                    _fail(done, err)
                continue
            self._touched.add(day)
            for _, _, done in group:
                _succeed(done)

    def _write_day(self, day: date, events: list[tuple[AuditEvent, bytes]]) -> None:
        """Append ``events`` (with their JSON) to ``day``'s chain in one transaction."""
        signer = self._current_signer()
        today = datetime.now(UTC).date()

        def append(conn: Connection) -> None:
            self._ensure_schema(conn)
            with conn.transaction():
                head = sql.lock_chain(conn, day)
                assert head is not None
                known = sql.present_uids(conn, [_pg_text(e.uid) for e, _ in events])
                rows: list[sql.LineRow] = []
                for event, body in events:
                    uid = _pg_text(event.uid)
                    if uid in known:
                        continue  # already logged: a repeated delivery
                    known.add(uid)
                    line, digest = chain_line(body, head.hash, head.seq + 1)
                    head = head.advanced(digest)
                    rows.append(sql.LineRow(
                        day, head.seq, line.decode(), uid, event.type.value,
                        None if event.user is None else _pg_text(event.user), event.time))
                if not rows:
                    return
                reason = "rotate" if day < today else (
                    "periodic" if head.unsigned >= self.checkpoint_every else None)
                if reason is not None and signer is not None:
                    row, head = _checkpoint_row(head, reason, signer)
                    rows.append(row)
                sql.insert_lines(conn, rows)
                sql.store_head(conn, head)

        try:
            self._writer_conn.run(append)
        except LimenError as err:
            if not isinstance(err.__cause__, pg_errors.UniqueViolation):
                raise
            self._writer_conn.run(append)  # a uid a sibling wrote under another day's lock

    # -- checkpoints ----------------------------------------------------------------------

    def _current_signer(self) -> CheckpointSigner | None:
        if self._signer is None:
            return None
        try:
            return self._signer()
        except Exception:
            log.exception("audit log %s: the checkpoint signer failed", self.description)
            return None

    def _housekeeping(self, *, closing: bool) -> None:
        signer = self._current_signer()
        if signer is None:
            return
        now = self._clock()
        due: list[tuple[date, str]] = []
        if closing:
            due.extend((day, "close") for day in sorted(self._touched))
        if closing or not self._sealed or now >= self._next_tick:
            self._next_tick = now + self.checkpoint_interval
            try:
                due.extend(self._writer_conn.run(self._due))
            except LimenError as err:
                self._report(f"cannot look for due checkpoints: {err}")
            else:
                self._sealed = True
        done: set[date] = set()
        for day, reason in due:
            if day in done:
                continue
            done.add(day)
            try:
                self._writer_conn.run(functools.partial(_checkpoint, day=day, reason=reason,
                                                        signer=signer))
            except LimenError as err:
                self._report(f"cannot write a {reason} checkpoint for {day}: {err}")
                return
        self._failing = False

    def _report(self, message: str) -> None:
        """Log a housekeeping failure once per outage (it is retried at every tick)."""
        log.log(logging.DEBUG if self._failing else logging.WARNING, "audit log %s: %s",
                self.description, message)
        self._failing = True

    def _due(self, conn: Connection) -> list[tuple[date, str]]:
        self._ensure_schema(conn)
        return sql.due_checkpoints(conn, datetime.now(UTC).date(), self.checkpoint_interval)


def _checkpoint_row(head: sql.ChainHead, reason: str,
                    signer: CheckpointSigner) -> tuple[sql.LineRow, sql.ChainHead]:
    claims = {"v": 1, "reason": reason, "file": day_file_name(head.day), "lines": head.seq,
              "head": head.hash, "time": format_time(datetime.now(UTC))}
    line, digest = chain_line(checkpoint_body(claims, signer), head.hash, head.seq + 1)
    after = head.advanced(digest, reason)
    return sql.LineRow(head.day, after.seq, line.decode()), after


def _covered(head: sql.ChainHead, reason: str) -> bool:
    """The last line already does a ``reason`` checkpoint's job (any checkpoint for
    ``periodic``, a sealing one for the others), or there is nothing to sign."""
    if head.seq == 0:
        return True
    if reason == "periodic":
        return head.checkpoint is not None
    return head.checkpoint in SEALING_REASONS


def _checkpoint(conn: Connection, *, day: date, reason: str, signer: CheckpointSigner) -> None:
    with conn.transaction():
        head = sql.lock_chain(conn, day, create=False)
        if head is None or _covered(head, reason):
            return
        row, after = _checkpoint_row(head, reason, signer)
        sql.insert_lines(conn, [row])
        sql.store_head(conn, after)


def _succeed(done: Future[None]) -> None:
    with contextlib.suppress(Exception):  # cancelled by its waiter: nothing to report
        done.set_result(None)


def _fail(done: Future[None], err: BaseException) -> None:
    with contextlib.suppress(Exception):
        done.set_exception(err)
