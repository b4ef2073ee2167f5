"""``FileLog``: the default audit emitter — append-only, hash-chained JSON lines, one file per
UTC day, with checkpoints signed by auth's key.

Created by the auth server (``DATA_DIR/log/events``, with a checkpoint signer), by ``lmctl``
on a data directory nothing runs from, and by agents for their outbox (no signer); read back by
:func:`limen.events.search` and checked by :mod:`limen.events.verify`. Layout and guarantees::

    events/                 directory 0700
      .writer.lock          held (shared) by every FileLog with a signer while it is open
      2026-11-23.jsonl      file 0600, one event per line, each ending in '\\n'
      2026-11-24.jsonl      the day is the UTC date of the event's own ``time``

    emit()s of one loop turn ─┐
    emit_many() / write() ────┴─queue─▶ writer thread: flock(LOCK_EX) · read the chain head if
                              the file changed · os.write(the batch's chained lines) (O_APPEND) ·
                              checkpoint when due · unlock · one fsync for the batch ──▶ done

* **Append-only, no interleaving.** The file is opened with ``O_APPEND`` and the whole lines
  of a batch (or one checkpoint) go in one ``os.write``, so concurrent writers — threads, and
  other processes with their own ``FileLog`` on the same directory — never interleave inside
  a line. Within a process one
  writer thread per ``FileLog`` owns the files; across instances and processes, writers also
  hold an advisory ``flock`` around their writes (never around fsync). Under that lock a writer
  whose file grew since its own last write (another writer) re-reads the chain head from the
  end of the file, so the chain stays one chain whoever writes.
* **Hash chain and checkpoints** (format in :mod:`limen.events.chain`). Every line links to the
  previous one; with a signer, a signed checkpoint is appended every ``checkpoint_every`` lines
  or ``checkpoint_interval`` seconds (when something was written since the last one), when the
  writer moves to another day's file (and at a tick, when its open file is no longer today's),
  and at ``close()``. When the signer first becomes available the newest day file is sealed
  (a ``resume`` checkpoint) if the previous writer did not close it (a crash).
* **fsync policy: every event is durable when ``emit()``/``write()`` returns.** Events queued
  while an fsync runs are written and fsynced together (group commit), so a burst costs one
  fsync per batch, not per event. The ``emit()`` calls of one event-loop turn are handed to
  the writer as one queue item and woken with one loop wake-up (:mod:`limen.events.waiters`).
  ``fsync=False`` skips it (tests, tmpfs, throw-away logs).
  A newly created day file also fsyncs the directory so the file itself survives a crash.
* **Rotation by day.** The file is chosen by the event's UTC date, so a file holds exactly
  one day and events forwarded late (an agent that was offline) land in the right day.
  A day file that is renamed or removed while open (archiving, retention) is recreated.
* **Crash safety.** An unclean shutdown can leave a torn last line without '\\n'. Before
  writing, under the lock, the writer reads the file's tail; after a torn line it writes a
  newline, then a ``torn`` marker (signed when it can) that records the torn line's digest and
  links back to the last whole line, so the fragment stays a line of its own that readers skip
  (and count) and the chain goes on — even when the crashed writer was another process.
* A cancelled ``emit()`` does not withdraw its event: once submitted, it is written.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import itertools
import logging
import operator
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from limen.events.chain import (
    SEALING_REASONS,
    CheckpointSigner,
    Tail,
    chain_line,
    chain_lines,
    checkpoint_body,
    read_tail,
)
from limen.events.event import AuditEvent, format_time
from limen.events.waiters import Batch, Done, Pending, Turns, succeed_all
from limen.events.waiters import fail as _fail
from limen.files import private_dir

__all__ = [
    "DAY_FILE_PATTERN",
    "WRITER_LOCK",
    "FileLog",
    "SignerSource",
    "day_file_name",
    "day_files",
]

log = logging.getLogger(__name__)

DAY_FILE_PATTERN = re.compile(r"^(\d{4}-\d{2}-\d{2})\.jsonl$")
"""Names of the daily files: ``YYYY-MM-DD.jsonl``."""

WRITER_LOCK = ".writer.lock"
"""Held (``LOCK_SH``) by every open FileLog with a signer: a verifier that cannot take it
exclusively knows the newest file may still have lines after its last checkpoint."""

SignerSource = Callable[[], CheckpointSigner | None]
"""Asked for the current signer at every checkpoint (auth's key may rotate); ``None``: not yet."""

_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
_SIGNER_RETRY = 1.0
_WAKE = "wake"



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
    ``signer`` (or :meth:`set_signer` later) enables signed checkpoints.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, fsync: bool = True,
        signer: SignerSource | None = None, checkpoint_every: int = 500,
        checkpoint_interval: float = 30.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if checkpoint_every < 1 or checkpoint_interval <= 0:
            raise ValueError("checkpoints need a positive line count and interval")
        self.directory = Path(directory)
        self.fsync = fsync
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self._clock = clock
        _ensure_private_dir(self.directory)
        self._queue: queue.SimpleQueue[Pending | list[Pending] | str | None] = \
            queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._turns = Turns()
        self._signer: SignerSource | None = None
        # Owned by the writer thread only:
        self._fd: int | None = None
        self._fd_day: date | None = None
        self._tail: Tail | None = None
        """Chain head of the open file, valid while its size is ``_end``."""
        self._end = -1
        self._since_checkpoint = 0
        self._dirty_since: float | None = None
        """When the first line after the open file's last checkpoint was written."""
        self._sealed = False
        self._writer_lock: int | None = None
        if signer is not None:
            self.set_signer(signer)

    # -- public API -----------------------------------------------------------------------

    async def emit(self, event: AuditEvent) -> None:
        """Returns once ``event`` is written (and fsynced). Events emitted during one turn of
        the event loop reach the writer together (see :mod:`limen.events.waiters`)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"audit log {self.directory} is closed")
            self._start_locked()
            waiter, first = self._turns.add(loop, event)
        if first:
            loop.call_soon(self._end_turn, loop)
        await waiter

    async def emit_many(self, events: Sequence[AuditEvent]) -> None:
        """Emit ``events`` in order; returns once all are written (fsynced in batches), with
        one hand-off to the writer thread and one wake-up of the event loop for the lot
        (a Git sync that changes 10,000 objects, a db agent's buffered queries). Raises the
        first failure after every event was attempted."""
        if not events:
            return
        batch = Batch(len(events))
        pending = batch.pending(list(events))
        with self._lock:
            if self._closed:
                raise RuntimeError(f"audit log {self.directory} is closed")
            self._start_locked()
            self._queue.put(pending)
        await asyncio.wrap_future(batch.future)

    def write(self, event: AuditEvent) -> None:
        self._submit(event).result()

    def set_signer(self, source: SignerSource, *, start: bool = True) -> None:
        """Sign checkpoints with what ``source()`` returns (asked at every checkpoint, from the
        writer thread). The writer seals the newest file once a signer exists: right away with
        ``start`` (a daemon), else when the first event is written (a command that may write
        nothing must not touch the log)."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"audit log {self.directory} is closed")
            self._signer = source
            if start or self._thread is not None:
                self._start_locked()
                self._queue.put(_WAKE)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for pending in self._turns.take_all():  # emitted before close(): written first
                self._queue.put(pending)
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
            self._start_locked()
            self._queue.put((event, done))
        return done

    def _end_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``, after the turn in which its first event was emitted: hand the turn's
        events to the writer thread in one queue item."""
        with self._lock:
            pending = self._turns.take(loop)
            if pending and not self._closed:
                self._queue.put(pending)
                return
        if pending:  # closed meanwhile, by another thread: not written
            Turns.refuse(pending, RuntimeError(f"audit log {self.directory} is closed"))

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="limen-audit-writer", daemon=True
            )
            self._thread.start()

    # -- writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            tick = False
            try:
                item = self._queue.get(timeout=self._next_wakeup())
            except queue.Empty:
                item, tick = _WAKE, True
            stop = item is None
            batch: list[Pending] = [item] if isinstance(item, tuple) else \
                list(item) if isinstance(item, list) else []
            while not stop:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                elif isinstance(more, tuple):
                    batch.append(more)
                elif isinstance(more, list):
                    batch.extend(more)
            try:
                if self._signer is not None and not self._sealed:
                    self._seal_newest()  # before this writer's first line
            except Exception:
                log.exception("audit log %s: cannot seal the newest file", self.directory)
            try:
                self._write_batch(batch)
            except Exception as err:  # never leave an emitter waiting forever
                for _, done in batch:
                    _fail(done, err)
            try:
                self._housekeeping(closing=stop, tick=tick)
            except Exception:
                log.exception("audit log %s: cannot write a checkpoint", self.directory)
            if stop:
                self._close_fd()
                self._release_writer_lock()
                return

    def _next_wakeup(self) -> float | None:
        if self._signer is None:
            return None
        if not self._sealed:
            return _SIGNER_RETRY
        if self._fd is None or self._dirty_since is None:
            return None
        return max(0.0, self._dirty_since + self.checkpoint_interval - self._clock())

    def _write_batch(self, batch: list[Pending]) -> None:
        ready: list[tuple[date, bytes, Done]] = []
        for event, done in batch:
            try:
                when = event.time  # UTC already, as events are made; else converted
                day = (when if when.tzinfo is UTC else when.astimezone(UTC)).date()
                ready.append((day, event.to_json().encode(), done))
            except Exception as err:  # an event that cannot serialise fails alone
                _fail(done, err)
        for day, group in itertools.groupby(ready, key=operator.itemgetter(0)):
            self._write_day(day, [(body, done) for _, body, done in group])

    def _write_day(self, day: date, group: list[tuple[bytes, Done]]) -> None:
        """Append ``group`` to the day's file under its lock, then fsync once, unlocked."""
        written: list[Done] = []
        try:
            fd = self._fd_for(day)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            for _, done in group:
                _fail(done, err)
            return
        try:
            try:
                self._sync_tail(fd)
                self._append_many(fd, [body for body, _ in group])
            except OSError as err:
                for _, done in group:
                    _fail(done, err)
            else:
                self._since_checkpoint += len(group)
                written = [done for _, done in group]
            if written and self._since_checkpoint >= self.checkpoint_every:
                self._checkpoint_locked(fd, "periodic")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        self._sync_and_resolve(fd, written)

    # -- the chain ------------------------------------------------------------------------

    def _sync_tail(self, fd: int) -> None:
        """Under the lock: re-read the chain head when the file is not as we left it, record
        a file cut shorter than we left it (``shrunk``), and resume the chain after a torn
        last line with a marker."""
        size = os.fstat(fd).st_size
        if self._tail is not None and size == self._end:
            return
        shrunk = self._tail is not None and size < self._end
        previous_end = self._end
        assert self._fd_day is not None
        self._tail = tail = read_tail(fd, day_file_name(self._fd_day))
        self._end = os.fstat(fd).st_size
        if shrunk:  # cut while we had it open: record the evidence before anything else
            log.warning("audit log %s was cut from %d to %d bytes while open",
                        day_file_name(self._fd_day), previous_end, size)
            self._write_checkpoint(fd, "resume", {"shrunk": {"from": previous_end, "to": size}},
                                   required=False)
        if tail.checkpoint is None and tail.seq > 0:
            self._since_checkpoint = max(self._since_checkpoint, 1)
            if self._dirty_since is None:
                self._dirty_since = self._clock()
        if tail.torn is not None:
            claims: dict[str, Any] = {
                "after": {"sha256": hashlib.sha256(tail.torn).hexdigest(),
                          "bytes": len(tail.torn)}}
            self._write_checkpoint(fd, "torn", claims, required=False)

    def _append(self, fd: int, body: bytes, checkpoint: str | None = None) -> None:
        tail = self._tail
        assert tail is not None
        line, digest = chain_line(body, tail.hash, tail.seq + 1)
        data = (b"\n" if tail.needs_newline else b"") + line + b"\n"
        try:
            _write_all(fd, data)
        except OSError:
            self._tail = None  # a short write may have left a fragment: re-read the tail
            raise
        self._end += len(data)
        self._tail = Tail(tail.seq + 1, digest, checkpoint)
        if checkpoint is not None:
            self._since_checkpoint, self._dirty_since = 0, None
        elif self._dirty_since is None:
            self._dirty_since = self._clock()

    def _append_many(self, fd: int, bodies: list[bytes]) -> None:
        """Chain ``bodies`` after the tail and append them in one ``write`` (whole lines,
        under the lock: no other writer's line can come between them)."""
        tail = self._tail
        assert tail is not None
        lines, head = chain_lines(bodies, tail.hash, tail.seq)
        seq = tail.seq + len(bodies)
        data = b"\n" + lines if tail.needs_newline else lines
        try:
            _write_all(fd, data)
        except OSError:
            self._tail = None  # a short write may have left a fragment: re-read the tail
            raise
        self._end += len(data)
        self._tail = Tail(seq, head, None)
        if self._dirty_since is None:
            self._dirty_since = self._clock()

    def _current_signer(self) -> CheckpointSigner | None:
        if self._signer is None:
            return None
        try:
            return self._signer()
        except Exception:
            log.exception("audit log %s: the checkpoint signer failed", self.directory)
            return None

    def _write_checkpoint(self, fd: int, reason: str, extra: dict[str, Any] | None = None,
                          *, required: bool = True) -> bool:
        """Append a checkpoint (under the lock, tail in sync). ``required``: skipped when
        there is no signer; a torn marker is written unsigned then."""
        signer = self._current_signer()
        if signer is None and required:
            return False
        tail = self._tail
        assert tail is not None
        assert self._fd_day is not None
        claims = {"v": 1, "reason": reason, "file": day_file_name(self._fd_day),
                  "lines": tail.seq, "head": tail.hash,
                  "time": format_time(datetime.now(UTC)), **(extra or {})}
        self._append(fd, checkpoint_body(claims, signer), reason)
        return True

    def _checkpoint_locked(self, fd: int, reason: str) -> None:
        try:
            self._sync_tail(fd)
            if self._tail is not None and self._tail.seq > 0 and \
                    not _covered(self._tail, reason):
                self._write_checkpoint(fd, reason)
        except OSError:
            log.exception("audit log %s: cannot write a %s checkpoint", self.directory, reason)

    def _checkpoint(self, reason: str) -> None:
        """Checkpoint the open file, unless its last line already is one that does the job
        (any checkpoint for ``periodic``; a sealing one for the others)."""
        fd = self._fd
        if fd is None or self._signer is None:
            return
        if self._tail is not None and _covered(self._tail, reason) and \
                os.fstat(fd).st_size == self._end:
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            self._checkpoint_locked(fd, reason)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        if self.fsync:
            os.fsync(fd)

    def _housekeeping(self, *, closing: bool, tick: bool) -> None:
        if self._signer is None:
            return
        if closing:
            self._checkpoint("close")
        elif self._dirty_since is None or \
                self._clock() - self._dirty_since < self.checkpoint_interval:
            return
        elif tick and self._fd_day is not None and self._fd_day != datetime.now(UTC).date():
            self._checkpoint("rotate")  # a late event's day: leave it sealed
            self._close_fd()
        else:
            self._checkpoint("periodic")

    def _seal_newest(self) -> None:
        """Once a signer exists: take the writer lock; if the newest day file was left
        without a closing checkpoint (a crash), append a ``resume`` one."""
        if self._current_signer() is None:
            return
        self._sealed = True
        self._take_writer_lock()
        files = day_files(self.directory)
        if not files:
            return
        day = files[-1][0]
        fd = self._fd_for(day)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            self._sync_tail(fd)
            tail = self._tail
            if tail is not None and tail.seq > 0 and tail.checkpoint not in SEALING_REASONS:
                self._write_checkpoint(fd, "resume")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        if self.fsync:
            os.fsync(fd)

    def _take_writer_lock(self) -> None:
        if self._writer_lock is not None:
            return
        fd = os.open(self.directory / WRITER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                     | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            os.close(fd)
            raise
        self._writer_lock = fd

    def _release_writer_lock(self) -> None:
        if self._writer_lock is not None:
            os.close(self._writer_lock)
            self._writer_lock = None

    # -- files ----------------------------------------------------------------------------

    def _sync_and_resolve(self, fd: int, written: list[Done]) -> None:
        if not written:
            return
        try:
            if self.fsync:
                os.fsync(fd)
        except OSError as err:
            for done in written:
                _fail(done, err)
            return
        succeed_all(written)

    def _fd_for(self, day: date) -> int:
        """The open file for ``day``, reopened if it was removed or renamed (retention).
        Leaving another day's file seals it with a ``rotate`` checkpoint."""
        if self._fd is not None and self._fd_day == day:
            try:
                same = os.path.samestat(
                    os.fstat(self._fd), os.stat(self.directory / day_file_name(day))
                )
            except FileNotFoundError:
                same = False
            if same:
                return self._fd
        elif self._fd is not None:
            self._checkpoint("rotate")
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
        self._tail, self._end = None, -1
        return fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._fd_day = None, None
        self._tail, self._end = None, -1
        self._since_checkpoint, self._dirty_since = 0, None


def _covered(tail: Tail, reason: str) -> bool:
    if reason == "periodic":
        return tail.checkpoint is not None
    return tail.checkpoint in SEALING_REASONS


def _write_all(fd: int, data: bytes) -> None:
    """One ``write`` per line; only a short write (disk full) needs a second call."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"audit log write made no progress ({written})")
        view = view[written:]


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
