"""Recording of interactive ``kubectl exec -it`` / ``attach -it`` sessions as asciicast v2,
like SSH sessions (``lmsh play``, ``lmsh recordings``).

The kube agent relays the upgraded connection byte for byte; an :class:`ExecRecorder` gets a
copy of each direction (:meth:`ExecRecorder.taps`) and reads it with the reader of the
protocol the API server chose (:mod:`limen.agents.kube.exec_streams`): the WebSocket channel
protocol ``v5.channel.k8s.io`` / ``v4.channel.k8s.io``, or SPDY/3.1 as older kubectl and
client-go speak it. Stdout and stderr become output events, the client's resizes
(``{"Width": W, "Height": H}``) resize events; stdin is not recorded. A session on another
protocol is not recorded (the caller asks :meth:`accepts`). Bytes the reader cannot read stop
the recording there: logged once, named by :attr:`ExecRecorder.failure` for the session's end
event, and :attr:`ExecRecorder.on_failure` is told (the caller ends the session when the
roles require recording, as an SSH session's failed recording does; otherwise the relay goes
on unrecorded).
The file is written by :class:`~limen.recording.writer.CastWriter` off the relay's path and
handed to the agent's recording sink (auth's store, through the tunnel for an agent apart) at
the end, with the metadata ``lmsh recordings`` lists and role rules decide on. Called by
:mod:`limen.agents.kube.kube_service`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from limen.agents.kube.exec_streams import (
    CHANNEL_PROTOCOLS,
    SPDY_PROTOCOL,
    Output,
    Resize,
    StreamReader,
    reader_for,
)
from limen.agents.kube.forwarder import Tap
from limen.recording.asciicast import CastHeader
from limen.recording.sink import RecordingSink
from limen.recording.writer import CastWriter, RecordingTask

__all__ = ["CHANNEL_PROTOCOLS", "SPDY_PROTOCOL", "ExecRecorder"]

log = logging.getLogger(__name__)


class ExecRecorder:
    """One interactive exec/attach being recorded (see the module)."""

    def __init__(self, task: RecordingTask, writer: CastWriter, session_id: str,
                 meta: dict[str, Any]) -> None:
        self.task = task
        self.writer = writer
        self.session_id = session_id
        self.meta = meta
        self.started = time.time()
        self._reader: StreamReader | None = None
        self.failure: str | None = None
        """Why the recording stopped before the session ended (unreadable bytes)."""
        self.on_failure: Callable[[str], None] | None = None
        """Told once, with :attr:`failure`, when the recording stops early."""

    @classmethod
    async def open(cls, sessions_dir: Path, meta: dict[str, Any]) -> ExecRecorder:
        """A new recording (OSError when it cannot be created)."""
        session_id = str(uuid.uuid4())
        started = time.time()
        full = {**meta, "session_id": session_id,
                "start": datetime.fromtimestamp(started, UTC).isoformat()}
        header = CastHeader(80, 24, int(started), f"kubectl {meta.get('command', '')}",
                            {"TERM": "xterm"}, full)
        writer = await asyncio.to_thread(CastWriter.create, sessions_dir, session_id, header)
        task = RecordingTask(writer)
        task.start()
        return cls(task, writer, session_id, full)

    @staticmethod
    def accepts(protocol: str | None) -> bool:
        """Can a session that negotiated ``protocol`` be recorded?"""
        return reader_for(protocol) is not None

    def taps(self, protocol: str | None) -> tuple[Tap, Tap] | None:
        """The (client to server, server to client) taps of a session on ``protocol``."""
        self._reader = reader_for(protocol)
        if self._reader is None:
            return None
        return self.from_client, self.from_server

    def from_client(self, data: bytes) -> None:
        if self._reader is not None:
            self._write(self._reader.from_client(data))

    def from_server(self, data: bytes) -> None:
        if self._reader is not None:
            self._write(self._reader.from_server(data))
            self.task.nudge()

    def _write(self, events: list[Output | Resize]) -> None:
        for event in events:
            if isinstance(event, Output):
                self.writer.output(event.data)
            else:
                self.writer.resize(event.width, event.height)
        if self._reader is not None and self._reader.failure is not None:
            self.failure = self._reader.failure
            self._reader = None
            log.warning("kube exec recording %s stopped: %s", self.session_id, self.failure)
            if self.on_failure is not None:
                self.on_failure(self.failure)

    async def finish(self, sink: RecordingSink, **extra: Any) -> None:
        """Complete the file and hand it to ``sink`` (errors are logged: the file stays in
        the sessions directory for a later upload)."""
        try:
            path: Path = await self.task.finish()
            meta = {**self.meta, "incomplete": False,
                    "end": datetime.now(UTC).isoformat(), **extra}
            if self.failure is not None:
                meta["recording_error"] = self.failure
            await sink.upload(self.session_id, path, meta)
        except Exception as err:
            log.error("kube exec recording %s not stored: %s", self.session_id, err)
