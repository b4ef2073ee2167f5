"""Agent side of the reverse tunnel: dial out to the proxy, stay connected, serve dials.

::

    TunnelAgent.start()
      └─ loop: AgentConnection.run()   (limen.tunnel.agent_conn: connect, hello, welcome
               │                        checked, heartbeats, dials served)
               │  connection lost ─▶ backoff (0.5 s .. 30 s, full jitter) ─▶ reconnect
               │                     (reset after a connection that stayed up stable_after)
      local_auth_listener() ─▶ 127.0.0.1:P; each accepted connection ─▶ "connect auth" ─▶
                               data connection spliced by the proxy to the auth API

``TunnelAgent`` is the reconnect policy and what callers see (connected, proxy id, counters,
``wait_for``, the auth route, the proxy set its proxy announced); one connection's life is
:class:`~limen.tunnel.agent_conn.AgentConnection`, which knows the agent only through the
``ConnectionOwner`` protocol. Timers and the expected proxy come in a
:class:`~limen.tunnel.agent_settings.TunnelAgentSettings`.

The proxy's address is its tunnel port (``host:port``) or, for a proxy publishing one port,
its web port (``tls://host:port``): then every connection (control, data, auth) is TLS with
ALPN ``limen-tunnel``, the proxy's certificate checked against the cluster's TLS CA
(:mod:`limen.tunnel.tls_dial`), and carries the same bytes inside.

The agent checks the proxy like the proxy checks the agent: the certificate in ``welcome`` must
be a valid host certificate of this cluster with role ``proxy`` for the key the proxy used in
the SSH handshake. Called by the node agent (and later the db, kube and app agents).

An agent pool (:mod:`limen.tunnel.agent_pool`, node and db agents) runs one TunnelAgent per
proxy with itself as their :class:`TunnelObserver`: it learns of every connect, disconnect
and proxy set, and tells each agent which proxies its siblings hold (``hello``'s ``held``). A
connection that reaches a proxy held elsewhere is redundant: closed, and tried again only
after ``redundant_retry`` seconds.

A leaf proxy's cluster link to its root (``limen.proxy.trust_leaf_links``) is a TunnelAgent
too, with the root's host CA as ``peer_trust`` and a ``prepare`` hook: every dial is resolved
and authorized BEFORE its data connection is opened, so a refusal travels back as
``dial_failed``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Protocol

import asyncssh
from cryptography import x509

from limen.aio.changed import Changed
from limen.ca.host_credentials import HostCredentials
from limen.ca.keys import PublicKey
from limen.ca.ssh_peer import host_key, trust_map
from limen.errors import BadParameter, ConnectionProblem, LimenError
from limen.net.tunnel_address import parse_tunnel_address
from limen.tunnel.agent_conn import AgentConnection
from limen.tunnel.agent_settings import (
    DialHandler,
    DialPreparer,
    HeartbeatSource,
    PreparedDial,
    TunnelAgentSettings,
)
from limen.tunnel.auth_route import AuthTicket, LocalAuthListener
from limen.tunnel.protocol import KIND_AUTH, Message, ProxyEntry
from limen.tunnel.stopping import stop_task
from limen.tunnel.tls_dial import tunnel_tls_context

__all__ = ["DialHandler", "DialPreparer", "PreparedDial", "TunnelAgent", "TunnelAgentSettings",
           "TunnelObserver"]

log = logging.getLogger(__name__)


class TunnelObserver(Protocol):
    """Watches tunnel agents (the agent pool)."""

    def held_elsewhere(self, agent: TunnelAgent) -> Collection[str]:
        """Host ids of the proxies the OTHER agents hold."""
        ...

    def changed(self, agent: TunnelAgent) -> None:
        """``agent`` connected, disconnected, was redundant or heard a new proxy set."""
        ...


class TunnelAgent:
    def __init__(
        self, proxy_tunnel_address: str, credentials: HostCredentials,
        handler: DialHandler | None, heartbeat: HeartbeatSource, *,
        prepare: DialPreparer | None = None,
        settings: TunnelAgentSettings | None = None,
        observer: TunnelObserver | None = None,
    ) -> None:
        """Serves dials with ``handler`` (on the data socket), or with ``prepare`` (resolve
        and authorize first, then serve): exactly one of the two."""
        if (handler is None) == (prepare is None):
            raise BadParameter("a tunnel agent needs a dial handler or a dial preparer")
        self.settings = settings = settings or TunnelAgentSettings()
        self.address = proxy_tunnel_address
        self.credentials = credentials
        self.handler = handler
        self.prepare = prepare
        self.heartbeat = heartbeat
        self.backoff = settings.backoff()
        self.connected = asyncio.Event()
        """Set while a verified control connection is up."""
        self.proxy_id = ""
        self.connections = 0
        """How many control connections were established (tests, metrics)."""
        self.last_error = ""
        self.failures = 0
        """Attempts that failed since the last welcome (0: connected, or first attempt)."""
        self.observer = observer
        self.proxies: tuple[ProxyEntry, ...] = ()
        """The cluster's proxies as the last proxy reached told them (kept after a loss)."""
        self.redundant_for = ""
        """The proxy the last connection reached while another tunnel held it ("" if not)."""
        self.tunnel_address = parse_tunnel_address(proxy_tunnel_address)
        """Where and how: the tunnel port, or the web port through TLS routing."""
        self.endpoint = self.tunnel_address.endpoint
        self.client_key, _cert = host_key(credentials)
        self.peer_trust: Mapping[str, Sequence[PublicKey]] = (
            dict(settings.peer_trust) if settings.peer_trust is not None
            else trust_map(credentials))
        self.peer_cluster = settings.peer_cluster or credentials.cluster
        """The cluster the proxy at the other end must belong to."""
        self._own_peer_trust = settings.peer_trust is None
        self._peer_tls_cas = None if settings.peer_tls_cas is None else \
            list(settings.peer_tls_cas)
        self.tls: ssl.SSLContext | None = self._tls_context()
        """Set for a ``tls://`` address: the TLS context of every connection to the proxy."""
        self._current: AgentConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._auth_listener: LocalAuthListener | None = None
        self._welcomed_at: float | None = None
        self._changed = Changed()

    def use_credentials(self, credentials: HostCredentials) -> None:
        """Present ``credentials``' host certificate in the next hellos and, unless given a
        peer trust of its own, trust its host CA keys for the proxy (a CA rotation)."""
        self.credentials = credentials
        if self._own_peer_trust:
            self.peer_trust = trust_map(credentials)
        self.tls = self._tls_context()

    def trust_peer_tls(self, cas: Sequence[x509.Certificate] | None) -> None:
        """Verify the proxy's web certificate with ``cas`` from the next connection on (a
        leaf's link after the root's CA rotation); None: the agent's own cluster's."""
        self._peer_tls_cas = None if cas is None else list(cas)
        self.tls = self._tls_context()

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.tunnel_address.tls:
            return None
        cas = self._peer_tls_cas
        return tunnel_tls_context(self.peer_cluster,
                                  self.credentials.tls_cas() if cas is None else cas)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"tunnel-agent {self.address}")

    async def stop(self) -> None:
        if self._auth_listener is not None:
            self._auth_listener.close()
            self._auth_listener = None
        task, self._task = self._task, None
        await stop_task(task)
        for child in list(self._tasks):
            child.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.connected.clear()

    async def _run(self) -> None:
        while True:
            self._welcomed_at = None
            self.redundant_for = ""
            try:
                await AgentConnection(self).run()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncssh.Error, LimenError, TimeoutError, ValueError) as err:
                self.last_error = str(err) or type(err).__name__
                self.failures += 1
                log.warning("tunnel agent: connection to %s failed: %s", self.address,
                            self.last_error)
            finally:
                self._disconnected()
            if self._was_stable():
                self.backoff.reset()
            await self.settings.sleep(self.settings.redundant_retry if self.redundant_for
                                      else self.backoff.next_delay())

    async def wait_for(self, predicate: Callable[[TunnelAgent], bool], within: float) -> None:
        """Return once ``predicate(self)`` holds (checked at every connect and disconnect);
        ``TimeoutError`` after ``within`` seconds."""
        async with asyncio.timeout(within):
            while not predicate(self):
                await self._changed.event.wait()

    def _was_stable(self) -> bool:
        """The last connection was welcomed and stayed up ``stable_after`` seconds."""
        started = self._welcomed_at
        return started is not None and \
            time.monotonic() - started >= self.settings.stable_after

    # ------------------------------------------------------------------ ConnectionOwner

    def welcomed(self, conn: AgentConnection) -> None:
        self._welcomed_at = time.monotonic()
        self._current = conn
        self.proxy_id = conn.proxy_id
        self.connections += 1
        self.failures = 0
        self.connected.set()
        self._notify()

    def held_elsewhere(self) -> Collection[str]:
        return self.observer.held_elsewhere(self) if self.observer is not None else ()

    def redundant(self, conn: AgentConnection, proxies: Sequence[ProxyEntry]) -> None:
        self.redundant_for = conn.proxy_id
        self.proxies = tuple(proxies)
        self._notify()

    def proxies_announced(self, conn: AgentConnection,
                          proxies: Sequence[ProxyEntry]) -> None:
        if conn is self._current:
            self.proxies = tuple(proxies)
            self._notify()

    def _disconnected(self) -> None:
        self._current = None
        if self.connected.is_set():
            self.connected.clear()
            self._notify()

    def _notify(self) -> None:
        self._changed.notify()
        if self.observer is not None:
            self.observer.changed(self)

    @property
    def takes_leaf_cas(self) -> bool:
        """The proxy of the current connection takes ``leaf_cas`` (its welcome said so)."""
        conn = self._current
        return conn is not None and conn.takes_leaf_cas

    def send(self, message: Message) -> bool:
        """Send ``message`` on the current control connection; False when none is up (nothing
        is queued: send again after the next welcome, :attr:`connections` counts them)."""
        conn = self._current
        return conn is not None and conn.send(message)

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ auth through the proxy

    async def local_auth_listener(self, address: str = "127.0.0.1:0") -> str:
        """A loopback listener whose connections reach the auth API through the proxy (see
        :mod:`limen.tunnel.auth_route`); closed by :meth:`stop`."""
        if self._auth_listener is None:
            self._auth_listener = LocalAuthListener(
                self.request_auth_ticket, self.spawn,
                idle_timeout=self.settings.auth_idle_timeout)
        return await self._auth_listener.start(address)

    async def request_auth_ticket(self) -> AuthTicket:
        """A data connection to auth through this agent's proxy: nonce and tunnel port."""
        nonce = await self.request_auth_nonce()
        host, port = self.endpoint
        return AuthTicket(nonce, host, port, self.tls)

    async def request_auth_nonce(self) -> str:
        """Ask the proxy for a data connection to auth; returns its nonce."""
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                await self.connected.wait()
        except TimeoutError:
            raise ConnectionProblem(f"no tunnel to the proxy {self.address}"
                                    + (f": {self.last_error}" if self.last_error else "")
                                    ) from None
        conn = self._current
        if conn is None:  # never: connected is set only while a connection is current
            raise ConnectionProblem("the tunnel to the proxy went down")
        return await conn.request_connect(KIND_AUTH)
