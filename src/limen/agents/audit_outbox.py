"""Audit events of an agent started apart from auth: written locally first, then forwarded.

::

    emit(event) ──▶ FileLog DATA_DIR/log/outbox/<day>.jsonl (fsynced: durable when emit returns)
    forwarder   ──▶ woken by an emit, waits ``linger`` (0.2 s) for what follows, reads past
                    the cursor (outbox/cursor.json: file → byte offset), POSTs batches of at
                    most 100 to auth /v1/events, then advances the cursor; finished days are
                    deleted. Auth down: retried with backoff, nothing is lost.

The linger is about what a busy agent's forwarding costs: without it a db agent serving a thousand
queries a second forwarded each 10 ms batch of its audit buffer on its own (a cursor read and
write with an fsync, a POST through the tunnel, a write and an fsync at auth), several times
the CPU of the queries' relay (bench/RESULTS.md, the agent apart). Events are on disk here
before they are forwarded; the linger only delays when auth's log shows them.

Delivery is at least once (a crash between the POST and the cursor update resends a batch;
auth skips uids it has seen). Torn last lines left by a crash are skipped. Called by
``limen.cli.compose`` for separately run agents and proxies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from limen.aio.backoff import Backoff
from limen.aio.task_service import TaskService
from limen.auth.client import AuthClient
from limen.errors import BadParameter, LimenError
from limen.events.chain import CHAIN_KEY
from limen.events.event import AuditEvent, check_envelope
from limen.events.filelog import FileLog, day_file_name, day_files
from limen.files import private_dir, write_private

__all__ = ["AuditOutbox"]

log = logging.getLogger(__name__)

BATCH = 100
"""Events per POST at most: each costs the agent (reading its lines back) and auth (parsing
and writing them) about a millisecond of its event loop, during which the sessions it relays
wait. At 500 a POST kept a busy agent's sessions waiting long enough to triple the latency
p99 of ``pgbench`` through it (8 -> 20 ms); at 100 the linger still gathers them into
few POSTs."""
FORWARD_LINGER = 0.2
"""Seconds the forwarder, once woken, waits for more events before it forwards."""
ClientSource = Callable[[], Awaitable[AuthClient]]


class AuditOutbox(TaskService):
    """An ``Emitter`` that queues events on disk and forwards them to auth."""

    name = "audit outbox"

    def __init__(self, directory: Path, client: ClientSource, *,
                 linger: float = FORWARD_LINGER) -> None:
        self.directory = private_dir(directory)
        self.linger = linger
        self._log = FileLog(self.directory)
        self._client = client
        self._cursor_path = self.directory / "cursor.json"
        self._wake = asyncio.Event()
        self.forwarded = 0

    async def emit(self, event: AuditEvent) -> None:
        await self._log.emit(event)
        self._wake.set()

    async def emit_many(self, events: Sequence[AuditEvent]) -> None:
        """Queue ``events`` in order with one fsync per batch (an :class:`~limen.events.buffer.
        AuditBuffer`'s batch); returns once all are on disk."""
        await self._log.emit_many(events)
        self._wake.set()

    async def stop(self) -> None:
        await super().stop()
        with contextlib.suppress(LimenError, OSError):
            await self.flush()  # best effort: what is left stays queued for the next start
        await self._log.aclose()

    async def _run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while True:
            try:
                self._wake.clear()  # an emit during the flush wakes the next round
                await self.flush()
                backoff.reset()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await self._wake.wait()
                        await asyncio.sleep(self.linger)  # what follows goes in the same POST
            except (LimenError, OSError) as err:
                delay = backoff.next_delay()
                log.warning("audit outbox: cannot forward events to auth (%s); retry in "
                            "%.1fs", err, delay)
                await asyncio.sleep(delay)  # a retry delay, not synchronisation

    async def flush(self) -> int:
        """Forward everything queued now; returns how many events went."""
        sent = 0
        cursor = await asyncio.to_thread(self._read_cursor)
        today = day_file_name(datetime.now(UTC).date())
        for _day, path in await asyncio.to_thread(day_files, self.directory):
            offset = int(cursor.get(path.name, 0))
            while True:
                events, new_offset = await asyncio.to_thread(_read_batch, path, offset)
                if events:
                    client = await self._client()
                    await client.call("POST", "/v1/events", {"events": events})
                    sent += len(events)
                if new_offset != offset:
                    offset = cursor[path.name] = new_offset
                    await asyncio.to_thread(self._write_cursor, cursor)
                if len(events) < BATCH:
                    break
            if path.name != today and offset >= await asyncio.to_thread(_size, path):
                await asyncio.to_thread(path.unlink, missing_ok=True)
                cursor.pop(path.name, None)
                await asyncio.to_thread(self._write_cursor, cursor)
        self.forwarded += sent
        return sent

    def _read_cursor(self) -> dict[str, Any]:
        try:
            value = json.loads(self._cursor_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def _write_cursor(self, cursor: dict[str, Any]) -> None:
        write_private(self._cursor_path, json.dumps(cursor, sort_keys=True) + "\n")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_batch(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Up to BATCH whole lines from ``offset``; a line without its newline is not read yet."""
    events: list[dict[str, Any]] = []
    with open(path, "rb") as handle:
        handle.seek(offset)
        while len(events) < BATCH:
            line = handle.readline()
            if not line.endswith(b"\n"):
                break
            offset += len(line)
            try:
                events.append(_forwardable(line))
            except (LimenError, ValueError):  # UnicodeDecodeError and JSON's errors too
                log.warning("audit outbox: skipping a damaged line in %s", path)
    return events, offset


def _forwardable(line: bytes) -> dict[str, Any]:
    """The event of one outbox line as auth takes it: its envelope checked as auth checks it
    (a damaged line must not make auth refuse every later call), its chain member dropped
    (the outbox's own chain). Auth parses and scrubs it in full; a full parse here too cost
    16 µs an event against 7, on the thread that reads while the agent's sessions run."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise BadParameter("an audit event must be a JSON object")
    check_envelope(data)
    data.pop(CHAIN_KEY, None)
    return data
