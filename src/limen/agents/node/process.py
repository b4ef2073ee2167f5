"""Session processes: a shell or command on a PTY, or on pipes, as the session's Unix user.

Called by :mod:`limen.agents.node.session`. Both kinds are started with asyncio's
``subprocess_exec`` (CPython's fork+exec in C), which also switches the user when the agent
runs as root: ``user=`` (setreuid), ``group=`` (setregid) and ``extra_groups=`` (setgroups,
the account's supplementary groups as ``initgroups`` computes them), in a new session
(``setsid``) with the login environment and the home directory as working directory::

    PTY:   os.openpty() ─ slave → stdin/stdout/stderr of the child, which calls
           ioctl(TIOCSCTTY) (the only code run between fork and exec) to make it the
           controlling terminal;  master ─ add_reader → sink.process_output(data)
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
import grp
import os
import signal
import termios
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from limen.agents.node.ptymodes import apply_modes, set_window_size
from limen.agents.node.unixuser import UnixUser

__all__ = [
    "CLIENT_SIGNALS",
    "PipeProcess",
    "ProcessSink",
    "PtyProcess",
    "SessionProcess",
    "SpawnSpec",
    "exit_signal_name",
    "spawn_pipes",
    "spawn_pty",
]

CLIENT_SIGNALS = frozenset({"ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT",
                            "SEGV", "TERM", "USR1", "USR2"})
"""Signal names a client may send (RFC 4254 section 6.10)."""
_READ_SIZE = 65536
_INPUT_HIGH_WATER = 256 * 1024
_TTY_GROUP_MODE = 0o620
_EXIT_DRAIN_SECONDS = 0.25
"""After the child exits, how long to wait for the PTY's last output (the kernel hands data
written to the slave to the master asynchronously; EIO marks the true end)."""


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


def _user_kwargs(user: UnixUser) -> dict[str, Any]:
    if os.geteuid() != 0 or (user.uid == 0 and user.gid == 0):
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": user.groups}


def _cwd(user: UnixUser) -> str:
    return user.home if os.path.isdir(user.home) else "/"


class _ExitProtocol(asyncio.SubprocessProtocol):
    def __init__(self, owner: SessionProcess) -> None:
        self.owner = owner

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.owner._pipe_data(fd, bytes(data) if isinstance(data, bytes) else data.encode())

    def pause_writing(self) -> None:
        self.owner._sink.pause_input()

    def resume_writing(self) -> None:
        self.owner._sink.resume_input()

    def process_exited(self) -> None:
        self.owner._exited()

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

    # -- hooks for _ExitProtocol ---------------------------------------------------------
    def _pipe_data(self, fd: int, data: bytes) -> None:
        self._sink.process_output(data, fd == 2)

    def _exited(self) -> None:
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

    def _closed(self) -> None:  # exited and both output pipes closed
        self._finish()

    def close(self) -> None:
        self.write_eof()
        self.kill_group(signal.SIGHUP)


class PtyProcess(SessionProcess):
    """A process on a new PTY; the agent keeps the master side."""

    def __init__(self, sink: ProcessSink, master: int, tty_name: str) -> None:
        super().__init__(sink)
        self.master: int | None = master
        self.tty_name = tty_name
        self._loop = asyncio.get_running_loop()
        self._reading = False
        self._paused = False
        self._outbuf = bytearray()
        self._input_paused = False
        self._eof = False
        self._exit_timer: asyncio.TimerHandle | None = None
        self._finish_on_resume = False

    def _start_reading(self) -> None:
        if self.master is not None and not self._reading and not self._paused:
            self._loop.add_reader(self.master, self._readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self.master is not None and self._reading:
            self._loop.remove_reader(self.master)
        self._reading = False

    def _readable(self) -> None:
        if self.master is None:
            return
        try:
            data = os.read(self.master, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave fd is closed
            data = b""
        if data:
            self._sink.process_output(data, False)
            return
        self._eof = True
        self._stop_reading()
        if self.returncode is not None:
            self._finish()

    def _exited(self) -> None:
        if self._eof:
            self._finish()
        else:  # wait for EIO, but not forever: background jobs may keep the slave open
            self._exit_timer = self._loop.call_later(_EXIT_DRAIN_SECONDS, self._exit_deadline)

    def _exit_deadline(self) -> None:
        self._exit_timer = None
        if self._paused:
            self._finish_on_resume = True
            return
        self._drain()
        self._finish()

    def _drain(self) -> None:
        while self.master is not None and not self._paused:
            try:
                data = os.read(self.master, _READ_SIZE)
            except OSError:
                return
            if not data:
                return
            self._sink.process_output(data, False)

    def _finish(self) -> None:
        if self._exit_timer is not None:
            self._exit_timer.cancel()
            self._exit_timer = None
        super()._finish()

    def write(self, data: bytes) -> None:
        if self.master is None:
            return
        if self._outbuf:
            self._outbuf += data
        else:
            try:
                written = os.write(self.master, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return
            if written < len(data):
                self._outbuf += data[written:]
                self._loop.add_writer(self.master, self._writable)
        if len(self._outbuf) > _INPUT_HIGH_WATER and not self._input_paused:
            self._input_paused = True
            self._sink.pause_input()

    def _writable(self) -> None:
        if self.master is None:
            return
        try:
            written = os.write(self.master, self._outbuf)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._outbuf)
        del self._outbuf[:written]
        if not self._outbuf:
            self._loop.remove_writer(self.master)
        if self._input_paused and len(self._outbuf) < _INPUT_HIGH_WATER // 2:
            self._input_paused = False
            self._sink.resume_input()

    def write_eof(self) -> None:
        """A PTY has no half-close; the client's EOF is ignored (sshd does the same)."""

    def pause_output(self) -> None:
        self._paused = True
        self._stop_reading()

    def resume_output(self) -> None:
        self._paused = False
        if self._eof:
            return
        self._start_reading()
        if self._finish_on_resume:
            self._drain()
            self._finish()

    def resize(self, width: int, height: int, pixwidth: int = 0, pixheight: int = 0) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                set_window_size(self.master, width, height, pixwidth, pixheight)

    def close(self) -> None:
        if self.master is None:
            return
        self._stop_reading()
        if self._outbuf:
            self._loop.remove_writer(self.master)
        os.close(self.master)  # hangup: the session's processes get SIGHUP
        self.master = None


def _set_controlling_tty() -> None:  # runs in the child between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def spawn_pty(spec: SpawnSpec, sink: ProcessSink, size: tuple[int, int, int, int],
                    modes: Mapping[int, int]) -> PtyProcess:
    """Start ``spec`` on a new PTY of ``size`` (cols, rows, px width, px height)."""
    master, slave = os.openpty()
    try:
        os.set_blocking(master, False)
        tty_name = os.ttyname(slave)
        with contextlib.suppress(OSError):
            apply_modes(slave, modes)
        set_window_size(slave, *size)
        if os.geteuid() == 0:  # the user owns their terminal, like with sshd (group tty)
            os.fchown(slave, spec.user.uid, _tty_gid(spec.user.gid))
            os.fchmod(slave, _TTY_GROUP_MODE)
        process = PtyProcess(sink, master, tty_name)
        loop = asyncio.get_running_loop()
        exec_: Any = loop.subprocess_exec  # (mypy cannot type **kwargs next to *argv)
        transport, _ = await exec_(
            lambda: _ExitProtocol(process), *spec.argv, executable=spec.executable,
            stdin=slave, stdout=slave, stderr=slave, env={**spec.env, "SSH_TTY": tty_name},
            cwd=_cwd(spec.user),
            start_new_session=True, preexec_fn=_set_controlling_tty,
            **_user_kwargs(spec.user), **spec.extra)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    process._transport = transport
    process._start_reading()
    return process


def _tty_gid(default: int) -> int:
    try:
        return grp.getgrnam("tty").gr_gid
    except KeyError:
        return default


async def spawn_pipes(spec: SpawnSpec, sink: ProcessSink) -> PipeProcess:
    """Start ``spec`` with stdin, stdout and stderr on pipes."""
    process = PipeProcess(sink)
    loop = asyncio.get_running_loop()
    exec_: Any = loop.subprocess_exec
    transport, _ = await exec_(
        lambda: _ExitProtocol(process), *spec.argv, executable=spec.executable,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(spec.env), cwd=_cwd(spec.user),
        start_new_session=True, **_user_kwargs(spec.user), **spec.extra)
    process._transport = transport
    return process

