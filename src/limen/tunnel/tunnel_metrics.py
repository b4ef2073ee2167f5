"""What a proxy's tunnel server reports to the process's metrics: the agents holding a tunnel
(read from its registry at each scrape), tunnels registered and registered again (an agent
that lost its tunnel to this proxy and came back), heartbeats by role.

Called by :class:`limen.tunnel.server.TunnelServer` at start, stop, each registration and each
heartbeat; does nothing when the server was given no metrics.
"""

from __future__ import annotations

from collections.abc import Callable

from limen.diag.metrics import Metrics

__all__ = ["TunnelMetrics"]


class TunnelMetrics:
    def __init__(self, metrics: Metrics | None, proxy: str) -> None:
        self.metrics = metrics
        self.proxy = proxy
        self._seen: set[str] = set()

    def serving(self, agents: Callable[[], int]) -> None:
        if self.metrics is not None:
            self.metrics.tunnel_agents.add(self.proxy, agents)

    def stopped(self) -> None:
        if self.metrics is not None:
            self.metrics.tunnel_agents.remove(self.proxy)

    def registered(self, host_id: str) -> None:
        if self.metrics is None:
            return
        self.metrics.tunnel_connections.labels(self.proxy).inc()
        if host_id in self._seen:
            self.metrics.tunnel_reconnects.labels(self.proxy).inc()
        self._seen.add(host_id)

    def heartbeat(self, role: str) -> None:
        if self.metrics is not None:
            self.metrics.heartbeats.labels(role).inc()
