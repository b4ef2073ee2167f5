"""Runs a node agent in ``limen start``: its SSH server on the ``node_ssh`` listener (direct
access) and reverse tunnels to every proxy (``limen.tunnel.agent_pool``: the one given, then
each one the proxies announce), so it is reachable with no inbound port; it
heartbeats its Resource (name, address, static and command-generated labels) over the tunnel.
``on_tunnel`` runs before the tunnel connects (a separately run node attaches its route to
auth there). Called by ``limen.cli.compose``.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from limen.agents.node.config import NodeServerConfig
from limen.agents.node.context import TrustSource
from limen.agents.node.dynamic_labels import DynamicLabels
from limen.agents.node.policy import AccessPolicy
from limen.agents.node.ssh_server import NodeSSHServer
from limen.api.resources import API_VERSION
from limen.events.emitter import Emitter
from limen.recording.sink import RecordingSink
from limen.tunnel.agent_pool import TunnelAgentPool
from limen.tunnel.protocol import DialRequest

__all__ = ["NodeService", "node_resource"]


def node_resource(hostname: str, labels: Mapping[str, str], address: str,
                  host_id: str) -> dict[str, Any]:
    """The Resource document a node heartbeats (``lmsh ls`` shows it)."""
    return {
        "apiVersion": API_VERSION, "kind": "Resource",
        "metadata": {"name": hostname, "labels": dict(labels)},
        "spec": {"kind": "ssh", "hostname": hostname, "address": address,
                 "description": f"Limen node agent {host_id}"},
    }


class NodeService:
    name = "node"

    def __init__(self, config: NodeServerConfig, listen_address: str, trust: TrustSource,
                 access: AccessPolicy, emitter: Emitter, recordings: RecordingSink,
                 tunnel_address: Callable[[], str], *, labels: DynamicLabels | None = None,
                 on_tunnel: Callable[[TunnelAgentPool], Awaitable[None]] | None = None) -> None:
        self.config = config
        self.labels = labels or DynamicLabels(config.labels)
        self._on_tunnel = on_tunnel
        self.listen_address = listen_address
        self.server = NodeSSHServer(config, trust, access, emitter, recordings)
        self._tunnel_address = tunnel_address
        self.tunnel: TunnelAgentPool | None = None
        self.address = ""

    async def _serve(self, sock: socket.socket, request: DialRequest) -> None:
        await self.server.handle_socket(sock, request.client_addr)

    def _heartbeat(self) -> dict[str, Any]:
        creds = self.config.credentials
        return node_resource(creds.hostname or creds.host_id, self.labels.current(),
                             self.address, creds.host_id)

    async def start(self) -> dict[str, str]:
        await self.labels.start()
        self.address = await self.server.listen(self.listen_address)
        self.tunnel = TunnelAgentPool(self._tunnel_address(), self.config.credentials,
                                      self._serve, self._heartbeat)
        if self._on_tunnel is not None:
            await self._on_tunnel(self.tunnel)
        await self.tunnel.start()
        return {"node_ssh": self.address}

    async def stop(self) -> None:
        if self.tunnel is not None:
            await self.tunnel.stop()
        await self.server.close()
        await self.labels.stop()
