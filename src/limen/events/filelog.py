"""``FileLog``: the default audit emitter — append-only JSON lines, one file per UTC day.

Created by the auth server (``DATA_DIR/events``) and by single-process tools; read back by
:func:`limen.events.search`. Layout and guarantees::

    events/                 directory 0700
      2026-11-23.jsonl      file 0600, one event per line, each ending in '\\n'
      2026-11-24.jsonl      the day is the UTC date of the event's own ``time``

    emit()/write() ──queue──▶ writer thread: flock(LOCK_EX) · check tail · os.write(line)
                              per event (O_APPEND) · unlock · one fsync for the batch ──▶ done

* **Append-only, no interleaving.** The file is opened with ``O_APPEND`` and every event is one
  ``os.write`` of a whole line, so concurrent writers — threads, and other processes with their
  own ``FileLog`` on the same directory — never interleave inside a line. Within a process one
  writer thread per ``FileLog`` owns the files; across instances and processes, writers also
  hold an advisory ``flock`` around their writes (never around fsync), which is what makes the
  crash check below exact: a reader of the tail never sees another writer's write half done.
* **fsync policy: every event is durable when ``emit()``/``write()`` returns.** Events queued
  while an fsync runs are written and fsynced together (group commit), so a burst costs one
  fsync per batch, not per event. ``fsync=False`` skips it (tests, tmpfs, throw-away logs).
  A newly created day file also fsyncs the directory so the file itself survives a crash.
* **Rotation by day.** The file is chosen by the event's UTC date, so a file holds exactly
  one day and events forwarded late (an agent that was offline) land in the right day.
  A day file that is renamed or removed while open (archiving, retention) is recreated.
* **Crash safety.** An unclean shutdown can leave a torn last line without '\\n'. Before each
  batch, under the lock, the writer checks the file's last byte; if it is not '\\n', the next
  line starts with '\\n', so the torn fragment stays a line of its own that readers skip (and
  count) and no event is glued to it — even when the crashed writer was another process.
* A cancelled ``emit()`` does not withdraw its event: once submitted, it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import operator
import os
import queue
import re
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from datetime import UTC, date
from pathlib import Path
from types import TracebackType

from limen.events.event import AuditEvent
from limen.files import private_dir

__all__ = ["DAY_FILE_PATTERN", "FileLog", "day_file_name", "day_files"]

DAY_FILE_PATTERN = re.compile(r"^(\d{4}-\d{2}-\d{2})\.jsonl$")
"""Names of the daily files: ``YYYY-MM-DD.jsonl``."""

_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)

_Pending = tuple[AuditEvent, "Future[None]"]


def day_file_name(day: date) -> str:
    """``2026-11-24.jsonl`` for ``date(2026, 11, 24)``."""
    return f"{day.isoformat()}.jsonl"


def day_files(directory: str | os.PathLike[str]) -> list[tuple[date, Path]]:
    """The daily files in ``directory``, oldest first (other files are ignored)."""
    found: list[tuple[date, Path]] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        match = DAY_FILE_PATTERN.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            found.append((date.fromisoformat(match.group(1)), Path(entry.path)))
        except ValueError:
            continue
    return sorted(found)


class FileLog:
    """Append audit events to ``directory/YYYY-MM-DD.jsonl``. An :class:`Emitter`.

    ``await log.emit(event)`` from async code, ``log.write(event)`` from threads; both return
    once the event is on disk (fsynced unless ``fsync=False``) and raise the ``OSError`` if it
    could not be written. ``close()`` (or ``await aclose()``) flushes and stops the writer.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        _ensure_private_dir(self.directory)
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Owned by the writer thread only:
        self._fd: int | None = None
        self._fd_day: date | None = None

    # -- public API -----------------------------------------------------------------------

    async def emit(self, event: AuditEvent) -> None:
        await asyncio.wrap_future(self._submit(event))

    async def emit_many(self, events: Sequence[AuditEvent]) -> None:
        """Emit ``events`` in order; returns once all are written (fsynced in batches), with
        one wake-up of the event loop instead of one per event (a Git sync that changes
        10,000 objects). Raises the first failure after every event was attempted."""
        pending = [self._submit(event) for event in events]
        if pending:
            await asyncio.to_thread(wait_futures, pending)
        for done in pending:
            done.result()

    def write(self, event: AuditEvent) -> None:
        self._submit(event).result()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> FileLog:
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
                raise RuntimeError(f"audit log {self.directory} is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="limen-audit-writer", daemon=True
                )
                self._thread.start()
            self._queue.put((event, done))
        return done

    # -- writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            stop = item is None
            batch: list[_Pending] = [] if item is None else [item]
            while not stop:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch.append(more)
            try:
                self._write_batch(batch)
            except Exception as err:  # never leave an emitter waiting forever
                for _, done in batch:
                    _fail(done, err)
            if stop:
                self._close_fd()
                return

    def _write_batch(self, batch: list[_Pending]) -> None:
        ready: list[tuple[date, bytes, Future[None]]] = []
        for event, done in batch:
            try:
                day = event.time.astimezone(UTC).date()
                ready.append((day, (event.to_json() + "\n").encode(), done))
            except Exception as err:  # an event that cannot serialise fails alone
                _fail(done, err)
        for day, group in itertools.groupby(ready, key=operator.itemgetter(0)):
            self._write_day(day, [(line, done) for _, line, done in group])

    def _write_day(self, day: date, group: list[tuple[bytes, Future[None]]]) -> None:
        """Append ``group`` to the day's file under its lock, then fsync once, unlocked."""
        written: list[Future[None]] = []
        try:
            fd = self._fd_for(day)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            for _, done in group:
                _fail(done, err)
            return
        try:
            torn = _ends_without_newline(fd)
            for line, done in group:
                try:
                    _write_all(fd, b"\n" + line if torn else line)
                except OSError as err:
                    torn = True  # a short write may have left a fragment
                    _fail(done, err)
                    continue
                torn = False
                written.append(done)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        self._sync_and_resolve(fd, written)

    def _sync_and_resolve(self, fd: int, written: list[Future[None]]) -> None:
        if not written:
            return
        try:
            if self.fsync:
                os.fsync(fd)
        except OSError as err:
            for done in written:
                _fail(done, err)
            return
        for done in written:
            _succeed(done)

    def _fd_for(self, day: date) -> int:
        """The open file for ``day``, reopened if it was removed or renamed (retention)."""
        if self._fd is not None and self._fd_day == day:
            try:
                same = os.path.samestat(
                    os.fstat(self._fd), os.stat(self.directory / day_file_name(day))
                )
            except FileNotFoundError:
                same = False
            if same:
                return self._fd
        return self._open_day(day)

    def _open_day(self, day: date) -> int:
        self._close_fd()
        path = self.directory / day_file_name(day)
        try:
            fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        except FileExistsError:
            fd = os.open(path, _OPEN_FLAGS)
            created = False
        try:
            os.fchmod(fd, 0o600)
            if created and self.fsync:
                _fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._fd_day = fd, day
        return fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._fd_day = None, None


def _ends_without_newline(fd: int) -> bool:
    """Whether the file ends in a torn line (checked under the lock, so not a write in flight)."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _write_all(fd: int, data: bytes) -> None:
    """One ``write`` per line; only a short write (disk full) needs a second call."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"audit log write made no progress ({written})")
        view = view[written:]


def _succeed(done: Future[None]) -> None:
    with contextlib.suppress(Exception):  # cancelled by its waiter: nothing to report
        done.set_result(None)


def _fail(done: Future[None], err: BaseException) -> None:
    with contextlib.suppress(Exception):
        done.set_exception(err)


def _ensure_private_dir(directory: Path) -> None:
    if directory.is_dir() and directory.stat().st_mode & 0o777 == 0o700:
        return
    private_dir(directory)  # missing parents (DATA_DIR/log) are created 0700 too


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
