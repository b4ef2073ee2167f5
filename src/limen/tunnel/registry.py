"""The proxy's registry of connected agents, keyed by host id.

An entry appears when an agent's control connection has passed the host-certificate check,
is refreshed by every heartbeat, and disappears when the connection closes (keepalives detect
dead peers). A reconnecting agent replaces its previous entry. Read by the proxy's routing;
written by :mod:`limen.tunnel.server`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from limen.aio.changed import Changed

R = TypeVar("R")

__all__ = ["AgentRecord", "AgentRegistry", "Registry"]


@dataclass(frozen=True)
class AgentRecord:
    host_id: str
    """From the agent's verified host certificate."""
    hostname: str
    cluster: str
    role: str
    """System role from the certificate: node, db, kube, app."""
    address: str
    """``host:port`` the control connection came from."""
    connected_at: datetime
    last_heartbeat: datetime | None = None
    resource: Mapping[str, Any] | None = None
    """The Resource document of the last heartbeat, as the agent sent it."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """``metadata.labels`` of the last heartbeat (static and dynamic labels)."""

    @property
    def name(self) -> str:
        """Node name for routing: the hostname from the verified certificate (an agent's
        heartbeat cannot claim another node's name), else the heartbeat's resource name."""
        if self.hostname:
            return self.hostname
        meta = (self.resource or {}).get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        return name if isinstance(name, str) and name else self.host_id

    def with_heartbeat(self, resource: Mapping[str, Any], when: datetime) -> AgentRecord:
        meta = resource.get("metadata")
        raw = meta.get("labels") if isinstance(meta, Mapping) else None
        labels = ({str(k): str(v) for k, v in raw.items() if isinstance(v, str)}
                  if isinstance(raw, Mapping) else {})
        return replace(self, last_heartbeat=when, resource=dict(resource), labels=labels)


class Registry(Mapping[str, R]):
    """Records by key, a read-only mapping for readers; ``put``/``remove`` for the tunnel
    server; ``wait_for`` wakes on every change. Agents and cluster links each have one."""

    def __init__(self, key: Callable[[R], str]) -> None:
        self._key = key
        self._records: dict[str, R] = {}
        self._changed = Changed()

    def __getitem__(self, key: str) -> R:
        return self._records[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def put(self, record: R) -> None:
        self._records[self._key(record)] = record
        self._changed.notify()

    def remove(self, key: str) -> None:
        if self._records.pop(key, None) is not None:
            self._changed.notify()

    async def wait_for(self, predicate: Callable[[Registry[R]], bool], within: float) -> None:
        """Return once ``predicate(self)`` holds; ``TimeoutError`` after ``within`` s."""
        async with asyncio.timeout(within):
            while not predicate(self):
                await self._changed.event.wait()


class AgentRegistry(Registry[AgentRecord]):
    """Connected agents by host id."""

    def __init__(self) -> None:
        super().__init__(lambda record: record.host_id)
