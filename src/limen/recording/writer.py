"""Incremental asciicast writer for one live session, kept off the session's hot path.

Called by the node agent's session code (:mod:`limen.agents.node.session`)::

    CastWriter.create(sessions_dir, session_id, header)    <id>.cast.part (0600), header synced
      .output(data) / .input(data) / .resize(w, h)         O(1): append (time, code, bytes)
      .flush()                                             decode + encode + write the pending
                                                           events (blocking: run in a thread)
      .finish() -> <id>.cast                               final flush, fsync, atomic rename
    RecordingTask(writer)                                  flushes every ``interval`` seconds
                                                           in a worker thread, one at a time

The relay only appends ``(time, code, bytes)`` tuples; UTF-8 decoding, JSON encoding and the
file write happen in the flusher thread, so a slow disk never stalls a session. A crash loses at
most the last interval; :mod:`limen.recording.recovery` completes the ``.part`` on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from limen.aio.tasks import cancel_and_wait
from limen.errors import BadParameter
from limen.recording.asciicast import CastHeader, StreamDecoder, encode_event, encode_header

__all__ = [
    "PART_SUFFIX",
    "SESSION_ID_PATTERN",
    "CastWriter",
    "RecordingTask",
    "check_session_id",
]

PART_SUFFIX = ".cast.part"
SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
"""Session ids are file names: letters, digits, ``-`` and ``_`` (uuid4 strings in practice)."""
_FLUSH_EARLY_BYTES = 1 << 20


def check_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not SESSION_ID_PATTERN.match(session_id):
        raise BadParameter(f"invalid session id {session_id!r}")
    return session_id


class CastWriter:
    """One recording being written (see the module docstring). Not shared between sessions."""

    def __init__(self, path: Path, fd: int, *, clock: Callable[[], float] = time.monotonic,
                 record_input: bool = False) -> None:
        self.path = path
        self._fd: int | None = fd
        self._clock = clock
        self._start = clock()
        self.record_input = record_input
        self._pending: list[tuple[float, str, bytes]] = []
        self.pending_bytes = 0
        self._decoders = {"o": StreamDecoder(), "i": StreamDecoder()}
        self._lock = threading.Lock()
        self.bytes_written = 0

    @classmethod
    def create(cls, directory: Path, session_id: str, header: CastHeader, *,
               clock: Callable[[], float] = time.monotonic,
               record_input: bool = False) -> CastWriter:
        """Open ``directory/<session_id>.cast.part`` and write the header (synced to disk)."""
        check_session_id(session_id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / f"{session_id}{PART_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, encode_header(header))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return cls(path, fd, clock=clock, record_input=record_input)

    @property
    def final_path(self) -> Path:
        return self.path.with_name(self.path.name.removesuffix(".part"))

    # -- the hot path: O(1), no I/O ------------------------------------------------------

    def output(self, data: bytes) -> None:
        self._add("o", data)

    def input(self, data: bytes) -> None:
        if self.record_input:
            self._add("i", data)

    def resize(self, width: int, height: int) -> None:
        self._add("r", f"{width}x{height}".encode())

    def _add(self, code: str, data: bytes) -> None:
        if data:
            self._pending.append((self._clock() - self._start, code, data))
            self.pending_bytes += len(data)

    # -- blocking part: call from a worker thread ---------------------------------------

    def flush(self, *, final: bool = False) -> None:
        """Encode and write the pending events (one flusher at a time)."""
        with self._lock:
            pending, self._pending, self.pending_bytes = self._pending, [], 0
            if self._fd is None:
                return
            chunks: list[bytes] = []
            last_time = 0.0
            for when, code, data in pending:
                last_time = when
                text = self._decoders[code].decode(data) if code in self._decoders else \
                    data.decode("utf-8", "surrogateescape")
                if text:
                    chunks.append(encode_event(when, code, text))
            if final:  # bytes of a character cut at the very end of the stream
                for code, decoder in self._decoders.items():
                    rest = decoder.decode(b"", final=True)
                    if rest:
                        chunks.append(encode_event(last_time, code, rest))
            if chunks:
                payload = b"".join(chunks)
                _write_all(self._fd, payload)
                self.bytes_written += len(payload)

    def finish(self) -> Path:
        """Write everything, sync, rename ``.cast.part`` to ``.cast``; returns the new path."""
        self.flush(final=True)
        with self._lock:
            if self._fd is None:
                raise BadParameter(f"recording {self.path} is already closed")
            fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.final_path
        os.replace(self.path, final)
        return final

    def abort(self) -> None:
        """Close without finishing (the ``.part`` stays, as after a crash)."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self._fd is None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class RecordingTask:
    """Flushes a :class:`CastWriter` in a worker thread every ``interval`` seconds, or sooner
    when a lot of output is pending; ``finish()`` stops it and finishes the recording.

    ``failed`` holds the first write error (the session decides: strict mode ends the
    session, best effort continues without recording)."""

    def __init__(self, writer: CastWriter, *, interval: float = 0.5) -> None:
        self.writer = writer
        self.interval = interval
        self.failed: BaseException | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def nudge(self) -> None:
        """Call after adding data: flushes early when much output is pending."""
        if self.writer.pending_bytes >= _FLUSH_EARLY_BYTES:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            if self.writer.pending_bytes:
                try:
                    await asyncio.to_thread(self.writer.flush)
                except OSError as err:
                    self.failed = err
                    return

    async def _stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def finish(self) -> Path:
        """Stop flushing and finish the recording (raises the write error, if any)."""
        await self._stop()
        if self.failed is not None:
            await asyncio.to_thread(self.writer.abort)
            raise self.failed
        return await asyncio.to_thread(self.writer.finish)

    async def abort(self) -> None:
        await self._stop()
        await asyncio.to_thread(self.writer.abort)
