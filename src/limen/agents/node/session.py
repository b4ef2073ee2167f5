"""One SSH session channel on the node: a login shell, a command, scp or SFTP, run as the
session's Unix user, relayed, recorded and audited.

Created by the connection handler once RBAC allowed the session
(:meth:`limen.agents.node.connection.NodeConnectionHandler.open_session`)::

    client requests (asyncssh callbacks)        NodeSession                    process
    pty-req, env, window-change  ──────────▶  term type/size/modes      ──▶  PTY (resize)
    shell / exec / subsystem sftp ─────────▶  session_started: spawn   ──▶  -bash | sh -c CMD
                                                                              | sftp-server
    data ──▶ data_received ───────────────────────────────────────────────▶ stdin / PTY master
    channel ◀── process_output ◀──────────────────────────────────────────── stdout/stderr
                  └──▶ CastWriter (PTY sessions, record_session != off)
    exit ◀── exit-status / exit-signal, channel closed  ◀── process done (output drained)

Every session emits ``session.start`` and ``session.end``; commands add ``exec`` (or ``scp``),
the SFTP subsystem ``sftp`` events (start, end, and each open/remove/rename/mkdir/rmdir/setstat
request, read from the client's stream by :mod:`limen.agents.node.transfers`). PTY sessions
are recorded (asciicast v2); commands without a PTY and file transfers are audited but not
recorded (their output can be whole files).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh

from limen.agents.node.context import ConnState
from limen.agents.node.pty import spawn_pty
from limen.agents.node.session_process import (
    SessionProcess,
    SpawnSpec,
    exit_signal_name,
    spawn_pipes,
)
from limen.agents.node.transfers import SftpRequestParser, scp_direction
from limen.agents.node.unixuser import (
    SessionEnv,
    UnixUser,
    login_environment,
    login_shell_refusal,
)
from limen.rbac import SessionOptions
from limen.recording.asciicast import CastHeader
from limen.recording.writer import CastWriter, RecordingTask

__all__ = ["SFTP_MISSING", "NodeSession"]

log = logging.getLogger("limen.agents.node")

_KILL_GRACE_SECONDS = 2.0
_DEFAULT_SIZE = (80, 24, 0, 0)
SFTP_MISSING = "install openssh-sftp-server on this node"
"""What scp and sftp show (channel stderr) when the node has no ``sftp-server``."""


class NodeSession(asyncssh.SSHServerSession[bytes]):
    """See the module docstring. One instance per session channel."""

    def __init__(self, state: ConnState, session_id: str, options: SessionOptions,
                 user: UnixUser) -> None:
        self.state = state
        self.session_id = session_id
        self.options = options
        self.user = user
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.term_type: str | None = None
        self.term_size: tuple[int, int, int, int] = _DEFAULT_SIZE
        self.term_modes: dict[int, int] = {}
        self.kind = ""
        self.command: str | None = None
        self.scp: tuple[str, str] | None = None
        self.process: SessionProcess | None = None
        self.recording: RecordingTask | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.time()
        self.exit_status: int | str | None = None
        self._early_input: list[bytes] = []
        self._early_eof = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._hung_up = False
        self._sftp: SftpRequestParser | None = None
        self._sftp_path: str | None = None
        self._refusal: str | None = None
        """Why an accepted request will not run (told at session start)."""
        self._no_login = login_shell_refusal(user)
        """Why this account gets no session at all (a nologin shell), checked first."""

    # -- requests ------------------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan
        self.state.sessions.add(self)
        self.state.touch()

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int],
                      term_modes: Mapping[int, int]) -> bool:
        self.term_type = term_type
        self.term_size = term_size if term_size[0] and term_size[1] else _DEFAULT_SIZE
        self.term_modes = dict(term_modes)
        return True

    def shell_requested(self) -> bool:
        self.kind = "shell"
        self._refusal = self._no_login
        return True

    def exec_requested(self, command: str) -> bool:
        self.kind, self.command = "exec", command
        self.scp = scp_direction(command)
        if self._no_login is not None:
            # Accepted, then refused at start with the reason on stderr (sshd would run the
            # command through the nologin shell, which prints its refusal and exits 1).
            self._refusal = self._no_login
            return True
        if self.scp is not None and not self.options.ssh_file_copy:
            self._audit("scp", success=False, command=command, action=self.scp[0],
                        path=self.scp[1], reason="file copy is disabled by the user's roles")
            return False
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self.kind, self.command = "subsystem", subsystem
        if subsystem != "sftp":
            return False
        # Accepted either way: a refusal is then told on the channel's stderr (scp and sftp
        # show it) instead of OpenSSH's bare "subsystem request failed".
        if self._no_login is not None:
            self._refusal = self._no_login
        elif not self.options.ssh_file_copy:
            self._refusal = "file copy is disabled by your roles"
        else:
            self._sftp_path = self.state.node.sftp_server()
            if self._sftp_path is None:
                self._refusal = SFTP_MISSING
        if self._refusal is None:
            self._sftp = SftpRequestParser()
        return True

    def session_started(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    # -- data and control from the client ---------------------------------------------------

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.state.touch()
        self.bytes_in += len(data)
        if self._sftp is not None:
            for op in self._sftp.feed(data):
                self._audit("sftp", action=op.action, path=op.path, target=op.target or None,
                            flags=op.flags or None)
        if self.process is None:
            self._early_input.append(data)
            return
        self.process.write(data)
        if self.recording is not None:
            self.recording.writer.input(data)

    def eof_received(self) -> bool:
        if self.process is None:
            self._early_eof = True
        else:
            self.process.write_eof()
        return True  # keep our side open: exit status and output still follow

    def terminal_size_changed(self, width: int, height: int, pixwidth: int,
                              pixheight: int) -> None:
        self.term_size = (width, height, pixwidth, pixheight)
        if self.process is not None:
            self.process.resize(width, height, pixwidth, pixheight)
        if self.recording is not None:
            self.recording.writer.resize(width, height)

    def signal_received(self, signal: str) -> None:
        self.state.touch()
        if self.process is not None:
            self.process.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        return False

    def pause_writing(self) -> None:
        if self.process is not None:
            self.process.pause_output()

    def resume_writing(self) -> None:
        if self.process is not None:
            self.process.resume_output()

    def connection_lost(self, exc: Exception | None) -> None:
        """The channel is gone (client closed it, connection lost, agent closing)."""
        self._closed = True
        self.state.sessions.discard(self)
        self._hangup_process()

    def hangup(self, message: str) -> None:
        """End the session from our side: tell the client why, hang up the process; its
        exit status, ``session.end`` and the recording follow as for a normal exit."""
        if self.chan is not None and not self._closed:
            with contextlib.suppress(OSError):
                self.chan.write_stderr(f"\r\nlimen: {message}\r\n".encode())
        if self.process is None and self.chan is not None and not self._closed:
            self.chan.close()
        self._hangup_process()

    def _hangup_process(self) -> None:
        process = self.process
        if process is not None and not process.done.done():
            process.close()
            process.kill_group(signal.SIGHUP)
            if self._kill_timer is None:
                self._kill_timer = asyncio.get_running_loop().call_later(
                    _KILL_GRACE_SECONDS, process.kill_group, signal.SIGKILL)
        elif process is None:
            self._hung_up = True  # _start hangs up the process once it exists

    # -- ProcessSink -------------------------------------------------------------------

    def process_output(self, data: bytes, stderr: bool) -> None:
        self.bytes_out += len(data)
        if self.recording is not None:
            self.recording.writer.output(data)
            self.recording.nudge()
            if self.recording.failed is not None:
                self._recording_failed()
        if self.chan is None or self._closed:
            return
        if stderr:
            self.chan.write_stderr(data)
        else:
            self.chan.write(data)

    def pause_input(self) -> None:
        if self.chan is not None and not self._closed:
            self.chan.pause_reading()

    def resume_input(self) -> None:
        if self.chan is not None and not self._closed:
            self.chan.resume_reading()

    # -- the session's life ---------------------------------------------------------------

    def _audit(self, event_type: str, *, success: bool | None = None, **fields: Any) -> None:
        self.state.node.audit.emit(event_type, success=success, user=self.state.user,
                                   session_id=self.session_id, **self.state.fields(), **fields)

    def _spec(self) -> SpawnSpec:
        user = self.user
        assert self.chan is not None
        agent_path = self.chan.get_agent_path()
        info = SessionEnv(
            session_id=self.session_id, limen_user=self.state.identity.username,
            cluster=self.state.node.config.cluster, host_id=self.state.node.config.host_id,
            client_addr=self.state.client_addr, server_addr=self.state.server_addr,
            term=self.term_type, auth_sock=agent_path)
        env = login_environment(user, info, self.chan.get_environment())
        shell_name = os.path.basename(user.shell)
        if self.kind == "subsystem":
            assert self._sftp_path is not None
            return SpawnSpec(["sftp-server"], self._sftp_path, env, user.home, user)
        if self.kind == "exec":
            assert self.command is not None
            return SpawnSpec([shell_name, "-c", self.command], user.shell, env, user.home, user)
        return SpawnSpec([f"-{shell_name}"], user.shell, env, user.home, user)

    async def _run(self) -> None:
        if self._refusal is not None:
            self._refuse(self._refusal)
            return
        try:
            await self._start()
        except Exception as err:
            log.exception("session %s failed to start", self.session_id)
            self._refuse(f"cannot start the session: {err}")
            return
        assert self.process is not None
        returncode = await self.process.done
        await self._finish(returncode)

    def _refuse(self, message: str) -> None:
        if self._no_login is not None and message == self._no_login:
            action = ("scp" if self.scp is not None else "sftp" if self.kind == "subsystem"
                      else self.kind)
            self._audit("access.denied", action=action, command=self.command, role=None,
                        rule="login shell", reason=message)
        elif self.kind == "exec":
            self._audit("exec", success=False, command=self.command, reason=message)
        elif self.kind == "subsystem":
            self._audit("sftp", success=False, action="start", reason=message)
        else:
            log.warning("session %s refused: %s", self.session_id, message)
        if self.chan is not None and not self._closed:
            self.chan.write_stderr(f"limen: {message}\r\n".encode())
            self.chan.exit(255)

    async def _start(self) -> None:
        spec = self._spec()
        try:
            if self.term_type is not None and self.kind != "subsystem":
                await self._open_recording(spec)
                process: SessionProcess = await spawn_pty(spec, self, self.term_size,
                                                          self.term_modes)
            else:
                process = await spawn_pipes(spec, self)
        except BaseException:
            if self.recording is not None:  # nothing ran: no recording to keep
                writer, self.recording = self.recording.writer, None
                writer.abort()
                writer.path.unlink(missing_ok=True)
            raise
        self.process = process
        if self.recording is not None:
            self.recording.start()
        fields: dict[str, Any] = {"interactive": self.term_type is not None,
                                  "kind": self.kind, "pid": process.pid}
        if self.command is not None:
            fields["command"] = self.command
        if self.term_type is not None:
            fields["terminal_size"] = f"{self.term_size[0]}x{self.term_size[1]}"
        self._audit("session.start", **fields)
        for data in self._early_input:
            process.write(data)
            if self.recording is not None:
                self.recording.writer.input(data)
        self._early_input.clear()
        if self._early_eof:
            process.write_eof()
        if self._closed or self._hung_up:  # the client left or the agent stops meanwhile
            self._hangup_process()

    async def _open_recording(self, spec: SpawnSpec) -> None:
        mode = self.options.record_session
        if mode == "off":
            return
        config = self.state.node.config
        header = CastHeader(self.term_size[0], self.term_size[1], int(self.started),
                            self.session_id,
                            {"TERM": self.term_type or "", "SHELL": spec.user.shell},
                            self._recording_meta())
        try:
            writer = await asyncio.to_thread(  # mkdir, create, fsync: off the event loop
                CastWriter.create, config.sessions_dir, self.session_id, header,
                record_input=config.record_input)
        except OSError as err:
            if mode == "strict":
                raise RuntimeError(f"the session cannot be recorded ({err.strerror}) and the "
                                   "user's roles require recording") from None
            log.error("session %s is not recorded: %s", self.session_id, err)
            return
        self.recording = RecordingTask(writer, interval=config.recording_flush_interval)

    def _recording_failed(self) -> None:
        recording, self.recording = self.recording, None
        assert recording is not None
        self.state.node.background(recording.abort(), "aborting a failed recording")
        if self.options.record_session == "strict":
            log.error("session %s: recording failed, ending the session (strict mode)",
                      self.session_id)
            if self.chan is not None and not self._closed:
                self.chan.write_stderr(b"\r\nlimen: session recording failed; the session "
                                       b"ends (recording is required)\r\n")
            if self.process is not None:
                self.process.close()
                self.process.kill_group(signal.SIGHUP)
        else:
            log.error("session %s: recording failed, continuing unrecorded", self.session_id)

    async def _finish(self, returncode: int) -> None:
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        process = self.process
        if process is not None:
            process.close()
        status: int | str = returncode if returncode >= 0 else exit_signal_name(returncode)
        self.exit_status = status
        if self.chan is not None and not self._closed:
            if isinstance(status, int):
                self.chan.exit(status)
            else:
                self.chan.exit_with_signal(status)
        ended = time.time()
        if self.scp is not None:
            self._audit("scp", success=returncode == 0, command=self.command,
                        action=self.scp[0], path=self.scp[1], exit_code=status,
                        bytes_in=self.bytes_in, bytes_out=self.bytes_out)
        elif self.kind == "exec":
            self._audit("exec", success=returncode == 0, command=self.command,
                        exit_code=status)
        elif self.kind == "subsystem":
            self._audit("sftp", success=returncode == 0, action="end", exit_code=status,
                        bytes_in=self.bytes_in, bytes_out=self.bytes_out)
        self._audit("session.end", participants=[self.state.identity.username],
                    duration=round(ended - self.started, 3), bytes_in=self.bytes_in,
                    bytes_out=self.bytes_out, exit_status=status,
                    recorded=self.recording is not None,
                    start=datetime.fromtimestamp(self.started, UTC),
                    end=datetime.fromtimestamp(ended, UTC))
        if self.recording is not None:
            self.state.node.background(self._store_recording(self.recording, ended),
                                       f"storing recording {self.session_id}")

    async def _store_recording(self, recording: RecordingTask, ended: float) -> None:
        path: Path = await recording.finish()
        meta = {**self._recording_meta(), "incomplete": False, "exit_status": self.exit_status,
                "end": datetime.fromtimestamp(ended, UTC).isoformat()}
        await self.state.node.recordings.upload(self.session_id, path, meta)

    def _recording_meta(self) -> dict[str, Any]:
        """The session's metadata in the recording header and its sidecar."""
        config = self.state.node.config
        return {"session_id": self.session_id, "cluster": config.cluster,
                "user": self.state.identity.username, "login": self.state.login,
                "participants": [self.state.identity.username],
                "server_id": config.host_id, "server_hostname": config.hostname,
                "remote_addr": self.state.remote_addr, "command": self.command,
                "start": datetime.fromtimestamp(self.started, UTC).isoformat()}

