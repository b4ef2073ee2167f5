"""``NodeSSHServer``: the node agent's SSH server, reached directly or through the tunnel.

Called by the daemon (node role) and by the reverse tunnel
(``limen.tunnel.agent.TunnelAgent(handler=server.handle_socket)``)::

    direct:  ssh ──TCP──▶ listen("0.0.0.0:3022") ──▶ NodeConnection ─┐
    tunnel:  ssh ─▶ proxy ─▶ data conn ─▶ handle_socket(sock, addr) ──┤ cert auth, RBAC,
                                                                      ▼ sessions, recording
                                                          NodeConnectionHandler / NodeSession

``start()`` (also run by the first ``listen`` / ``handle_socket``) completes the recordings a
previous run left behind and hands them to the sink. ``close()`` stops the listeners, hangs up
every session (their processes get SIGHUP; exit status, ``session.end`` and the recording
follow as usual), closes the connections and waits for audit events and recording uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import replace

import asyncssh

from limen.agents.node.config import NodeServerConfig, server_options
from limen.agents.node.connection import NodeConnection, NodeConnectionHandler
from limen.agents.node.context import Auditor, NodeContext, TrustSource
from limen.agents.node.locks import enforce_strict_locks
from limen.agents.node.policy import AccessPolicy
from limen.ca.host_credentials import HostCredentials
from limen.errors import BadParameter
from limen.events.emitter import Emitter
from limen.net.address import bind_tcp, parse_address, socket_address
from limen.net.tcp import tune_socket
from limen.recording.recovery import recover_recordings
from limen.recording.sink import RecordingSink

__all__ = ["SFTP_SERVER_PATHS", "NodeSSHServer", "find_sftp_server", "sftp_lookup"]

log = logging.getLogger("limen.agents.node")

SFTP_SERVER_PATHS = (
    "/usr/lib/openssh/sftp-server",      # Debian, Ubuntu (openssh-sftp-server)
    "/usr/libexec/openssh/sftp-server",  # Fedora, RHEL
    "/usr/lib/sftp-server",
    "/usr/libexec/sftp-server",
)
_CLOSE_GRACE_SECONDS = 5.0


def find_sftp_server(candidates: Sequence[str] = SFTP_SERVER_PATHS) -> str | None:
    """The first executable OpenSSH ``sftp-server`` among ``candidates``."""
    return next((p for p in candidates if os.access(p, os.X_OK)), None)


def sftp_lookup(configured: str | None) -> Callable[[], str | None]:
    """The per-request lookup of ``sftp-server``: the configured path while it is executable,
    else (nothing configured) the usual places. Asked at each request, so a package
    installed while the agent runs is used at once."""
    if configured:
        return lambda: configured if os.access(configured, os.X_OK) else None
    return find_sftp_server


class NodeSSHServer:
    """See the module docstring."""

    def __init__(self, config: NodeServerConfig, trust: TrustSource, access: AccessPolicy,
                 emitter: Emitter, recordings: RecordingSink) -> None:
        self.config = config
        lookup = sftp_lookup(config.sftp_server)
        if lookup() is None:
            log.warning("no sftp-server %s: scp and sftp answer 'install openssh-sftp-server "
                        "on this node' until there is one",
                        f"at {config.sftp_server}" if config.sftp_server else "found")
        self.context = NodeContext(config, trust, access, Auditor(emitter, config.cluster),
                                   recordings, lookup)
        self.handlers: set[NodeConnectionHandler] = set()
        self.recovered: list[str] = []
        self._options: asyncssh.SSHServerConnectionOptions | None = None
        self._servers: list[asyncio.Server] = []
        self._start_lock = asyncio.Lock()
        self._closing = False
        self._lock_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Prepare the SSH options and recover leftover recordings (idempotent)."""
        async with self._start_lock:
            if self._options is not None:
                return
            self.recovered = await recover_recordings(self.config.sessions_dir,
                                                      self.context.recordings)
            self._lock_task = asyncio.get_running_loop().create_task(enforce_strict_locks(
                self.context, self.handlers, self.config.lock_recheck_interval,
                self.config.locks))
            if self.recovered:
                log.warning("recovered %d unfinished session recording(s)",
                            len(self.recovered))
            self._options = await asyncssh.SSHServerConnectionOptions.construct(
                server_factory=self._new_handler, **server_options(self.config))

    async def use_credentials(self, credentials: HostCredentials) -> None:
        """New connections get ``credentials``' host certificate (a host CA rotation:
        ``limen.agents.host_cert_renewal``); open sessions keep theirs."""
        self.config = replace(self.config, credentials=credentials)
        self._options = await asyncssh.SSHServerConnectionOptions.construct(
            server_factory=self._new_handler, **server_options(self.config))

    def _new_handler(self) -> NodeConnectionHandler:
        return NodeConnectionHandler(self.context, self.handlers)

    def _connection(self, client_addr: tuple[str, int] | None = None) -> NodeConnection:
        assert self._options is not None
        return NodeConnection(asyncio.get_running_loop(), self._options,
                              client_addr=client_addr)

    async def listen(self, address: str) -> str:
        """Accept SSH connections on ``host:port`` (port 0: any); returns the bound address."""
        await self.start()
        sock = bind_tcp(address)
        server = await asyncio.get_running_loop().create_server(self._connection, sock=sock)
        self._servers.append(server)
        return socket_address(sock)

    async def handle_socket(self, sock: socket.socket, client_addr: str) -> None:
        """Serve one SSH connection on a connected socket (the tunnel's data connection);
        ``client_addr`` is the user's address as the proxy saw it. Returns when it ends."""
        try:
            host, port = parse_address(client_addr)
        except BadParameter:
            host, port = client_addr or "unknown", 0
        try:
            await self.start()
            tune_socket(sock)
            sock.setblocking(False)
            _, conn = await asyncio.get_running_loop().connect_accepted_socket(
                lambda: self._connection((host, port)), sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            await conn.wait_closed()
        finally:
            conn.abort() if self._closing else conn.close()

    async def close(self) -> None:
        """Stop listening, end every session cleanly, wait for audit and recordings."""
        self._closing = True
        if self._lock_task is not None:
            self._lock_task.cancel()
        for server in self._servers:
            server.close()
        handlers = list(self.handlers)
        sessions = [s for h in handlers for s in list(h.state.sessions)]
        for session in sessions:
            session.hangup("the node agent is stopping")
        tasks = [s._task for s in sessions if s._task is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_GRACE_SECONDS):
                await asyncio.gather(*tasks, return_exceptions=True)
        for handler in handlers:
            if handler.conn is not None:
                handler.disconnect_reason = "the node agent is stopping"
                handler.conn.close()
        for handler in handlers:
            if handler.conn is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(_CLOSE_GRACE_SECONDS):
                        await handler.conn.wait_closed()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        await self.context.wait_background()
        await self.context.audit.drain()
