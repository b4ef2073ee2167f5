"""Flow control between a node session and its process's stdin (``limen.agents.node.
session_process``): the session's stdin resumes outside asyncio's pipe write callback.

asyncio 3.11's pipe transport calls ``resume_writing`` from inside ``_write_ready`` and closes
the pipe itself right after if the protocol closed it there; a channel that delivers its
buffered data and EOF on resume (asyncssh does) made the stdin pipe close twice, leaving a
writer registered on the freed descriptor number: the next socket given that number never got
its reader and its SSH session hung (seen under 4-20 parallel ``ssh node 'cat > /dev/null'``).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from limen.agents.node.session_process import PipeProcess, SpawnSpec, spawn_pipes
from limen.agents.node.unixuser import UnixUser


class EofOnResume:
    """A sink that, like an SSH channel with EOF buffered, closes stdin as soon as resumed."""

    def __init__(self) -> None:
        self.process: PipeProcess | None = None
        self.paused = 0
        self.resumed = 0

    def process_output(self, data: bytes, stderr: bool) -> None:
        pass

    def pause_input(self) -> None:
        self.paused += 1

    def resume_input(self) -> None:
        self.resumed += 1
        assert self.process is not None
        self.process.write_eof()


async def test_stdin_closed_when_resumed_closes_the_pipe_once() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    sink = EofOnResume()
    spec = SpawnSpec(["sh", "-c", "cat > /dev/null"], "/bin/sh", {"PATH": "/usr/bin:/bin"},
                     "/", UnixUser("me", os.getuid(), os.getgid(), "/", "/bin/sh"))
    process = await spawn_pipes(spec, sink)
    sink.process = process
    try:
        process.write(b"x" * (4 << 20))  # beyond the pipe and the high-water mark: paused
        assert sink.paused == 1
        async with asyncio.timeout(10):  # cat exits on the EOF written when resumed
            assert await process.done == 0
        for _ in range(5):  # let every callback the pipe's close scheduled run
            await asyncio.sleep(0)
    finally:
        process.kill_group()
        process.close()
    assert sink.resumed == 1
    assert errors == []
