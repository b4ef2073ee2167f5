"""AuditOutbox (``limen.agents.audit_outbox``): the local spool of a separately run agent's
audit events and their forwarding to auth, with a fake auth client (a unit test of the outbox;
the real auth side is exercised in ``test_auth_api_agents`` and ``test_agents_apart``)."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from limen.agents.audit_outbox import BATCH, AuditOutbox
from limen.auth.client import AuthClient
from limen.errors import ConnectionProblem
from limen.events.event import AuditEvent, make_event
from limen.events.filelog import day_file_name

DEADLINE = 10.0


class FakeAuth:
    """Stands in for ``AuthClient``: records ``POST /v1/events`` bodies; the first ``fail``
    calls raise ``ConnectionProblem`` (auth down); with ``lose_ack`` the call is recorded but
    the answer is lost (auth stored the batch, the agent never heard back)."""

    def __init__(self, fail: int = 0, *, lose_ack: int = 0) -> None:
        self.fail = fail
        self.lose_ack = lose_ack
        self.calls: list[tuple[str, str, list[dict[str, Any]]]] = []
        self.attempts = 0

    async def call(self, method: str, path: str,
                   body: Mapping[str, Any] | None = None) -> dict[str, int]:
        self.attempts += 1
        if self.fail > 0:
            self.fail -= 1
            raise ConnectionProblem("cannot reach auth (fake)")
        assert body is not None
        events = list(body["events"])
        self.calls.append((method, path, events))
        if self.lose_ack > 0:
            self.lose_ack -= 1
            raise ConnectionProblem("connection reset after the request (fake)")
        return {"accepted": len(events)}

    @property
    def uids(self) -> list[str]:
        return [event["uid"] for _, _, events in self.calls for event in events]

    def source(self) -> Callable[[], Any]:
        async def get() -> AuthClient:
            return cast(AuthClient, self)
        return get


def _event(n: int, *, when: datetime | None = None) -> AuditEvent:
    return make_event("exec", cluster="unit", user="alice", time=when, uid=f"uid-{n:05d}",
                      command=f"echo {n}", login="root")


def _today_file(directory: Path) -> Path:
    return directory / day_file_name(datetime.now(UTC).date())


def _cursor(directory: Path) -> dict[str, int]:
    value: dict[str, int] = json.loads((directory / "cursor.json").read_text())
    return value


def _append(path: Path, data: bytes) -> None:
    """What another writer (or a crash) leaves at the end of a day file."""
    with open(path, "ab") as handle:
        handle.write(data)


async def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _outbox(directory: Path, fake: FakeAuth) -> AuditOutbox:
    return AuditOutbox(directory, fake.source())


async def test_emit_then_flush_forwards_once_and_advances_the_cursor(tmp_path: Path) -> None:
    fake = FakeAuth()
    outbox = await _outbox(tmp_path / "outbox", fake)
    try:
        events = [_event(n) for n in range(3)]
        for event in events:
            await outbox.emit(event)
        assert await outbox.flush() == 3
        assert [(m, p) for m, p, _ in fake.calls] == [("POST", "/v1/events")]
        assert fake.calls[0][2] == [event.to_dict() for event in events]
        day = _today_file(outbox.directory)
        assert _cursor(outbox.directory) == {day.name: day.stat().st_size}
        assert await outbox.flush() == 0  # nothing new: no second POST
        assert len(fake.calls) == 1
        await outbox.emit(_event(3))
        assert await outbox.flush() == 1
        assert fake.uids[-1] == "uid-00003"
        assert outbox.forwarded == 4
    finally:
        await outbox.stop()


async def test_auth_down_loses_nothing_and_delivers_when_back(tmp_path: Path) -> None:
    fake = FakeAuth(fail=3)
    outbox = await _outbox(tmp_path / "outbox", fake)
    try:
        await outbox.emit(_event(1))
        await outbox.emit(_event(2))
        for _ in range(3):
            with pytest.raises(ConnectionProblem):
                await outbox.flush()
            assert not (outbox.directory / "cursor.json").exists()
        assert await outbox.flush() == 2
        assert fake.uids == ["uid-00001", "uid-00002"]
    finally:
        await outbox.stop()


async def test_background_forwarder_retries_until_auth_answers(tmp_path: Path) -> None:
    fake = FakeAuth(fail=1)
    outbox = await _outbox(tmp_path / "outbox", fake)
    await outbox.start()
    try:
        await outbox.emit(_event(1))
        await _wait(lambda: fake.uids == ["uid-00001"], "the event after one failure")
        assert fake.attempts >= 2
        await outbox.emit(_event(2))  # wakes the forwarder: no 5 s idle wait
        await _wait(lambda: fake.uids == ["uid-00001", "uid-00002"], "the second event")
    finally:
        await outbox.stop()


async def test_a_burst_of_batches_is_forwarded_in_one_call(tmp_path: Path) -> None:
    fake = FakeAuth()
    outbox = AuditOutbox(tmp_path / "outbox", fake.source(), linger=0.5)
    await outbox.start()
    try:
        await outbox.emit_many([_event(n) for n in range(10)])
        await _wait(lambda: len(fake.uids) == 10, "the first batch")
        for first in range(10, 50, 10):  # what a busy audit buffer hands over, batch by batch
            await outbox.emit_many([_event(n) for n in range(first, first + 10)])
        await _wait(lambda: len(fake.uids) == 50, "the burst")
        assert [len(events) for _, _, events in fake.calls] == [10, 40]  # one POST for four
    finally:
        await outbox.stop()


async def test_restart_resends_nothing_acknowledged_and_sends_the_rest(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"
    first = FakeAuth()
    outbox = await _outbox(directory, first)
    for n in range(3):
        await outbox.emit(_event(n))
    assert await outbox.flush() == 3
    first.fail = 1_000  # auth goes away: these two stay queued, stop() cannot deliver them
    await outbox.emit(_event(3))
    await outbox.emit(_event(4))
    await outbox.stop()
    assert first.uids == ["uid-00000", "uid-00001", "uid-00002"]

    second = FakeAuth()
    again = await _outbox(directory, second)
    try:
        assert await again.flush() == 2
        assert second.uids == ["uid-00003", "uid-00004"]
    finally:
        await again.stop()


async def test_a_lost_acknowledgement_resends_the_batch_at_least_once(tmp_path: Path) -> None:
    fake = FakeAuth(lose_ack=1)
    outbox = await _outbox(tmp_path / "outbox", fake)
    try:
        await outbox.emit(_event(1))
        with pytest.raises(ConnectionProblem):
            await outbox.flush()
        assert await outbox.flush() == 1
        assert fake.uids == ["uid-00001", "uid-00001"]  # auth drops the duplicate uid
        assert await outbox.flush() == 0
    finally:
        await outbox.stop()


async def test_batches_hold_at_most_100_events_in_order(tmp_path: Path) -> None:
    fake = FakeAuth()
    outbox = await _outbox(tmp_path / "outbox", fake)
    try:
        total = 2 * BATCH + 1
        await asyncio.gather(*(outbox.emit(_event(n)) for n in range(total)))
        assert await outbox.flush() == total
        assert [len(events) for _, _, events in fake.calls] == [BATCH, BATCH, 1]
        assert sorted(fake.uids) == [f"uid-{n:05d}" for n in range(total)]
        assert len(set(fake.uids)) == total

        # exactly one full batch left: one POST, no empty one after it
        fake.calls.clear()
        await asyncio.gather(*(outbox.emit(_event(n)) for n in range(total, total + BATCH)))
        assert await outbox.flush() == BATCH
        assert [len(events) for _, _, events in fake.calls] == [BATCH]
    finally:
        await outbox.stop()
    assert BATCH == 100


async def test_a_torn_last_line_waits_until_it_is_complete(tmp_path: Path) -> None:
    fake = FakeAuth()
    outbox = await _outbox(tmp_path / "outbox", fake)
    try:
        await outbox.emit(_event(1))
        day = _today_file(outbox.directory)
        whole = day.stat().st_size
        line = (_event(2).to_json() + "\n").encode()
        _append(day, line[:40])  # a write in progress: no newline yet
        assert await outbox.flush() == 1
        assert fake.uids == ["uid-00001"]
        assert _cursor(outbox.directory) == {day.name: whole}
        _append(day, line[40:])
        assert await outbox.flush() == 1
        assert fake.uids == ["uid-00001", "uid-00002"]
        assert _cursor(outbox.directory) == {day.name: day.stat().st_size}
    finally:
        await outbox.stop()


async def test_a_fragment_left_by_a_crash_is_skipped_and_later_events_go(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"
    directory.mkdir(mode=0o700)
    day = _today_file(directory)
    day.write_bytes((_event(1).to_json() + "\n").encode() + b'{"event":"exec","co')
    day.chmod(0o600)
    fake = FakeAuth()
    outbox = await _outbox(directory, fake)
    try:
        await outbox.emit(_event(2))  # the writer starts it on a line of its own
        assert await outbox.flush() == 2
        assert fake.uids == ["uid-00001", "uid-00002"]
    finally:
        await outbox.stop()


async def test_damaged_lines_are_skipped_and_the_rest_delivered(tmp_path: Path) -> None:
    fake = FakeAuth()
    outbox = await _outbox(tmp_path / "outbox", fake)
    try:
        await outbox.emit(_event(1))
        day = _today_file(outbox.directory)
        good = _event(9).to_dict()
        envelopes = [{**good, "code": "nope"}, {**good, "event": "user.login"},
                     {**good, "success": False}, {**good, "time": "yesterday"},
                     {k: v for k, v in good.items() if k != "uid"}]
        _append(day, b"{not json at all\n"
                     b'{"valid": "json", "but": "not an event"}\n'
                     b"\xff\xfe not utf-8\n"
                     b"[1, 2, 3]\n"
                     + b"".join(json.dumps(e).encode() + b"\n" for e in envelopes))
        await outbox.emit(_event(2))
        assert await outbox.flush() == 2
        assert fake.uids == ["uid-00001", "uid-00002"]  # nothing auth would refuse is sent
        sent = [event for _, _, events in fake.calls for event in events]
        assert all("chain" not in event for event in sent)  # the outbox's own chain stays
        assert _cursor(outbox.directory) == {day.name: day.stat().st_size}
    finally:
        await outbox.stop()


async def test_an_old_day_is_deleted_once_forwarded_and_today_is_kept(tmp_path: Path) -> None:
    fake = FakeAuth(fail=1)
    outbox = await _outbox(tmp_path / "outbox", fake)
    try:
        old_time = datetime.now(UTC) - timedelta(days=2)
        await outbox.emit(_event(1, when=old_time))
        await outbox.emit(_event(2))
        old = outbox.directory / day_file_name(old_time.date())
        today = _today_file(outbox.directory)
        assert old.is_file()
        assert today.is_file()

        with pytest.raises(ConnectionProblem):
            await outbox.flush()
        assert old.is_file()  # not forwarded: kept

        assert await outbox.flush() == 2
        assert fake.uids == ["uid-00001", "uid-00002"]  # oldest day first
        assert not old.exists()
        assert today.is_file()
        assert _cursor(outbox.directory) == {today.name: today.stat().st_size}
    finally:
        await outbox.stop()


async def test_an_old_day_with_a_torn_tail_is_kept(tmp_path: Path) -> None:
    fake = FakeAuth()
    outbox = await _outbox(tmp_path / "outbox", fake)
    try:
        old_time = datetime.now(UTC) - timedelta(days=2)
        await outbox.emit(_event(1, when=old_time))
        old = outbox.directory / day_file_name(old_time.date())
        _append(old, b'{"event":"ex')
        assert await outbox.flush() == 1
        assert old.is_file()  # an unfinished line: not everything was read
    finally:
        await outbox.stop()


async def test_stop_forwards_what_is_queued(tmp_path: Path) -> None:
    fake = FakeAuth()
    outbox = await _outbox(tmp_path / "outbox", fake)
    await outbox.emit(_event(1))
    await outbox.stop()
    assert fake.uids == ["uid-00001"]


async def test_files_are_private(tmp_path: Path) -> None:
    loose = tmp_path / "data" / "log" / "outbox"
    loose.parent.mkdir(parents=True, mode=0o755)
    loose.parent.chmod(0o755)
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    fake = FakeAuth()
    outbox = await _outbox(loose, fake)
    try:
        await outbox.emit(_event(1))
        await outbox.flush()
        assert stat.S_IMODE(loose.stat().st_mode) == 0o700
        assert stat.S_IMODE(_today_file(loose).stat().st_mode) == 0o600
        assert stat.S_IMODE((loose / "cursor.json").stat().st_mode) == 0o600
    finally:
        await outbox.stop()

    fresh = tmp_path / "fresh" / "log" / "outbox"
    created = await _outbox(fresh, FakeAuth())
    try:
        for directory in (fresh, fresh.parent, fresh.parent.parent):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    finally:
        await created.stop()
