"""The reverse-tunnel server (proxy side, listener ``tunnel``): control and data connections.

::

    agent ──TCP──▶ tunnel port ──first bytes──┬─ "SSH-"         control connection (asyncssh,
                                              │                  see limen.tunnel.control)
                                              └─ "LIMEN-DATA n\\n" data connection: paired with
                                                                 the dial (or auth request)
                                                                 that issued nonce n

The proxy set (``set_proxies``, fed by ``limen.proxy.proxy_peers`` from auth) goes to every
agent in its ``welcome`` and, when it changes, in a ``proxies`` message: agents keep a tunnel
to each proxy (``limen.tunnel.agent_pool``).

``dial(host_id, request)`` asks the agent over its control connection to open a data
connection, waits for it (``dial_timeout``, ~5 s) and returns it as a :class:`DataConnection`
ready to be attached to a relay. A dial whose control connection closes or is replaced before
its data connection comes fails at once (not after the timeout), and is sent once more over
the connection that replaced it, if any: an agent reconnecting (or reaching the proxy at two
addresses) does not cost a user's session.

The agent may also ask for a data connection to the auth API (``connect`` kind ``auth``): the
proxy splices it to ``auth_address`` with a relay, so agents behind NAT reach auth only through
the proxy while their mutual TLS stays end to end.

The same connections come through the proxy's web port too (TLS routing, ALPN
``limen-tunnel``: :meth:`TunnelServer.protocol` is that route's protocol, fed the TLS stream's
bytes); with an empty ``listeners.tunnel`` that is the only way in.

Garbage, a preamble that does not arrive within ``preamble_timeout``, and unknown, expired or
reused nonces close the connection; nothing else happens. Called by the proxy's SSH service.

Leaf clusters' proxies connect here too (``remote_trust`` set): their cluster links live in
``clusters``, are dialled with :meth:`TunnelServer.dial_cluster`, are sent this cluster's locks
on its users (:meth:`TunnelServer.publish_locks`) and its public CAs
(:meth:`TunnelServer.publish_cas`), may send their own CAs (``leaf_cas``, passed to
``on_cluster_cas`` with the link's verified cluster) and may ask for nothing
(:mod:`limen.tunnel.clusters`).

Agents whose hello asked for it get auth's signed trust answer (fed by
``limen.proxy.trust_push``): the one kept (:meth:`TunnelServer.keep_trust`) when they
register, then each one published (:meth:`TunnelServer.publish_trust`); the agents check
auth's signature, the proxy only carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncssh

from limen.ca.host_credentials import HostCredentials
from limen.ca.ssh_peer import host_key, trust_map
from limen.diag.metrics import Metrics
from limen.errors import AccessDenied, ConnectionProblem, LimenError, NotFound
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.net.address import bind_tcp, parse_address, socket_address
from limen.net.relay import Relay
from limen.net.sshalgs import MAX_PACKET, server_algorithms
from limen.tunnel.clusters import ClusterRecord, ClusterRegistry, RemoteTrust, link_key
from limen.tunnel.control import AgentLink
from limen.tunnel.nonces import NonceEntry, NonceTable
from limen.tunnel.protocol import (
    KIND_AUTH,
    MAX_PROXIES,
    Connect,
    ConnectFailed,
    ConnectOk,
    Dial,
    DialRequest,
    Locks,
    Message,
    Proxies,
    ProxyEntry,
    RootCAs,
    TrustPush,
    encode,
)
from limen.tunnel.registry import AgentRecord, AgentRegistry
from limen.tunnel.sniffer import DataConnection, PortSniffer
from limen.tunnel.tunnel_metrics import TunnelMetrics

__all__ = ["ClusterCAsSink", "ClusterSink", "DataConnection", "HeartbeatSink", "TunnelServer"]

log = logging.getLogger(__name__)

HeartbeatSink = Callable[[AgentRecord, Mapping[str, Any]], Awaitable[None]]
"""Receives every agent heartbeat (the proxy forwards it to auth presence)."""
ClusterSink = Callable[[ClusterRecord], Awaitable[None]]
"""Receives a cluster link's heartbeats and its loss (the proxy tells auth). A heartbeat sink
raising :class:`~limen.errors.NotFound` or :class:`~limen.errors.AccessDenied` (the leaf was
removed or is no longer trusted) drops the link."""
ClusterCAsSink = Callable[[str, Mapping[str, Any]], None]
"""Receives a leaf's own CA update (``leaf_cas``) with the cluster of the link it came by (the
proxy hands it to auth, which checks it)."""
MIN_HEARTBEAT_GAP = 1.0
"""Heartbeats closer together than this (seconds) update the registry but are not forwarded."""


class TunnelServer:
    def __init__(
        self, credentials: HostCredentials, *,
        auth_address: str | Callable[[], str] | None = None,
        on_heartbeat: HeartbeatSink | None = None,
        emitter: Emitter | None = None,
        remote_trust: RemoteTrust | None = None,
        on_cluster_heartbeat: ClusterSink | None = None,
        on_cluster_lost: ClusterSink | None = None,
        on_cluster_cas: ClusterCAsSink | None = None,
        dial_timeout: float = 5.0,
        preamble_timeout: float = 5.0,
        hello_timeout: float = 10.0,
        heartbeat_interval: float = 10.0,
        keepalive_interval: float = 15.0,
        keepalive_count_max: int = 3,
        idle_timeout: float = 3600.0,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.credentials = credentials
        self.host_trust = trust_map(credentials)
        self._auth_address = auth_address
        self.on_heartbeat = on_heartbeat
        self.emitter = emitter
        self.remote_trust = remote_trust
        """Host CA keys of an admitted leaf cluster; None: no cluster links accepted."""
        self.on_cluster_heartbeat = on_cluster_heartbeat
        self.on_cluster_lost = on_cluster_lost
        self.on_cluster_cas = on_cluster_cas
        self.dial_timeout = dial_timeout
        self.preamble_timeout = preamble_timeout
        self.hello_timeout = hello_timeout
        self.heartbeat_interval = heartbeat_interval
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.registry = AgentRegistry()
        self.metrics = TunnelMetrics(metrics, credentials.host_id)
        self.clusters = ClusterRegistry()
        """Connected leaf clusters (cluster links)."""
        self.links: set[AgentLink] = set()
        self.address = ""
        self.proxies: tuple[ProxyEntry, ...] = ()
        """The cluster's proxies as agents reach them (see :meth:`set_proxies`)."""
        self._by_host: dict[str, AgentLink] = {}
        self._by_cluster: dict[str, AgentLink] = {}
        self._root_locks: Locks | None = None
        self._root_cas: RootCAs | None = None
        self._trust: bytes | None = None
        """The last ``trust`` message published, encoded."""
        self._nonces = NonceTable()
        self._waiting: dict[str, asyncio.Future[DataConnection]] = {}
        self._dialled_on: dict[str, AgentLink] = {}
        """The control connection each waiting dial was sent on (nonce -> link)."""
        self._last_forward: dict[tuple[str, str], float] = {}
        self._server: asyncio.Server | None = None
        self._options: Any = None
        self.unsorted: set[asyncio.Transport] = set()
        """Connections whose first bytes are not read yet (aborted on stop)."""
        self._relays: set[Relay] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # ------------------------------------------------------------------ lifecycle

    async def use_credentials(self, credentials: HostCredentials) -> None:
        """Trust ``credentials``' host CA keys for agents' hellos and present its host
        certificate to new connections (a CA rotation); open links keep theirs."""
        self.credentials = credentials
        self.host_trust = trust_map(credentials)
        if self._options is not None:
            self._options = await self._construct_options()

    async def start(self, address: str) -> str:
        """Serve, and listen on ``address`` unless it is empty (a proxy publishing only its
        web port: connections come through :meth:`protocol`); the address bound, or ""."""
        self._options = await self._construct_options()
        self.metrics.serving(lambda: len(self.registry))
        if not address:
            log.info("tunnel server: no tunnel listener; agents come through the web port")
            return ""
        sock = bind_tcp(address)
        self.address = socket_address(sock)
        self._server = await asyncio.get_running_loop().create_server(self.protocol, sock=sock)
        log.info("tunnel server listening on %s", self.address)
        return self.address

    def protocol(self) -> PortSniffer:
        """The protocol of one tunnel connection, from its first byte: the tunnel listener's,
        and the web port's ALPN route ``limen-tunnel`` (the TLS transport, after the
        handshake, carries the same bytes)."""
        if self._options is None:
            raise ConnectionProblem("the tunnel server is not started")
        return PortSniffer(self)

    async def _construct_options(self) -> Any:
        key, cert = host_key(self.credentials)
        return await asyncssh.SSHServerConnectionOptions.construct(
            server_factory=lambda: AgentLink(self), server_host_keys=[key],
            server_host_certs=[cert], **server_algorithms(), max_pktsize=MAX_PACKET,
            encoding=None, allow_pty=False,
            agent_forwarding=False, x11_forwarding=False, line_editor=False,
            login_timeout=self.hello_timeout, keepalive_interval=self.keepalive_interval,
            keepalive_count_max=self.keepalive_count_max)

    async def stop(self) -> None:
        self.metrics.stopped()
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self.links):
            link.close()
        for relay in list(self._relays):
            relay.abort("tunnel server stopping")
        for transport in list(self.unsorted):
            transport.abort()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionProblem("the tunnel server is stopping"))
        for task in list(self._tasks):
            task.cancel()
        for link in list(self.links):
            if link.conn is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await link.conn.wait_closed()
        self.links.clear()

    # ------------------------------------------------------------------ the proxy set

    def set_proxies(self, proxies: Sequence[ProxyEntry]) -> None:
        """The cluster's proxies now (sorted, at most ``MAX_PROXIES``): told to every agent
        connected here when it differs from the last set."""
        current = tuple(sorted(set(proxies), key=lambda p: (p.host_id, p.address)))
        current = current[:MAX_PROXIES]
        if current == self.proxies:
            return
        self.proxies = current
        for link in list(self._by_host.values()):
            with contextlib.suppress(ConnectionProblem):
                link.send(Proxies(current))

    # ------------------------------------------------------------------ dialing

    async def dial(self, host_id: str, request: DialRequest) -> DataConnection:
        """A data connection from agent ``host_id`` serving ``request`` (the caller attaches
        it to a relay, or closes it). :class:`NotFound` when the agent is not connected here,
        :class:`ConnectionProblem` when it does not answer in time."""
        def current() -> AgentLink:
            link = self._by_host.get(host_id)
            if link is None or not link.host_id:
                raise NotFound(f"no agent with host id {host_id} is connected to this proxy")
            return link

        return await self._dial_current(current, request)

    async def dial_cluster(self, cluster: str, request: DialRequest) -> DataConnection:
        """A data connection from the proxy of leaf ``cluster`` serving ``request`` (the leaf
        resolves and authorizes the target); errors as :meth:`dial`."""
        def current() -> AgentLink:
            link = self._by_cluster.get(cluster)
            if link is None:
                raise ConnectionProblem(f"cluster {cluster!r} is offline: its proxy has no "
                                        "tunnel to this proxy")
            return link

        return await self._dial_current(current, request)

    async def _dial_current(self, current: Callable[[], AgentLink],
                            request: DialRequest) -> DataConnection:
        """Dial over ``current()``; once more over the link that replaced it if that one
        closed before answering."""
        link = current()
        try:
            return await self._dial(link, request)
        except _LinkGone:
            again = current()
            if again is link:
                raise
            log.info("tunnel: the control connection of %s closed during a dial; dialling "
                     "over the one that replaced it", link.remote_cluster or link.host_id)
            return await self._dial(again, request)

    async def _dial(self, link: AgentLink, request: DialRequest) -> DataConnection:
        host_id = link.host_id
        entry = self._nonces.issue(host_id, "dial")
        future: asyncio.Future[DataConnection] = asyncio.get_running_loop().create_future()
        self._waiting[entry.nonce] = future
        self._dialled_on[entry.nonce] = link
        try:
            link.send(Dial(replace(request, nonce=entry.nonce)))
            async with asyncio.timeout(self.dial_timeout):
                return await future
        except TimeoutError:
            raise ConnectionProblem(f"{link.remote_cluster or 'agent ' + host_id} did not open "
                                    f"a data connection within {self.dial_timeout:.0f} s"
                                    ) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().close()  # paired, but nobody will attach it
            raise
        finally:
            self._waiting.pop(entry.nonce, None)
            self._dialled_on.pop(entry.nonce, None)
            self._nonces.discard(entry.nonce)

    def _abandon_dials(self, link: AgentLink) -> None:
        """Fail at once the dials sent over ``link``, closed or replaced: their data
        connections will not come (their nonces are discarded with the link's)."""
        for nonce in [n for n, on in self._dialled_on.items() if on is link]:
            future = self._waiting.get(nonce)
            if future is not None and not future.done():
                future.set_exception(_LinkGone(
                    f"the tunnel of {link.remote_cluster or 'agent ' + link.host_id} closed "
                    "before it opened the data connection"))

    def dial_failed(self, link: AgentLink, nonce: str, reason: str) -> None:
        future = self._waiting.get(nonce)
        entry = self._nonces.take(nonce)
        if future is None or entry is None or entry.host_id != link.host_id:
            return
        if not future.done():
            future.set_exception(ConnectionProblem(f"agent refused the dial: {reason}"))

    def connect_request(self, link: AgentLink, message: Connect) -> Message:
        if link.remote_cluster:  # never reached (control refuses first); kept as a backstop
            return ConnectFailed(message.id, "a cluster link cannot connect to anything")
        if message.kind != KIND_AUTH:
            return ConnectFailed(message.id, f"unknown connect kind {message.kind!r}")
        if self._auth_address is None:
            return ConnectFailed(message.id, "this proxy does not forward to auth")
        entry = self._nonces.issue(link.host_id, KIND_AUTH)
        return ConnectOk(message.id, entry.nonce)

    # ------------------------------------------------------------------ data connections

    def data_connection(self, nonce: str, transport: asyncio.Transport, leftover: bytes,
                        peer: str) -> None:
        entry = self._nonces.take(nonce)
        if entry is None:
            log.info("tunnel: data connection from %s with an unknown or expired nonce", peer)
            transport.abort()
            return
        conn = DataConnection(transport, leftover, peer, entry.host_id)
        if entry.purpose == KIND_AUTH:
            self._spawn(self._splice_to_auth(conn, entry))
            return
        future = self._waiting.get(nonce)
        if future is None or future.done():
            conn.close()
            return
        future.set_result(conn)

    async def _splice_to_auth(self, conn: DataConnection, entry: NonceEntry) -> None:
        address = self._auth_address() if callable(self._auth_address) else self._auth_address
        assert address is not None
        relay = self.new_relay(f"auth splice for {entry.host_id}")
        try:
            host, port = parse_address(address)
            await asyncio.get_running_loop().create_connection(
                lambda: relay.protocol(1), host, port)
        except (OSError, LimenError) as err:
            log.warning("tunnel: cannot reach auth at %s for agent %s: %s", address,
                        entry.host_id, err)
            conn.close()
            relay.close("auth unreachable")
            return
        conn.attach(relay.protocol(0))

    def new_relay(self, name: str, **kwargs: Any) -> Relay:
        """A relay tracked by this server (aborted on stop)."""
        relay = Relay(idle_timeout=kwargs.pop("idle_timeout", self.idle_timeout), name=name,
                      **kwargs)
        self._relays.add(relay)
        relay.done.add_done_callback(lambda _f: self._relays.discard(relay))
        return relay

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` as a task cancelled on stop."""
        self._spawn(coro)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ agents

    def link_opened(self, link: AgentLink) -> None:
        self.links.add(link)

    def register(self, link: AgentLink, record: AgentRecord) -> None:
        previous = self._by_host.get(record.host_id)
        if previous is not None and previous is not link:
            previous.supersede()
            self._abandon_dials(previous)
            self._nonces.discard_host(record.host_id)
        self._by_host[record.host_id] = link
        if link.wants_trust and self._trust is not None:
            self._send_trust(link, self._trust)
        self.registry.put(record)
        self.metrics.registered(record.host_id)
        log.info("tunnel: agent %s (%s, %s) connected from %s", record.host_id,
                 record.hostname, record.role, record.address)

    def link_lost(self, link: AgentLink) -> None:
        self.links.discard(link)
        self._abandon_dials(link)
        if link.remote_cluster:
            self._cluster_lost(link)
            return
        host_id = link.host_id
        if not host_id:
            return
        if self._by_host.get(host_id) is link:
            del self._by_host[host_id]
            self.registry.remove(host_id)
            self._nonces.discard_host(host_id)
            for key in [k for k in self._last_forward if k[0] == host_id]:
                del self._last_forward[key]
            log.info("tunnel: agent %s disconnected", host_id)

    def heartbeat(self, link: AgentLink, resource: Mapping[str, Any]) -> None:
        host_id = link.host_id
        record = self.registry.get(host_id)
        if record is None or self._by_host.get(host_id) is not link:
            return
        record = record.with_heartbeat(resource, self.now())
        self.registry.put(record)
        self.metrics.heartbeat(record.role)
        now = time.monotonic()
        key = _heartbeat_key(host_id, resource)
        if self.on_heartbeat is None or now - self._last_forward.get(key, -1e9) \
                < MIN_HEARTBEAT_GAP:
            return
        self._last_forward[key] = now
        self._spawn(self._forward_heartbeat(record, resource))

    async def _forward_heartbeat(self, record: AgentRecord, resource: Mapping[str, Any]) -> None:
        assert self.on_heartbeat is not None
        try:
            await self.on_heartbeat(record, resource)
        except (LimenError, OSError) as err:
            log.warning("tunnel: cannot record the heartbeat of %s: %s", record.host_id, err)

    def keep_trust(self, message: TrustPush) -> None:
        """Keep auth's signed full trust answer for each agent registered from now on (that
        asked for it)."""
        self._trust = encode(message)

    async def publish_trust(self, message: TrustPush, *, batch: int = 256) -> int:
        """Send auth's signed trust answer (or keepalive) now to every agent connected here
        that asked for it (encoded once; the loop yields every ``batch`` agents); the number
        of agents it was written to. ``limen.proxy.trust_push`` calls both."""
        frame = encode(message)
        sent = 0
        for index, link in enumerate([link for link in self._by_host.values()
                                      if link.wants_trust]):
            if index and index % batch == 0:
                await asyncio.sleep(0)
            sent += self._send_trust(link, frame)
        return sent

    def _send_trust(self, link: AgentLink, frame: bytes) -> bool:
        try:
            link.send_frame(frame)
        except ConnectionProblem:  # the channel is closing: the agent reconnects
            return False
        return True

    # ------------------------------------------------------------------ cluster links

    def register_cluster(self, link: AgentLink, record: ClusterRecord) -> None:
        previous = self._by_cluster.get(record.cluster)
        if previous is not None and previous is not link:
            previous.supersede()
            self._abandon_dials(previous)
            self._nonces.discard_host(link_key(record.cluster))
        self._by_cluster[record.cluster] = link
        self.clusters.put(record)
        log.info("tunnel: cluster %s (proxy %s) connected from %s", record.cluster,
                 record.proxy_id, record.address)
        if self._root_locks is not None:
            self._send_locks(link, self._root_locks)
        if self._root_cas is not None:
            self._send_locks(link, self._root_cas)

    def publish_cas(self, message: RootCAs) -> None:
        """Send this cluster's public CAs to every cluster link (and to each link welcomed
        later): ``limen.proxy.trust_root_cas`` calls it on every change."""
        self._root_cas = message
        for link in list(self._by_cluster.values()):
            self._send_locks(link, message)

    def publish_locks(self, message: Locks) -> None:
        """Send this cluster's locks that concern its users at leaves to every cluster link
        (and to each link welcomed later): ``limen.proxy.trust_root_locks`` calls it on every
        change and as a keepalive."""
        self._root_locks = message
        for link in list(self._by_cluster.values()):
            self._send_locks(link, message)

    def _send_locks(self, link: AgentLink, message: Locks | RootCAs) -> None:
        try:
            link.send(message)
        except LimenError as err:  # the channel is closing, or the message exceeds a frame
            log.warning("tunnel: cannot send the %s to cluster %s: %s", message.type,
                        link.remote_cluster, err)

    def _cluster_lost(self, link: AgentLink) -> None:
        cluster = link.remote_cluster
        if self._by_cluster.get(cluster) is not link:
            return
        del self._by_cluster[cluster]
        record = self.clusters.get(cluster)
        self.clusters.remove(cluster)
        self._nonces.discard_host(link.host_id)
        log.info("tunnel: cluster %s disconnected", cluster)
        if record is not None and self.on_cluster_lost is not None:
            self._spawn(self._cluster_sink(self.on_cluster_lost, record, None))

    def cluster_heartbeat(self, link: AgentLink, payload: Mapping[str, Any]) -> None:
        cluster = link.remote_cluster
        record = self.clusters.get(cluster)
        if record is None or self._by_cluster.get(cluster) is not link:
            return
        record = record.with_heartbeat(payload, self.now())
        self.clusters.put(record)
        if self.on_cluster_heartbeat is not None:
            self._spawn(self._cluster_sink(self.on_cluster_heartbeat, record, link))

    def cluster_cas(self, link: AgentLink, update: Mapping[str, Any]) -> None:
        cluster = link.remote_cluster
        if self._by_cluster.get(cluster) is not link:
            return
        if self.on_cluster_cas is None:
            log.info("tunnel: cluster %s sent its CAs; nothing here takes them", cluster)
            return
        self.on_cluster_cas(cluster, update)

    async def _cluster_sink(self, sink: ClusterSink, record: ClusterRecord,
                            link: AgentLink | None) -> None:
        try:
            await sink(record)
        except (NotFound, AccessDenied) as err:
            if link is not None:
                self.refuse(link.peer, f"cluster link of {record.cluster} dropped: {err}")
                link.fail(f"cluster {record.cluster} is no longer trusted here", log_it=False)
        except (LimenError, OSError) as err:
            log.warning("tunnel: cannot report cluster %s to auth: %s", record.cluster, err)

    def refuse_cluster_request(self, link: AgentLink, what: str) -> None:
        """A leaf asked the root for something (auth, a dial, ...): refused, audited, and the
        link dropped: through a cluster link only the root dials."""
        reason = (f"cluster {link.remote_cluster!r} sent a {what!r} request through its "
                  "cluster link; a leaf may not ask the root for anything")
        log.warning("tunnel: %s; dropping the link from %s", reason, link.peer)
        if self.emitter is not None:
            self._spawn(self._audit("access.denied", remote_addr=link.peer, reason=reason,
                                    remote_cluster=link.remote_cluster, request=what,
                                    listener="tunnel"))
        link.fail(reason, log_it=False)

    # ------------------------------------------------------------------ refusals

    def refuse(self, peer: str, reason: str) -> None:
        """Log (and audit, when an emitter is set) a refused tunnel connection."""
        log.warning("tunnel: refused connection from %s: %s", peer, reason)
        if self.emitter is not None:
            self._spawn(self._audit_refusal(peer, reason))

    async def _audit_refusal(self, peer: str, reason: str) -> None:
        await self._audit("auth", success=False, remote_addr=peer, reason=reason,
                          listener="tunnel")

    async def _audit(self, event_type: str, *, success: bool | None = None,
                     **fields: Any) -> None:
        assert self.emitter is not None
        try:
            await self.emitter.emit(make_event(event_type, success=success,
                                               cluster=self.credentials.cluster, **fields))
        except (LimenError, OSError):
            log.exception("tunnel: cannot audit a refused connection")

    def new_ssh_connection(self) -> Any:
        return asyncssh.SSHServerConnection(asyncio.get_running_loop(), self._options)


class _LinkGone(ConnectionProblem):
    """The control connection a dial was sent over closed, or was replaced, before the
    agent's data connection came."""


def _heartbeat_key(host_id: str, resource: Mapping[str, Any]) -> tuple[str, str]:
    """Forwarding is throttled per agent and resource (a db agent beats for each database)."""
    meta = resource.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return host_id, name if isinstance(name, str) else ""
