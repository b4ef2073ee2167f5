"""Session processes as the session's Unix user: the common base, and processes on pipes.

Called by :mod:`limen.agents.node.session` (and :mod:`limen.agents.node.pty`, the PTY
variant). Both kinds are started with the loop's ``subprocess_exec`` (asyncio's or uvloop's:
``limen.net.event_loop``) with the login environment and the home directory as working
directory; between fork and exec the child runs :func:`child_setup`, plain ``os`` calls on
both loops (uvloop knows no ``user=``/``group=``/``extra_groups=``, and runs the function
right after the fork, before it sets up the child's stdio): a new session (``setsid``), the
PTY as controlling terminal (``ioctl(TIOCSCTTY)`` on the slave), and, when the agent runs as
root, the user switch (``setgroups`` with the account's supplementary groups as
``initgroups`` computes them, then ``setresgid``, then ``setresuid``)::

    PTY:   os.openpty() ─ slave → stdin/stdout/stderr of the child, its controlling
           terminal;  master ─ add_reader → sink.process_output(data)
    pipes: stdin/stdout/stderr pipes (exec without PTY, scp, sftp-server)

Flow control both ways: ``pause_output`` stops reading the child when the SSH channel's window
is full; writes to the child are buffered and ``sink.pause_input`` is called when the child
does not keep up. ``done`` resolves with the return code (negative: killed by that signal)
once the process exited and its output was read: for a PTY, what is left in the master after
the exit; for pipes, until stdout and stderr are closed (as sshd does).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import termios
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from limen.agents.node.unixuser import UnixUser

__all__ = [
    "CLIENT_SIGNALS",
    "ExitProtocol",
    "PipeProcess",
    "ProcessSink",
    "SessionProcess",
    "SpawnSpec",
    "exit_signal_name",
    "spawn_kwargs",
    "spawn_pipes",
]

CLIENT_SIGNALS = frozenset({"ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT",
                            "SEGV", "TERM", "USR1", "USR2"})
"""Signal names a client may send (RFC 4254 section 6.10)."""


class ProcessSink(Protocol):
    """What the session provides to the process (callbacks on the event loop)."""

    def process_output(self, data: bytes, stderr: bool) -> None: ...

    def pause_input(self) -> None: ...

    def resume_input(self) -> None: ...


@dataclass(frozen=True)
class SpawnSpec:
    argv: list[str]
    """``argv[0]`` may differ from the program (``-bash`` for a login shell)."""
    executable: str
    env: Mapping[str, str]
    cwd: str
    user: UnixUser
    """The account to run as (the agent's own account when it is not root)."""
    extra: Mapping[str, Any] = field(default_factory=dict)


def exit_signal_name(returncode: int) -> str:
    """SSH name of the signal that killed a process (``TERM``), from a negative return code."""
    try:
        return signal.Signals(-returncode).name.removeprefix("SIG")
    except ValueError:
        return "KILL"


def child_setup(user: UnixUser, tty: int | None = None) -> Callable[[], None]:
    """What the child does between fork and exec: a new session, ``tty`` (a PTY slave's
    descriptor) as its controlling terminal, and the switch to ``user`` when the agent runs as
    root. Only ``os`` and ``fcntl`` calls on values computed before the fork."""
    switch = os.geteuid() == 0 and not (user.uid == 0 and user.gid == 0)
    uid, gid, groups = user.uid, user.gid, list(user.groups)

    def setup() -> None:
        if os.getsid(0) != os.getpid():
            os.setsid()
        if tty is not None:
            fcntl.ioctl(tty, termios.TIOCSCTTY, 0)
        if switch:
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
    return setup


def spawn_kwargs(spec: SpawnSpec, env: Mapping[str, str] | None = None, *,
                 tty: int | None = None) -> dict[str, Any]:
    """``subprocess_exec`` arguments shared by both kinds: program, environment, working
    directory (home, or ``/`` when it is missing, as with sshd), and :func:`child_setup`."""
    return {"executable": spec.executable, "env": dict(spec.env if env is None else env),
            "cwd": spec.cwd if os.path.isdir(spec.cwd) else "/",
            "preexec_fn": child_setup(spec.user, tty), **spec.extra}


class ExitProtocol(asyncio.SubprocessProtocol):
    def __init__(self, owner: SessionProcess) -> None:
        self.owner = owner
        self._input_paused = False

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.owner._pipe_data(fd, bytes(data) if isinstance(data, bytes) else data.encode())

    def pause_writing(self) -> None:
        self._input_paused = True
        self.owner._sink.pause_input()

    def resume_writing(self) -> None:
        # Not from inside the stdin pipe's _write_ready: resuming the channel delivers what it
        # buffered at once, EOF included, and a stdin closed there has asyncio 3.11 close the
        # pipe twice (gh-156512's pattern): a writer left registered on the freed descriptor
        # number, whose next owner (a new session's socket) then never gets its reader.
        self._input_paused = False
        asyncio.get_running_loop().call_soon(self._resume_input)

    def _resume_input(self) -> None:
        if not self._input_paused:
            self.owner._sink.resume_input()

    def process_exited(self) -> None:
        self.owner._exited()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.owner._pipe_lost(fd)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._closed()


class SessionProcess:
    """Common part of :class:`PtyProcess` and :class:`PipeProcess`."""

    def __init__(self, sink: ProcessSink) -> None:
        self._sink = sink
        self._transport: asyncio.SubprocessTransport | None = None
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int | None:
        return None if self._transport is None else self._transport.get_pid()

    @property
    def returncode(self) -> int | None:
        return None if self._transport is None else self._transport.get_returncode()

    def send_signal(self, name: str) -> bool:
        """Deliver a client's signal (``INT``, ``TERM`` ...) to the process."""
        if name not in CLIENT_SIGNALS or self.pid is None or self.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.Signals["SIG" + name])
        return True

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the child is a session leader)."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    # -- hooks for ExitProtocol ---------------------------------------------------------
    def _pipe_data(self, fd: int, data: bytes) -> None:
        self._sink.process_output(data, fd == 2)

    def _exited(self) -> None:
        pass

    def _pipe_lost(self, fd: int) -> None:
        pass

    def _closed(self) -> None:
        pass

    def _finish(self) -> None:
        if not self.done.done():
            code = self.returncode
            self.done.set_result(code if code is not None else -signal.SIGKILL)
        if self._transport is not None and self.returncode is not None:
            self._transport.close()  # the process has exited: this only releases the pipes

    # -- interface ----------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def write_eof(self) -> None:
        raise NotImplementedError

    def pause_output(self) -> None:
        raise NotImplementedError

    def resume_output(self) -> None:
        raise NotImplementedError

    def resize(self, width: int, height: int, pixwidth: int = 0, pixheight: int = 0) -> None:
        """Only PTY sessions have a window size."""

    def close(self) -> None:
        """Hang up / close our ends; the process gets SIGHUP or EOF."""
        raise NotImplementedError


class PipeProcess(SessionProcess):
    """A process on pipes: exec without PTY, scp, the SFTP server."""

    def _pipe(self, fd: int) -> Any:
        return None if self._transport is None else self._transport.get_pipe_transport(fd)

    def write(self, data: bytes) -> None:
        pipe = self._pipe(0)
        if pipe is not None and not pipe.is_closing():
            pipe.write(data)

    def write_eof(self) -> None:
        pipe = self._pipe(0)
        if pipe is not None and not pipe.is_closing():
            pipe.close()

    def pause_output(self) -> None:
        for fd in (1, 2):
            pipe = self._pipe(fd)
            if pipe is not None and not pipe.is_closing() and pipe.is_reading():
                pipe.pause_reading()

    def resume_output(self) -> None:
        for fd in (1, 2):
            pipe = self._pipe(fd)
            if pipe is not None and not pipe.is_closing() and not pipe.is_reading():
                pipe.resume_reading()

    # Like sshd: the session ends when the process has exited and its stdout and stderr are
    # drained, whether or not the client has closed its stdin (``ssh host 'exit 7'`` typed at
    # a terminal never sends EOF). asyncio's own connection_lost also waits for stdin.
    def __init__(self, sink: ProcessSink) -> None:
        super().__init__(sink)
        self._outputs_open = {1, 2}

    def _pipe_lost(self, fd: int) -> None:
        if fd in (1, 2):
            self._outputs_open.discard(fd)
            self._maybe_finish()

    def _exited(self) -> None:
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.returncode is not None and not self._outputs_open:
            self._finish()

    def _closed(self) -> None:  # exited and every pipe closed
        self._finish()

    def close(self) -> None:
        """Close stdin. Background processes the command left behind keep running, as with
        sshd; when the client goes away the session hangs up the whole group instead."""
        self.write_eof()


async def spawn_pipes(spec: SpawnSpec, sink: ProcessSink) -> PipeProcess:
    """Start ``spec`` with stdin, stdout and stderr on pipes."""
    process = PipeProcess(sink)
    loop = asyncio.get_running_loop()
    exec_: Any = loop.subprocess_exec  # (mypy cannot type **kwargs next to *argv)
    transport, _ = await exec_(
        lambda: ExitProtocol(process), *spec.argv, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        **spawn_kwargs(spec))
    process._transport = transport
    return process

