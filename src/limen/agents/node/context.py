"""Shared state of the node agent's SSH server: per server (:class:`NodeContext`), per
connection (:class:`ConnState`), and the ordered, never-blocking audit queue (:class:`Auditor`).

Created by :class:`~limen.agents.node.ssh_server.NodeSSHServer`; read by the connection handler
(:mod:`limen.agents.node.connection`) and the sessions (:mod:`limen.agents.node.session`).
Background work (audit events, recording uploads) is tracked here so ``close()`` can wait for
it: nothing is lost when the agent stops cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from limen.agents.node.certauth import VerifiedUser
from limen.agents.node.config import NodeServerConfig
from limen.agents.node.policy import AccessPolicy
from limen.agents.node.unixuser import UnixUser
from limen.ca.identity import Identity
from limen.ca.keys import PublicKey
from limen.errors import LimenError
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.rbac import SessionOptions
from limen.recording.sink import RecordingSink

__all__ = ["Auditor", "ConnState", "NodeContext", "TrustSource"]

log = logging.getLogger("limen.agents.node")

TrustSource = Callable[[], Mapping[str, Sequence[PublicKey]]]


class Auditor:
    """Emits audit events in order from one worker task; ``emit`` never blocks or raises."""

    def __init__(self, emitter: Emitter, cluster: str) -> None:
        self.emitter = emitter
        self.cluster = cluster
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def emit(self, event_type: str, *, success: bool | None = None, user: str | None = None,
             **fields: Any) -> None:
        try:
            event = make_event(event_type, success=success, cluster=self.cluster, user=user,
                               **fields)
        except LimenError as err:  # a programming error; never take a session down for it
            log.error("cannot build audit event %s: %s", event_type, err)
            return
        self._queue.put_nowait(event)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._queue.empty():
            event = self._queue.get_nowait()
            try:
                await self.emitter.emit(event)
            except Exception as err:
                log.error("audit event %s lost: %s", event.type.value, err)
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every event emitted so far is recorded."""
        await self._queue.join()


@dataclass
class NodeContext:
    """What every connection of one node SSH server shares."""

    config: NodeServerConfig
    trust: TrustSource
    access: AccessPolicy
    audit: Auditor
    recordings: RecordingSink
    sftp_server: Callable[[], str | None]
    """Where OpenSSH's ``sftp-server`` is now (None: not installed), asked at each request."""
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def server_fields(self) -> dict[str, Any]:
        return {"server_id": self.config.host_id, "server_hostname": self.config.hostname,
                "server_labels": dict(self.config.labels)}

    def background(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Run ``coro`` in the background; ``close()`` waits for it; errors are logged."""
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.get_running_loop().create_task(guarded())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def wait_background(self) -> None:
        while self.tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self.tasks))


@dataclass
class ConnState:
    """One SSH connection: who authenticated, as which login, from where."""

    node: NodeContext
    client_addr: tuple[str, int]
    server_addr: tuple[str, int]
    connection_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    login: str = ""
    verified: VerifiedUser | None = None
    options: SessionOptions | None = None
    unix_user: UnixUser | None = None
    last_activity: float = field(default_factory=time.monotonic)
    sessions: set[Any] = field(default_factory=set)
    """The live sessions (:class:`~limen.agents.node.session.NodeSession`)."""

    @property
    def identity(self) -> Identity:
        if self.verified is None:
            raise RuntimeError("connection is not authenticated")
        return self.verified.identity

    def touch(self) -> None:
        """Client activity (resets the idle timer)."""
        self.last_activity = time.monotonic()

    @property
    def remote_addr(self) -> str:
        host, port = self.client_addr
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def fields(self) -> dict[str, Any]:
        """Fields every audit event of this connection carries."""
        out: dict[str, Any] = {"login": self.login, "remote_addr": self.remote_addr,
                               "connection_id": self.connection_id,
                               **self.node.server_fields()}
        if self.verified is not None:
            out["user_cluster"] = self.verified.identity.cluster
            if self.verified.identity.access_requests:  # the elevation this session uses
                out["access_requests"] = list(self.verified.identity.access_requests)
        return out

    @property
    def user(self) -> str | None:
        return None if self.verified is None else self.verified.identity.username
