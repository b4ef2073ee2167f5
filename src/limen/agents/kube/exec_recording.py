"""Recording of interactive ``kubectl exec -it`` / ``attach -it`` sessions as asciicast v2,
like SSH sessions (``lmsh play``, ``lmsh recordings``).

The kube agent relays the upgraded connection byte for byte; an :class:`ExecRecorder` gets a
copy of each direction and reads the channel protocol of ``v5.channel.k8s.io`` /
``v4.channel.k8s.io`` from its WebSocket messages (:mod:`limen.agents.kube.ws_frames`): the
first byte of a message is its channel — 1 stdout and 2 stderr become output events, 4
(``{"Width": W, "Height": H}``, from the client) resize events; stdin is not recorded. A
session on another protocol (SPDY) is not recorded (the caller is told by :meth:`accepts`).
The file is written by :class:`~limen.recording.writer.CastWriter` off the relay's path and
handed to the agent's recording sink (auth's store, through the tunnel for an agent apart) at
the end, with the metadata ``lmsh recordings`` lists and role rules decide on. Called by
:mod:`limen.agents.kube.kube_service`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from limen.agents.kube.ws_frames import FrameDecoder
from limen.recording.asciicast import CastHeader
from limen.recording.sink import RecordingSink
from limen.recording.writer import CastWriter, RecordingTask

__all__ = ["CHANNEL_PROTOCOLS", "ExecRecorder"]

log = logging.getLogger(__name__)

CHANNEL_PROTOCOLS = frozenset({"v5.channel.k8s.io", "v4.channel.k8s.io"})
_STDOUT, _STDERR, _RESIZE = 1, 2, 4


class ExecRecorder:
    """One interactive exec/attach being recorded (see the module)."""

    def __init__(self, task: RecordingTask, writer: CastWriter, session_id: str,
                 meta: dict[str, Any]) -> None:
        self.task = task
        self.writer = writer
        self.session_id = session_id
        self.meta = meta
        self.started = time.time()
        self._from_client = FrameDecoder()
        self._from_server = FrameDecoder()

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
        return protocol in CHANNEL_PROTOCOLS

    def from_client(self, data: bytes) -> None:
        for _opcode, message in self._from_client.feed(data):
            if message[:1] == bytes((_RESIZE,)):
                try:
                    size = json.loads(message[1:])
                    self.writer.resize(int(size["Width"]), int(size["Height"]))
                except (ValueError, KeyError, TypeError):
                    continue

    def from_server(self, data: bytes) -> None:
        for _opcode, message in self._from_server.feed(data):
            if message[:1] in (bytes((_STDOUT,)), bytes((_STDERR,))) and len(message) > 1:
                self.writer.output(message[1:])
        self.task.nudge()

    async def finish(self, sink: RecordingSink, **extra: Any) -> None:
        """Complete the file and hand it to ``sink`` (errors are logged: the file stays in
        the sessions directory for a later upload)."""
        try:
            path: Path = await self.task.finish()
            meta = {**self.meta, "incomplete": False,
                    "end": datetime.now(UTC).isoformat(), **extra}
            await sink.upload(self.session_id, path, meta)
        except Exception as err:
            log.error("kube exec recording %s not stored: %s", self.session_id, err)
