"""``SQLiteBackend``: the embedded default ``Backend``, one SQLite file in the data directory.

Opened by ``limen.backend.factory.open_backend(data_dir)`` for ``limen start`` and for the
offline ``lmctl --data-dir`` commands; both may have the same file open at once::

    process A (limen start)                     process B (lmctl, offline)
    event loop ──▶ worker thread ──▶ ┌──────────────────────────┐ ◀── worker thread ◀── loop
      watchers: poll events > cursor │ DATA_DIR/backend.sqlite   │
      at once after a local write,   │ WAL; BEGIN IMMEDIATE per  │
      and when the file changed      │ write; events table       │
                                     └──────────────────────────┘

Every write, listing and poll runs on one dedicated worker thread that owns the connection
(``limen.backend._sqlite_store``); the event loop only awaits it. A ``get`` of one key reads
on the event loop's thread through a read-only connection (``limen.backend._sqlite_reader``:
a few microseconds against a thread hop each way), falling back to the worker when SQLite
cannot answer at once. Writes wake this process's watchers at once; another process's writes
reach them through one check every ``poll_interval`` on the event loop's thread (SQLite's
``PRAGMA data_version`` on that read-only connection: a few microseconds), which wakes them
to poll the ``events`` table. An idle process does not poll per watcher (twenty watchers
polling every 50 ms through the worker thread were most of an idle ``limen start``'s 2-3 %
of a CPU); each watcher still polls every ``WATCH_FALLBACK`` seconds in case a change
escaped the check.
Periodic tasks sweep expired items (every ``sweep_interval``) and compact the event history
(every ``compact_interval``), keeping at least the newest ``history_min_events`` events and
every event younger than ``history_min_age`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from limen.aio.changed import Changed
from limen.aio.tasks import cancel_and_wait
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
from limen.backend._sqlite_reader import AskTheWorker, SQLiteReader
from limen.backend._sqlite_store import SQLiteStore
from limen.backend.base import Delete, Event, Item, Put
from limen.errors import ConnectionProblem, LimenError

__all__ = ["DB_FILENAME", "SQLiteBackend"]

DB_FILENAME = "backend.sqlite"
"""The file name ``open_backend`` uses inside the data directory."""

_log = logging.getLogger(__name__)
WATCH_FALLBACK = 5.0
"""Seconds a caught-up watcher waits for a wake-up before it polls anyway."""
_P = ParamSpec("_P")
_T = TypeVar("_T")


class SQLiteBackend(WriteVerbs):
    """``Backend`` over the SQLite file at ``path`` (created 0600, its directory 0700).

    The constructor opens the file synchronously (a few milliseconds; at most
    ``busy_timeout`` seconds when another process holds it locked) so a bad file fails at
    once: ``BadParameter`` when it is not a Limen database, ``ConnectionProblem`` when locked.
    Use an instance from one event loop (each process or thread opens its own instance).
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.05,
        sweep_interval: float | None = DEFAULT_SWEEP_INTERVAL,
        compact_interval: float | None = 60.0,
        history_min_events: int = DEFAULT_HISTORY_MIN_EVENTS,
        history_min_age: float = DEFAULT_HISTORY_MIN_AGE,
        busy_timeout: float = 5.0,
        poll_window: int = 1000,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._poll_interval = poll_interval
        self._intervals = {"sweep": sweep_interval, "compact": compact_interval}
        self._history_min_events = history_min_events
        self._history_min_age = history_min_age
        self._poll_window = poll_window
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="limen-sqlite")
        try:
            self._store = self._executor.submit(
                SQLiteStore, self.path, busy_timeout=busy_timeout
            ).result()
            self._known_revision = self._executor.submit(self._store.revision).result()
            self._reader = SQLiteReader(self.path)
        except BaseException:
            self._executor.shutdown(wait=True)
            raise
        self._changed = Changed()
        self._data_version: int | None = None
        """The file's ``PRAGMA data_version`` as the watchers were last woken for."""
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    # -- reads ---------------------------------------------------------------------------

    async def get(self, key: str) -> Item | None:
        key = validate_key(key)
        if self._closed:
            raise closed_error()
        if self._started:  # the first call of all starts the periodic tasks, in _run
            with contextlib.suppress(AskTheWorker):
                return self._reader.get(key, self._clock())
        return await self._run(self._store.get, key, self._clock())

    async def list(self, prefix: str) -> list[Item]:
        return await self._run(self._store.list, prefix, self._clock())

    async def current_revision(self) -> int:
        revision = await self._run(self._store.revision)
        self._observe(revision)
        return revision

    # -- writes (the verbs: limen.backend._common.WriteVerbs) -----------------------------

    async def sweep(self) -> int:
        """Delete every expired item now (one revision of DELETE events); returns how many."""
        swept = await self._run(self._store.sweep, self._clock())
        if swept:
            # A "from now on" watcher started after this sweep must not replay its deletes.
            self._observe(await self._run(self._store.revision))
            self._local_change()
        return swept

    async def compact(self) -> int:
        """Apply the history retention rule now; returns the compacted revision (watching
        ``after`` a revision below it raises ``BadParameter``)."""
        return await self._run(
            self._store.compact, self._clock(), self._history_min_events, self._history_min_age
        )

    # -- watch ---------------------------------------------------------------------------

    def watch(self, prefix: str, *, after: int | None = None) -> AsyncIterator[Event]:
        """Events under ``prefix`` after ``after`` (None: after the latest revision this
        process has seen). Ends when the backend closes; ``BadParameter`` if ``after`` has been
        compacted (re-list, then watch from the list's revision)."""
        if self._closed:
            raise closed_error()
        start = validate_after(after)
        return self._follow(prefix, self._known_revision if start is None else start)

    async def _follow(self, prefix: str, cursor: int) -> AsyncIterator[Event]:
        while not self._closed:
            changed = self._changed.event
            try:
                events, cursor, latest = await self._run(
                    self._store.poll, prefix, cursor, self._poll_window
                )
            except ConnectionProblem:
                if self.closed:
                    return
                raise
            self._observe(latest)
            for event in events:
                yield event
            if cursor >= latest:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WATCH_FALLBACK):
                        await changed.wait()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Stop the periodic tasks, end every watcher, close the file and join the worker
        thread. Later calls raise ``ConnectionProblem``; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self._changed.notify()
        await cancel_and_wait(*self._tasks)
        loop = asyncio.get_running_loop()
        self._reader.close()
        try:
            await loop.run_in_executor(self._executor, self._store.close)
        finally:
            await asyncio.to_thread(self._executor.shutdown, wait=True)

    # -- internals -----------------------------------------------------------------------

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run a store method on the worker thread."""
        if self._closed:
            raise closed_error()
        loop = asyncio.get_running_loop()
        if not self._started:
            self._started = True
            self._start_tasks(loop)
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _write(self, checks: Sequence[Check], ops: Sequence[Put | Delete]) -> int:
        revision = await self._run(self._store.write, checks, ops, self._clock())
        self._observe(revision)
        self._local_change()
        return revision

    def _local_change(self) -> None:
        """This process committed: wake the watchers now, and tell the change check that the
        file is as they will see it (an outside commit before this one is in what they read)."""
        with contextlib.suppress(AskTheWorker):
            self._data_version = self._reader.data_version()
        self._changed.notify()

    def _start_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        self._tasks.append(loop.create_task(self._notice_changes(),
                                            name="limen-sqlite-changes"))
        jobs: dict[str, Callable[[], Awaitable[object]]] = {
            "sweep": self.sweep, "compact": self.compact,
        }
        for name, interval in self._intervals.items():
            if interval is not None:
                self._tasks.append(
                    loop.create_task(
                        self._every(interval, name, jobs[name]), name=f"limen-sqlite-{name}"
                    )
                )

    async def _every(
        self, interval: float, name: str, job: Callable[[], Awaitable[object]]
    ) -> None:
        while not self._closed:
            await asyncio.sleep(interval)
            try:
                await job()
            except LimenError as err:
                if self.closed:
                    return
                _log.warning("backend %s of %s failed: %s", name, self.path, err)

    async def _notice_changes(self) -> None:
        """Wake the watchers when the file changed (another process's commit, or this one's
        worker's that did not wake them yet), checked every ``poll_interval``; a check SQLite
        cannot answer at once wakes them too (they poll through the worker, which waits)."""
        while not self._closed:
            try:
                version: int | None = self._reader.data_version()
            except AskTheWorker:
                version = None
            known = self._data_version
            if version is None or (known is not None and version != known):
                self._changed.notify()
            self._data_version = version
            await asyncio.sleep(self._poll_interval)

    def _observe(self, revision: int) -> None:
        self._known_revision = max(self._known_revision, revision)

