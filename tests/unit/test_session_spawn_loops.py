"""Node session processes start the same on both event loops (``limen.net.event_loop``): a new
session, the PTY as controlling terminal, and, when the agent runs as root, the session user's
uid, gid and supplementary groups (uvloop has no ``user=``/``group=``/``extra_groups=``, so
``child_setup`` does it between fork and exec on both)."""

from __future__ import annotations

import asyncio
import os
import pwd

import pytest

from limen.agents.node.pty import spawn_pty
from limen.agents.node.session_process import SessionProcess, SpawnSpec, spawn_pipes
from limen.agents.node.unixuser import UnixUser
from limen.net.event_loop import run

REPORT = ('echo "uid=$(id -u) gid=$(id -g) groups=$(id -G | tr " " ,)"; '
          'echo "pid=$$ sid=$(ps -o sid= -p $$ | tr -d " ")"; '
          '(exec 3</dev/tty) 2>/dev/null && echo ctty=yes || echo ctty=no')


def _session_user() -> UnixUser:
    """nobody when the tests run as root (the switch happens), else the caller itself."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam("nobody")
        return UnixUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, "/bin/sh")
    return UnixUser("me", os.getuid(), os.getgid(), "/", "/bin/sh")


class Collect:
    def __init__(self) -> None:
        self.output = bytearray()

    def process_output(self, data: bytes, stderr: bool) -> None:
        self.output += data

    def pause_input(self) -> None:
        pass

    def resume_input(self) -> None:
        pass


async def _report(pty: bool) -> dict[str, str]:
    user = _session_user()
    spec = SpawnSpec(["sh", "-c", REPORT], "/bin/sh", {"PATH": "/usr/bin:/bin"}, user.home,
                     user)
    sink = Collect()
    process: SessionProcess = await (spawn_pty(spec, sink, (80, 24, 0, 0), {}) if pty
                                     else spawn_pipes(spec, sink))
    try:
        async with asyncio.timeout(10):
            assert await process.done == 0
    finally:
        process.close()
    lines = sink.output.decode().replace("\r", "").split()
    return dict(item.split("=", 1) for item in lines)


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
@pytest.mark.parametrize("pty", [True, False], ids=["pty", "pipes"])
def test_session_process_runs_as_the_user_in_its_own_session(kind: str, pty: bool) -> None:
    report = run(_report(pty), kind)
    user = _session_user()
    assert report["uid"] == str(user.uid)
    assert report["gid"] == str(user.gid)
    assert sorted(report["groups"].split(",")) == sorted({str(g) for g in user.groups})
    assert report["sid"] == report["pid"]  # a session leader: setsid ran
    assert report["ctty"] == ("yes" if pty else "no")
