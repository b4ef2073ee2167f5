"""search()/scan(): filters, ordering, limits, pruning by day, tolerance; parse_since()."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from limen.errors import BadParameter
from limen.events import FileLog, make_event, parse_since, scan, search

T0 = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Ten events over three days, written out of order (late forwarding)."""
    rows = [
        ("user.login", "alice", 0, True), ("session.start", "alice", 1, True),
        ("exec", "alice", 2, True), ("session.end", "alice", 3, True),
        ("user.login", "bob", 4, False), ("user.login", "bob", 5, True),
        ("db.session.start", "bob", 26, True), ("db.session.query", "bob", 27, True),
        ("role.created", None, 28, True), ("access.denied", "carol", 50, False),
    ]
    with FileLog(tmp_path, fsync=False) as log:
        for event_type, user, hours, success in reversed(rows):
            log.write(make_event(event_type, user=user, success=success, cluster="main",
                                 time=T0 + timedelta(hours=hours), hour=hours))
    return tmp_path


def hours(events: list[dict[str, object]]) -> list[object]:
    return [e["hour"] for e in events]


def test_everything_ordered_by_time(log_dir: Path) -> None:
    assert hours(search(log_dir)) == [0, 1, 2, 3, 4, 5, 26, 27, 28, 50]
    assert hours(search(log_dir, descending=True)) == [50, 28, 27, 26, 5, 4, 3, 2, 1, 0]


def test_filter_by_type(log_dir: Path) -> None:
    assert hours(search(log_dir, types=["user.login"])) == [0, 4, 5]
    assert hours(search(log_dir, types="exec")) == [2]
    assert hours(search(log_dir, types=["session.*"])) == [1, 3]
    assert hours(search(log_dir, types=["db.*", "access.denied"])) == [26, 27, 50]
    with pytest.raises(BadParameter, match="unknown audit event type"):
        search(log_dir, types=["user.logins"])
    with pytest.raises(BadParameter):
        search(log_dir, types=["nothing.*"])


def test_filter_by_user(log_dir: Path) -> None:
    assert hours(search(log_dir, user="bob")) == [4, 5, 26, 27]
    assert hours(search(log_dir, user="bob", types=["user.login"])) == [4, 5]
    assert search(log_dir, user="nobody") == []


def test_since_inclusive_until_exclusive(log_dir: Path) -> None:
    assert hours(search(log_dir, since=T0 + timedelta(hours=4))) == [4, 5, 26, 27, 28, 50]
    assert hours(search(log_dir, until=T0 + timedelta(hours=4))) == [0, 1, 2, 3]
    window = search(log_dir, since=T0 + timedelta(hours=3), until=T0 + timedelta(hours=27))
    assert hours(window) == [3, 4, 5, 26]
    with pytest.raises(BadParameter, match="timezone-aware"):
        search(log_dir, since=datetime(2026, 11, 24))


def test_only_files_of_the_range_are_read(log_dir: Path) -> None:
    assert scan(log_dir).files == 4  # 23rd to 26th
    result = scan(log_dir, since=datetime(2026, 11, 25, 1, 30, tzinfo=UTC))
    assert (result.files, hours(result.events)) == (2, [28, 50])
    result = scan(log_dir, until=datetime(2026, 11, 24, 0, 0, tzinfo=UTC))
    assert (result.files, hours(result.events)) == (1, [0, 1])  # until is exclusive


def test_limit(log_dir: Path) -> None:
    assert hours(search(log_dir, limit=3)) == [0, 1, 2]
    assert hours(search(log_dir, limit=3, descending=True)) == [50, 28, 27]
    assert hours(search(log_dir, types=["user.login"], limit=2)) == [0, 4]
    assert search(log_dir, limit=0) == []
    assert scan(log_dir, limit=2).files == 1  # stops at the first day
    with pytest.raises(BadParameter):
        search(log_dir, limit=-1)


def test_events_are_the_written_json(log_dir: Path) -> None:
    [event] = search(log_dir, types=["access.denied"])
    assert event["code"] == "L4000W"
    assert event["success"] is False
    assert event["user"] == "carol"
    assert event["time"] == "2026-11-26T00:00:00.000Z"


def test_corrupt_lines_are_counted_and_reported(
    log_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = log_dir / "2026-11-24.jsonl"
    with open(path, "ab") as f:
        f.write(b"not json\n[1, 2]\n\xff\xfe\n\n{\"event\": \"exec\"}\n")
        f.write(b'{"event":"exec","code":"L3000I","time":"yesterday"}\n')
    result = scan(log_dir)
    assert result.skipped == 5  # the blank line is not damage
    assert hours(result.events) == [0, 1, 2, 3, 4, 5, 26, 27, 28, 50]
    with caplog.at_level(logging.WARNING, logger="limen.events.search"):
        assert len(search(log_dir)) == 10
    assert "skipped 5 torn or corrupt line(s)" in caplog.text


def test_missing_directory_is_empty(tmp_path: Path) -> None:
    assert search(tmp_path / "none") == []
    assert scan(tmp_path / "none").files == 0


NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", NOW - timedelta(minutes=30)),
    ("1h", NOW - timedelta(hours=1)),
    ("2d", NOW - timedelta(days=2)),
    ("1w", NOW - timedelta(weeks=1)),
    ("1h30m", NOW - timedelta(hours=1, minutes=30)),
    ("1.5h", NOW - timedelta(hours=1, minutes=30)),
    ("90s", NOW - timedelta(seconds=90)),
    (" 15m ", NOW - timedelta(minutes=15)),
    ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
    ("2026-11-20T08:30:00", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
    ("2026-11-20T08:30:00Z", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
    ("2026-11-20T10:30:00+02:00", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
])
def test_parse_since(text: str, expected: datetime) -> None:
    parsed = parse_since(text, now=NOW)
    assert parsed == expected
    assert parsed.tzinfo is UTC


def test_parse_since_defaults_to_now() -> None:
    before = datetime.now(UTC)
    parsed = parse_since("1h")
    after = datetime.now(UTC)
    assert before - timedelta(hours=1) <= parsed <= after - timedelta(hours=1)


@pytest.mark.parametrize("text", ["", "1", "h", "1y", "-1h", "yesterday", "2026-13-01"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(BadParameter, match="invalid time"):
        parse_since(text, now=NOW)


def test_parse_since_needs_aware_now() -> None:
    with pytest.raises(BadParameter):
        parse_since("1h", now=datetime(2026, 11, 24))


def test_parse_since_feeds_search(log_dir: Path) -> None:
    now = datetime(2026, 11, 26, 0, 0, tzinfo=timezone(timedelta(hours=1)))  # 25th 23:00Z
    assert hours(search(log_dir, since=parse_since("1d", now=now))) == [26, 27, 28, 50]
