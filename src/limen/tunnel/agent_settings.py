"""What a tunnel agent is configured with: :class:`TunnelAgentSettings` (timers, the proxy it
must find at the other end, the reconnect schedule) and the types of the callables it serves
dials and heartbeats with.

Built by the node agent (defaults), the leaf proxy's cluster links (``peer_trust``,
``peer_cluster``, their heartbeat interval and backoff), tests and the benchmark; read by
:class:`limen.tunnel.agent.TunnelAgent` (reconnect policy) and
:class:`limen.tunnel.agent_conn.AgentConnection` (one control connection).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509

from limen.aio.backoff import Backoff
from limen.ca.keys import PublicKey
from limen.tunnel.protocol import KIND_NODE, MODE_RAW, DialRequest, Locks, RootCAs, TrustPush

__all__ = ["DialHandler", "DialPreparer", "HeartbeatSource", "PreparedDial",
           "TunnelAgentSettings"]

DialHandler = Callable[[socket.socket, DialRequest], Awaitable[None]]
"""Serves one dial on the connected data socket (it owns the socket from then on)."""
HeartbeatPayload = dict[str, Any] | list[dict[str, Any]]
HeartbeatSource = Callable[[], HeartbeatPayload | Awaitable[HeartbeatPayload]]
"""The payload of every heartbeat: the agent's Resource document, or a list of them (a db
agent heartbeats each database it serves, one message each)."""


class PreparedDial(Protocol):
    """A dial already resolved and connected on the serving side."""

    async def serve(self, sock: socket.socket) -> None:
        """Serve it on the data socket (which it owns from then on)."""
        ...

    def cancel(self) -> None:
        """The data connection could not be opened: release what was prepared."""
        ...


DialPreparer = Callable[[DialRequest], Awaitable[PreparedDial]]
"""Resolves and authorizes a dial; a :class:`LimenError` is answered with ``dial_failed``."""


@dataclass(frozen=True)
class TunnelAgentSettings:
    """Everything but the agent's address, credentials and callables; the defaults are the
    node agent's."""

    peer_trust: Mapping[str, Sequence[PublicKey]] | None = None
    """Host CA keys that verify the proxy's welcome; None: this cluster's host CA."""
    peer_cluster: str | None = None
    """The cluster the proxy at the other end must belong to; None: the agent's own."""
    peer_tls_cas: Sequence[x509.Certificate] | None = None
    """TLS CA certificates of ``peer_cluster``, which verify the proxy's web certificate when
    the tunnel goes through its web port (``tls://``); None: the agent's own cluster's."""
    heartbeat_interval: float | None = None
    """Seconds between heartbeats; None: what the proxy's welcome says."""
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    connect_timeout: float = 10.0
    """TCP connect and SSH login of the control connection, the welcome, a data connection,
    an auth connect request."""
    stable_after: float = 10.0
    """A connection welcomed and up this long resets the backoff schedule."""
    redundant_retry: float = 30.0
    """After reaching a proxy another tunnel of the agent pool holds, wait this long."""
    forget_after: float = 60.0
    """An agent pool stops the tunnel to an address no proxy has announced for this long
    (and that is not connected)."""
    auth_idle_timeout: float = 600.0
    """Idle timeout of a connection to auth through :meth:`TunnelAgent.local_auth_listener`."""
    backoff: Callable[[], Backoff] = Backoff
    """Makes the agent's reconnect schedule (one per agent)."""
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    """Waits out a reconnect delay (tests replace it)."""
    clock: Callable[[], float] = time.time
    """Wall clock for the proxy certificate's validity check."""
    serves: frozenset[tuple[str, str]] = frozenset({(KIND_NODE, MODE_RAW)})
    """The (kind, mode) dials this agent serves; any other is answered ``dial_failed``."""
    on_locks: Callable[[Locks], None] | None = None
    """A leaf's cluster link: receives the root's ``locks`` messages; None: such a message is
    a protocol error (an agent's proxy never sends one)."""
    on_cas: Callable[[RootCAs], None] | None = None
    """A leaf's cluster link: receives the root's ``cas`` messages (its public CAs); None: such
    a message is a protocol error."""
    on_trust: Callable[[TrustPush, str], object] | None = None
    """Receives auth's signed trust answer pushed by a proxy (the message and the proxy's host
    id; ``limen.trust.roots_poller`` checks it); set: the hello asks for them. None: none is
    asked for, and one is a protocol error."""
