"""FileLog: permissions, atomic lines across threads and processes, fsync policy, torn lines,
rotation by day."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from limen.events import Emitter, FileLog, day_files, make_event, scan
from limen.events import filelog as filelog_module

DAY = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def lines(path: Path) -> list[str]:
    return path.read_text().split("\n")


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


class FakeClock:
    """An injectable clock: events are stamped with ``clock()`` via ``make_event(time=...)``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_022")
async def test_permissions(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "events"
    with FileLog(directory, fsync=False) as log:
        await log.emit(make_event("exec", time=DAY))
    assert mode(directory) == 0o700
    assert mode(directory / "2026-11-24.jsonl") == 0o600


@pytest.mark.usefixtures("umask_022")
def test_existing_loose_permissions_are_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "events"
    directory.mkdir(mode=0o755)
    (directory / "2026-11-24.jsonl").write_text("")
    (directory / "2026-11-24.jsonl").chmod(0o644)
    with FileLog(directory, fsync=False) as log:
        log.write(make_event("exec", time=DAY))
    assert mode(directory) == 0o700
    assert mode(directory / "2026-11-24.jsonl") == 0o600


async def test_every_event_is_one_line(tmp_path: Path) -> None:
    log = FileLog(tmp_path, fsync=False)
    assert isinstance(log, Emitter)
    for i in range(3):
        await log.emit(make_event("exec", time=DAY, n=i, command="a\nb"))
    await log.aclose()
    content = (tmp_path / "2026-11-24.jsonl").read_text()
    assert content.endswith("\n")
    assert [json.loads(line)["n"] for line in content.splitlines()] == [0, 1, 2]


async def test_closed_log_refuses_events(tmp_path: Path) -> None:
    log = FileLog(tmp_path, fsync=False)
    await log.aclose()
    log.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await log.emit(make_event("exec"))


def test_close_flushes_queued_events(tmp_path: Path) -> None:
    log = FileLog(tmp_path, fsync=False)
    pending = [log._submit(make_event("exec", time=DAY, n=i)) for i in range(200)]
    log.close()
    assert all(f.done() and f.exception() is None for f in pending)
    assert len(scan(tmp_path).events) == 200


def test_threads_never_interleave(tmp_path: Path) -> None:
    shared = FileLog(tmp_path, fsync=False)
    own = [FileLog(tmp_path, fsync=False) for _ in range(2)]
    logs = [shared, shared, *own]  # one writer thread shared, plus two other instances
    big = "x" * 9000  # lines far over PIPE_BUF

    def writer(index: int) -> None:
        for n in range(250):
            logs[index].write(make_event("exec", time=DAY, user=f"t{index}", n=n, command=big))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(logs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in {*logs}:
        log.close()
    rows = [json.loads(line) for line in (tmp_path / "2026-11-24.jsonl").read_text().splitlines()]
    assert Counter(r["user"] for r in rows) == {f"t{i}": 250 for i in range(len(logs))}
    assert all(r["command"] == big for r in rows)


CHILD = r"""
import asyncio, sys, threading
from datetime import datetime, UTC
from limen.events import FileLog, make_event

directory, tag = sys.argv[1], sys.argv[2]
when = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
big = "y" * 6000
async_log, thread_log = FileLog(directory), FileLog(directory)
print("ready", flush=True)
sys.stdin.readline()

def from_thread():
    for n in range(1000, 2000):
        thread_log.write(make_event("exec", time=when, user=tag, n=n, command=big))

async def main():
    thread = threading.Thread(target=from_thread)
    thread.start()
    await asyncio.gather(*(
        async_log.emit(make_event("exec", time=when, user=tag, n=n, command=big))
        for n in range(1000)
    ))
    await asyncio.to_thread(thread.join)

asyncio.run(main())
async_log.close()
thread_log.close()
print("done", flush=True)
"""


def test_two_processes_write_2000_events_each(tmp_path: Path) -> None:
    directory = tmp_path / "events"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(directory), tag],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for tag in ("p1", "p2")
    ]
    try:
        for child in children:  # barrier: both are ready before either starts writing
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            out, _ = child.communicate(timeout=90)
            assert child.returncode == 0
            assert out == "done\n"
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    raw = (directory / "2026-11-24.jsonl").read_text()
    assert raw.endswith("\n")
    rows = [json.loads(line) for line in raw.splitlines()]  # every line parses
    assert len(rows) == 4000
    assert Counter((r["user"], r["n"]) for r in rows) == {
        (tag, n): 1 for tag in ("p1", "p2") for n in range(2000)
    }
    result = scan(directory)
    assert (len(result.events), result.skipped) == (4000, 0)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.001)  # polling a condition with a deadline, not timing


async def test_group_commit_every_event_durable_on_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, entered = threading.Event(), threading.Event()
    synced_sizes: list[int] = []
    real_fsync = os.fsync

    def gated_fsync(fd: int) -> None:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            real_fsync(fd)  # the directory, when the day file is created
            return
        entered.set()
        assert gate.wait(10)
        synced_sizes.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(filelog_module.os, "fsync", gated_fsync)
    log = FileLog(tmp_path)  # fsync on
    path = tmp_path / "2026-11-24.jsonl"
    first = asyncio.create_task(log.emit(make_event("exec", time=DAY, n=0)))
    await asyncio.to_thread(entered.wait, 5)  # writer is inside the first fsync
    rest = [asyncio.create_task(log.emit(make_event("exec", time=DAY, n=i)))
            for i in range(1, 100)]
    # the 99 emits of one loop turn reach the writer as one hand-over
    await asyncio.to_thread(wait_until, lambda: log._queue.qsize() == 1)
    assert not first.done()  # not acknowledged before its fsync completes
    gate.set()
    await asyncio.gather(first, *rest)
    await log.aclose()
    # one fsync for the first event, one for the 99 queued behind it, each after the write
    assert len(synced_sizes) == 2
    assert synced_sizes[-1] == path.stat().st_size
    assert len(path.read_text().splitlines()) == 100


async def test_fsync_off_never_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(filelog_module.os, "fsync", calls.append)
    log = FileLog(tmp_path, fsync=False)
    await asyncio.gather(*(log.emit(make_event("exec")) for _ in range(10)))
    await log.aclose()
    assert calls == []


async def test_fsync_failure_is_raised_to_the_emitter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    log = FileLog(tmp_path)
    monkeypatch.setattr(filelog_module.os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output"):
        await log.emit(make_event("exec", time=DAY))
    await log.aclose()


async def test_torn_last_line_is_skipped_and_next_events_parse(tmp_path: Path) -> None:
    path = tmp_path / "2026-11-24.jsonl"
    with FileLog(tmp_path, fsync=False) as log:
        await log.emit(make_event("exec", time=DAY, n=1))
    whole = make_event("exec", time=DAY, n=2).to_json()
    append(path, whole[: len(whole) // 2])  # an unclean shutdown: half a line, no newline

    before = scan(tmp_path)
    assert [e["n"] for e in before.events] == [1]
    assert before.skipped == 1

    with FileLog(tmp_path, fsync=False) as log:  # reopen after the crash
        await log.emit(make_event("exec", time=DAY, n=3))
        await log.emit(make_event("exec", time=DAY, n=4))
    text = lines(path)
    assert text[1] == whole[: len(whole) // 2]  # the fragment stays a line of its own
    after = scan(tmp_path)
    assert [e["n"] for e in after.events] == [1, 3, 4]
    assert (after.skipped, after.recovered) == (1, 0)


async def test_torn_line_from_another_writer_while_open(tmp_path: Path) -> None:
    with FileLog(tmp_path, fsync=False) as log:
        await log.emit(make_event("exec", time=DAY, n=1))  # the file is now open
        # another process dies mid-write
        append(tmp_path / "2026-11-24.jsonl", '{"event":"exec","code":"L3000I","ti')
        await log.emit(make_event("exec", time=DAY, n=2))
    result = scan(tmp_path)
    assert [e["n"] for e in result.events] == [1, 2]
    assert (result.skipped, result.recovered) == (1, 0)


async def test_event_glued_to_a_torn_fragment_is_recovered(tmp_path: Path) -> None:
    # FileLog never does this (it checks the tail under its lock), but a writer that does not
    # take the lock (an older build, a foreign tool) may append right after a fragment: the
    # reader still finds the whole event.
    fragment = make_event("user.login", time=DAY, user="x", nested={"event": "y"}).to_json()
    glued = make_event("exec", time=DAY, n=7, nested={"event": "z"}).to_json()
    (tmp_path / "2026-11-24.jsonl").write_text(fragment[:-25] + glued + "\n")
    result = scan(tmp_path)
    assert [e["n"] for e in result.events] == [7]
    assert (result.skipped, result.recovered) == (1, 1)


def test_rotation_by_day_with_injectable_clock(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 24, 23, 59, 59, 500000, tzinfo=UTC))
    with FileLog(tmp_path, fsync=False) as log:
        log.write(make_event("exec", time=clock(), n=1))
        clock.advance(timedelta(seconds=1))  # past midnight UTC
        log.write(make_event("exec", time=clock(), n=2))
        clock.advance(timedelta(days=1))
        log.write(make_event("exec", time=clock(), n=3))
        # an event forwarded late keeps its time and lands in its own day
        log.write(make_event("exec", time=datetime(2026, 11, 24, 8, tzinfo=UTC), n=4))
    assert [p.name for _, p in day_files(tmp_path)] == [
        "2026-11-24.jsonl", "2026-11-25.jsonl", "2026-11-26.jsonl",
    ]

    def ns(name: str) -> list[int]:
        return [json.loads(x)["n"] for x in (tmp_path / name).read_text().splitlines()]

    assert ns("2026-11-24.jsonl") == [1, 4]
    assert ns("2026-11-25.jsonl") == [2]
    assert ns("2026-11-26.jsonl") == [3]


def test_file_removed_while_open_is_recreated(tmp_path: Path) -> None:
    path = tmp_path / "2026-11-24.jsonl"
    with FileLog(tmp_path, fsync=False) as log:
        log.write(make_event("exec", time=DAY, n=1))
        path.rename(tmp_path / "archived.jsonl")
        log.write(make_event("exec", time=DAY, n=2))
        path.unlink()
        log.write(make_event("exec", time=DAY, n=3))
    assert [json.loads(x)["n"] for x in path.read_text().splitlines()] == [3]
    assert mode(path) == 0o600
    assert [json.loads(x)["n"] for x in (tmp_path / "archived.jsonl").read_text().splitlines()
            ] == [1]


def test_rotation_uses_the_utc_date(tmp_path: Path) -> None:
    local = datetime(2026, 11, 25, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    with FileLog(tmp_path, fsync=False) as log:
        log.write(make_event("exec", time=local))
    assert [p.name for _, p in day_files(tmp_path)] == ["2026-11-24.jsonl"]


def test_day_files_ignores_other_names(tmp_path: Path) -> None:
    for name in ("2026-11-24.jsonl", "notes.txt", "2026-13-01.jsonl", "2026-11-2.jsonl"):
        (tmp_path / name).write_text("")
    (tmp_path / "2026-11-25.jsonl").mkdir()
    assert [p.name for _, p in day_files(tmp_path)] == ["2026-11-24.jsonl"]
    assert day_files(tmp_path / "missing") == []
