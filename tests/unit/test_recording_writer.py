"""The live writer (.part, flush, atomic finish), crash recovery and the local sink."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from limen.errors import BadParameter
from limen.recording import (
    CastHeader,
    CastWriter,
    LocalDirectorySink,
    RecordingTask,
    complete_part,
    read_cast,
    recover_recordings,
)

HEADER = CastHeader(100, 30, 1_700_000_000, "s1", {"TERM": "xterm"},
                    {"session_id": "s1", "user": "alice", "login": "bob"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def test_writer_records_output_resize_and_finishes_atomically(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = CastWriter.create(tmp_path / "sessions", "s1", HEADER, clock=clock)
    part = tmp_path / "sessions" / "s1.cast.part"
    assert part.exists()
    assert stat.S_IMODE(part.stat().st_mode) == 0o600
    clock.now = 10.5
    writer.output(b"hello\r\n")
    writer.input(b"secret\r")  # input recording is off by default
    clock.now = 11.0
    writer.resize(120, 40)
    writer.flush()
    clock.now = 12.25
    writer.output(b"bye")
    final = writer.finish()
    assert final == tmp_path / "sessions" / "s1.cast"
    assert not part.exists()
    cast = read_cast(final)
    assert [(e.time, e.code, e.data) for e in cast.events] == [
        (0.5, "o", "hello\r\n"), (1.0, "r", "120x40"), (2.25, "o", "bye")]
    assert cast.header == HEADER
    assert not cast.incomplete


def test_input_is_recorded_only_when_asked(tmp_path: Path) -> None:
    writer = CastWriter.create(tmp_path, "s2", HEADER, record_input=True)
    writer.input(b"ls\r")
    cast = read_cast(writer.finish())
    assert [(e.code, e.data) for e in cast.events] == [("i", "ls\r")]


def test_flush_writes_pending_events_to_the_part_file(tmp_path: Path) -> None:
    writer = CastWriter.create(tmp_path, "s3", HEADER)
    writer.output(b"abc")
    assert writer.pending_bytes == 3
    writer.flush()
    assert writer.pending_bytes == 0
    assert read_cast(tmp_path / "s3.cast.part").output() == b"abc"
    writer.abort()
    assert writer.closed
    assert (tmp_path / "s3.cast.part").exists()


def test_session_ids_are_file_names_only(tmp_path: Path) -> None:
    for bad in ("../x", "a/b", "", ".hidden", "a" * 200):
        with pytest.raises(BadParameter):
            CastWriter.create(tmp_path, bad, HEADER)


def test_an_existing_part_is_never_overwritten(tmp_path: Path) -> None:
    CastWriter.create(tmp_path, "dup", HEADER).abort()
    with pytest.raises(FileExistsError):
        CastWriter.create(tmp_path, "dup", HEADER)


async def test_recording_task_flushes_in_the_background(tmp_path: Path) -> None:
    writer = CastWriter.create(tmp_path, "bg", HEADER)
    task = RecordingTask(writer, interval=0.01)
    task.start()
    writer.output(b"x" * 10)
    async with asyncio.timeout(5):
        # the file is written by a worker thread: no event to await, poll with a deadline
        while b'"x' not in (tmp_path / "bg.cast.part").read_bytes():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    writer.output(b"y")
    path = await task.finish()
    assert read_cast(path).output() == b"x" * 10 + b"y"


def test_complete_part_truncates_a_torn_line_and_marks_incomplete(tmp_path: Path) -> None:
    writer = CastWriter.create(tmp_path, "crash", HEADER)
    writer.output(b"before the crash\r\n")
    writer.flush()
    writer.abort()
    part = tmp_path / "crash.cast.part"
    with open(part, "ab") as handle:
        handle.write(b'[3.0, "o", "half a li')
    final = complete_part(part)
    assert not part.exists()
    assert final == tmp_path / "crash.cast"
    cast = read_cast(final)
    assert cast.header.incomplete
    assert not cast.torn
    assert cast.output() == b"before the crash\r\n"
    assert cast.header.limen["user"] == "alice"


def test_complete_part_with_a_cut_header_keeps_an_empty_playable_file(tmp_path: Path) -> None:
    part = tmp_path / "cut.cast.part"
    part.write_bytes(b'{"version": 2, "wid')
    cast = read_cast(complete_part(part))
    assert cast.header.incomplete
    assert cast.events == ()
    assert cast.header.limen["session_id"] == "cut"


async def test_recover_completes_parts_and_uploads_everything(tmp_path: Path) -> None:
    sessions, store = tmp_path / "sessions", tmp_path / "recordings"
    crashed = CastWriter.create(sessions, "crashed", HEADER)
    crashed.output(b"partial")
    crashed.flush()
    crashed.abort()
    done = CastWriter.create(sessions, "finished", HEADER)
    done.output(b"whole")
    done.finish()
    sink = LocalDirectorySink(store)
    assert await recover_recordings(sessions, sink) == ["crashed", "finished"]
    assert list(sessions.iterdir()) == []
    crashed_cast = read_cast(store / "crashed.cast")
    assert crashed_cast.incomplete
    assert crashed_cast.output() == b"partial"
    meta = json.loads((store / "crashed.json").read_text())
    assert meta["incomplete"] is True
    assert meta["user"] == "alice"
    assert json.loads((store / "finished.json").read_text())["incomplete"] is False
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o700
    assert await recover_recordings(tmp_path / "missing", sink) == []


async def test_local_sink_moves_the_file_and_writes_the_sidecar(tmp_path: Path) -> None:
    writer = CastWriter.create(tmp_path / "s", "abc", HEADER)
    path = writer.finish()
    sink = LocalDirectorySink(tmp_path / "rec")
    await sink.upload("abc", path, {"user": "alice", "incomplete": False})
    assert not path.exists()
    assert read_cast(tmp_path / "rec" / "abc.cast").header == HEADER
    assert json.loads((tmp_path / "rec" / "abc.json").read_text())["user"] == "alice"
    with pytest.raises(BadParameter):
        await sink.upload("../evil", path, {})
