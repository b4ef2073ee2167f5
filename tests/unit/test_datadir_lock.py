"""One limen process per data directory: the flock, the pid in the refusal, no stale lock
after a crash (the holder is killed), and a descriptor child processes do not inherit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from limen.cli.datadir_lock import LOCK_FILE, hold_data_dir
from limen.errors import AlreadyExists

HOLDER = """
import sys, time
from pathlib import Path
from limen.cli.datadir_lock import hold_data_dir
with hold_data_dir(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with hold_data_dir(data) as path:
        assert path == data / LOCK_FILE
        assert path.read_text() == f"{os.getpid()}\n"
        assert oct(data.stat().st_mode & 0o777) == "0o700"
        with pytest.raises(AlreadyExists) as refused, hold_data_dir(data):
            pass
        assert str(refused.value) == f"another limen process (pid {os.getpid()}) is using {data}"
    with hold_data_dir(data):  # released at the end of the block
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(AlreadyExists, match=f"pid {holder.pid}"), hold_data_dir(data):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        with hold_data_dir(data) as path:
            assert path.read_text() == f"{os.getpid()}\n"
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_child_processes_do_not_inherit_the_lock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with hold_data_dir(data):
        child = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        with hold_data_dir(data):  # the child still runs, yet the lock is free
            pass
    finally:
        child.kill()
        child.wait(10)
