"""Session processes on a PTY: the shell (or a command) of an interactive session.

Called by :mod:`limen.agents.node.session` through :func:`spawn_pty`; the pipe variant and the
common base live in :mod:`limen.agents.node.session_process`::

    os.openpty() ─ slave: stdin/stdout/stderr of the child and, through ``child_setup``
                   between fork and exec, its controlling tty; owned by the session user
                   (group tty, 0620) like with sshd
                 ─ master: kept by the agent; add_reader → sink.process_output(data)

After the child exits, the output still in the PTY is read until EIO (every slave closed) or
for at most ``_EXIT_DRAIN_SECONDS`` (a background job may keep the slave open).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
from collections.abc import Mapping
from typing import Any

from limen.agents.node.ptymodes import apply_modes, set_window_size
from limen.agents.node.session_process import (
    ExitProtocol,
    ProcessSink,
    SessionProcess,
    SpawnSpec,
    spawn_kwargs,
)

__all__ = ["PtyProcess", "spawn_pty"]

_READ_SIZE = 65536
_INPUT_HIGH_WATER = 256 * 1024
_TTY_GROUP_MODE = 0o620
_EXIT_DRAIN_SECONDS = 0.25
"""After the child exits, how long to wait for the PTY's last output (the kernel hands data
written to the slave to the master asynchronously; EIO marks the true end)."""


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
            lambda: ExitProtocol(process), *spec.argv, stdin=slave, stdout=slave,
            stderr=slave, **spawn_kwargs(spec, {**spec.env, "SSH_TTY": tty_name}, tty=slave))
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
