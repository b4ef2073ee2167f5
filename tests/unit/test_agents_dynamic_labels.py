"""DynamicLabels (``limen.agents.node.dynamic_labels``): command-generated node labels, run
with real tiny commands (``/bin/echo``, ``/bin/false``, ``sh -c``)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from limen.agents.node import dynamic_labels
from limen.agents.node.dynamic_labels import FAILED_VALUE, DynamicLabels
from limen.config import LabelCommand

DEADLINE = 10.0
HOUR = 3600.0


def _cmd(name: str, *argv: str, period: float = HOUR) -> LabelCommand:
    return LabelCommand(name=name, command=tuple(argv), period_seconds=period)


def _sh(name: str, script: str, period: float = HOUR) -> LabelCommand:
    return _cmd(name, "/bin/sh", "-c", script, period=period)


async def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_values_are_unknown_before_start_and_real_after() -> None:
    labels = DynamicLabels({"env": "dev"}, [_cmd("greeting", "/bin/echo", "hello")])
    assert labels.current() == {"env": "dev", "greeting": FAILED_VALUE}
    await labels.start()
    try:
        assert labels.current() == {"env": "dev", "greeting": "hello"}
    finally:
        await labels.stop()


async def test_output_is_trimmed_and_cut_to_256_characters() -> None:
    labels = DynamicLabels({}, [
        _sh("spaced", "printf '  \\n\\t spaced out value \\n\\n'"),
        _sh("long", "head -c 1000 /dev/zero | tr '\\0' x"),
        _sh("inner", "printf 'line one\\nline two\\n'"),
    ])
    await labels.start()
    try:
        values = labels.current()
    finally:
        await labels.stop()
    assert values["spaced"] == "spaced out value"
    assert values["long"] == "x" * 256
    assert values["inner"] == "line one\nline two"  # only the ends are trimmed


@pytest.mark.parametrize("command", [
    _cmd("x", "/bin/false"),
    _sh("x", "echo partial output; exit 3"),
    _sh("x", "exit 0"),
    _sh("x", "printf '   \\n\\n'"),
    _cmd("x", "/nonexistent/limen-label-command"),
    _sh("x", "echo only on stderr >&2"),
], ids=["false", "nonzero-with-output", "no-output", "blank-output", "missing", "stderr-only"])
async def test_failure_or_empty_output_gives_the_unknown_value(command: LabelCommand) -> None:
    labels = DynamicLabels({}, [command])
    assert await labels.refresh(command) == FAILED_VALUE
    assert labels.current() == {"x": FAILED_VALUE}


async def test_a_command_that_outlives_its_limit_is_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dynamic_labels, "COMMAND_TIMEOUT", 0.3)
    pid_file = tmp_path / "pid"
    command = _sh("slow", f"echo $$ > {pid_file}; exec sleep 30")
    labels = DynamicLabels({}, [command])
    started = time.monotonic()
    assert await labels.refresh(command) == FAILED_VALUE
    assert time.monotonic() - started < 5.0
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left running


async def test_a_period_shorter_than_the_limit_bounds_the_run() -> None:
    command = _sh("slow", "exec sleep 30", period=0.2)
    labels = DynamicLabels({}, [command])
    started = time.monotonic()
    assert await labels.refresh(command) == FAILED_VALUE
    assert time.monotonic() - started < 5.0


async def test_static_labels_win_over_dynamic_ones() -> None:
    labels = DynamicLabels({"kernel": "pinned", "env": "prod"},
                           [_cmd("kernel", "/bin/echo", "dynamic"),
                            _cmd("arch", "/bin/echo", "x86_64")])
    await labels.start()
    try:
        assert labels.current() == {"kernel": "pinned", "env": "prod", "arch": "x86_64"}
    finally:
        await labels.stop()


async def test_commands_run_again_every_period(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    command = _sh("runs", f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n + 1)); "
                          f"echo $n > {counter}; echo run-$n", period=0.05)
    labels = DynamicLabels({}, [command])
    await labels.start()
    try:
        assert labels.current()["runs"] == "run-1"  # start ran it once, before returning
        await _wait(lambda: labels.current()["runs"] not in ("run-1", FAILED_VALUE),
                    "a refresh")
        assert int(labels.current()["runs"].removeprefix("run-")) >= 2
    finally:
        await labels.stop()


async def test_a_value_recovers_after_a_failure_and_is_never_stale(tmp_path: Path) -> None:
    source = tmp_path / "value"
    labels = DynamicLabels({}, [_sh("state", f"cat {source}", period=0.05)])
    await labels.start()
    try:
        assert labels.current()["state"] == FAILED_VALUE  # no file yet: cat fails
        source.write_text("ready\n")
        await _wait(lambda: labels.current()["state"] == "ready", "the recovered value")
        source.unlink()
        await _wait(lambda: labels.current()["state"] == FAILED_VALUE, "the failure again")
    finally:
        await labels.stop()


async def test_stop_ends_the_refresh_tasks() -> None:
    labels = DynamicLabels({}, [_cmd("a", "/bin/echo", "a", period=0.05),
                                _cmd("b", "/bin/echo", "b", period=0.05)])
    await labels.start()
    tasks = list(labels._tasks)
    assert len(tasks) == 2
    await labels.stop()
    assert all(task.done() for task in tasks)
    assert labels._tasks == []
    await labels.stop()  # idempotent
