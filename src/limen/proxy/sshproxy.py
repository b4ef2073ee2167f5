"""The proxy's SSH service: the user-facing SSH front, the reverse-tunnel server, and the
connector that routes a user's channel to a node.

::

    user ──SSH (jump)──▶ SSHFront ──▶ SSHConnector.connect(identity, "web1", 22)
                                        1. resolve (routing.py) among the nodes the user may see
                                        2a. agent node:     TunnelServer.dial(host_id) ─┐
                                        2b. agentless node: TCP to spec.address ────────┤
                                        3. relay channel ◀──▶ data connection ◀─────────┘
    agent ──SSH control + data conns──▶ TunnelServer (heartbeats → auth presence)
    ProxyAnnouncer (limen.proxy.proxy_peers): this proxy in auth's proxy set, the set told to
    the agents, which keep a tunnel to every proxy: any proxy reaches any node

    a leaf cluster's target (``node.leaf``, ``proxy:node:port@leaf``, ``--cluster leaf``):
      SSHConnector.connect ──▶ RemoteClusters.connect (limen.proxy.trust_root_routes):
                               cluster_labels, then a dial through the leaf proxy's link
    RootLockPublisher (limen.proxy.trust_root_locks): this cluster's locks on its users sent
      to every leaf's link; the leaf enforces them on this cluster's users
    RootCAPublisher (limen.proxy.trust_root_cas): this cluster's public CAs, signed, sent to
      every leaf's link on each change (a CA rotation reaches the leaves)
    CARelay (limen.proxy.trust_ca_relay): each leaf's own CAs from its link (leaf_cas) handed
      to auth, POST /v1/trust/leaves/<leaf>/cas (a leaf's CA rotation reaches this root)
    TrustPusher (limen.proxy.trust_push): auth's trust answer, signed by auth, pushed to the
      node agents over their tunnels (they stop polling auth for it)

The inner SSH session stays end to end (user ↔ node): the relay moves its bytes without
decrypting them; the only SSH layer the proxy terminates is the user's jump connection.

RBAC at the proxy:

* agent-served nodes: the node agent takes the real decision (login + labels) on every
  session. The proxy only hides nodes the user can never reach: a node is visible when at least
  one of the certificate's logins is allowed on its labels. Hidden nodes answer "unknown node".
  When the client says which login it will use (the ProxyCommand's subsystem connection logs
  in to the proxy with that login), the proxy also refuses a login the roles do not allow on
  the node before dialling (``login 'root' is not allowed on 'vm' (allowed: alice)``); the
  node still decides on its own.
* agentless nodes (stock sshd, ``Resource`` with ``spec.kind: ssh`` and ``spec.address``): the
  proxy is the only Limen component on the path, so it enforces. A ``direct-tcpip`` jump does
  not tell the proxy which login the inner connection will use, so the proxy requires that
  SOME login of the certificate be allowed on the node's labels (with per-session MFA treated
  as not done, so roles requiring it deny), and sshd enforces the login itself: it trusts the
  user CA (``TrustedUserCAKeys``) and accepts only the certificate's principals. Deny rules on
  a specific login are therefore enforced only as far as the certificate's principals reflect
  them; put such nodes behind a node agent for exact per-login decisions. The proxy emits
  ``session.start`` / ``session.end`` for agentless sessions (agents audit their own).

Every failure to route is audited here: ``access.denied`` (a refused login or agentless node)
or ``route.failed`` (unknown, ambiguous or offline target), with user, target and reason.

Wiring (``limen.cli.compose``)::

    ssh = ProxySSHService(settings, proxy_credentials, auth_client, emitter)
    listeners = await ssh.start()      # {"ssh_proxy": "host:port", "tunnel": "host:port"}
    # (tunnel "" when listeners.tunnel is empty: the web port's ALPN route limen-tunnel,
    #  TunnelServer.protocol, is then the only way in; announce_web_port(web) joins the set)
    ...
    await ssh.stop()
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from limen.auth.client import AuthClient
from limen.auth.http.trust_root import TRUST_LEAVES_PATH
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity
from limen.config import Settings
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError, NotFound
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.net.address import parse_address
from limen.net.relay import Relay
from limen.proxy.heartbeat_relay import HeartbeatRelay
from limen.proxy.proxy_peers import (
    ProxyAnnouncer,
    announced_tunnel_address,
    announced_web_tunnel_address,
)
from limen.proxy.routing import ClusterView, Node, address_of, resolve
from limen.proxy.sshfront import SSHFront
from limen.proxy.trust_ca_relay import CARelay
from limen.proxy.trust_push import TrustPusher
from limen.proxy.trust_root_cas import RootCAPublisher
from limen.proxy.trust_root_locks import RootLockPublisher
from limen.proxy.trust_root_routes import RemoteClusters
from limen.rbac.roleset import RoleSet
from limen.services.locks import lock_fields
from limen.tunnel.protocol import KIND_NODE, DialRequest
from limen.tunnel.registry import AgentRecord
from limen.tunnel.server import TunnelServer

__all__ = ["ProxySSHService", "SSHConnector"]

log = logging.getLogger(__name__)


class SSHConnector:
    """Resolves, authorizes and connects one user channel (see the module docstring)."""

    def __init__(self, credentials: HostCredentials, tunnel: TunnelServer, view: ClusterView,
                 emitter: Emitter, *, idle_timeout: float = 3600.0,
                 connect_timeout: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.credentials = credentials
        self.tunnel = tunnel
        self.view = view
        self.emitter = emitter
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.remote: RemoteClusters | None = None
        """Routes to leaf clusters (None: this proxy reaches only its own cluster)."""
        self._tasks: set[asyncio.Future[None]] = set()

    def new_relay(self, name: str) -> Relay:
        return self.tunnel.new_relay(name, idle_timeout=self.idle_timeout)

    async def find(self, identity: Identity, host: str, port: int,
                   cluster: str | None = None) -> tuple[Node, RoleSet]:
        """The node ``host`` names among those ``identity`` may see."""
        if cluster and cluster != self.credentials.cluster:
            raise ConnectionProblem(f"cluster {cluster!r} is not reachable through this proxy")
        nodes, role_set = await asyncio.gather(self.view.nodes(self.tunnel.registry),
                                               self.view.role_set(identity))
        visible = [n for n in nodes if _may_see(role_set, identity, n)]
        return resolve(host, port, visible, self.credentials.cluster), role_set

    async def connect(self, identity: Identity, host: str, port: int, cluster: str | None,
                      client_addr: str, *, via: str, relay: Relay | None = None,
                      cert: str = "", local_only: bool = False,
                      login: str | None = None) -> Relay:
        """A relay whose side 1 is connected to the target; the caller attaches side 0.
        ``cert``: the user's SSH certificate (presented to a leaf cluster); ``local_only``:
        never route to a leaf (dials arriving from a root); ``login``: the Unix login the
        inner session will ask for, when the client told (the subsystem's SSH user name)."""
        if self.remote is not None and not local_only and cluster != self.credentials.cluster:
            if cluster is None:
                host, cluster = await self.remote.cluster_of(host)
            if cluster is not None:
                relay = relay or self.new_relay(f"ssh {identity.username} -> {host}@{cluster}")
                try:
                    await self.remote.connect(identity, cert, host, port, cluster, client_addr,
                                              via=via, relay=relay)
                except BaseException:
                    relay.close("connect failed")
                    raise
                return relay
        node: Node | None = None
        try:
            node, role_set = await self.find(identity, host, port, cluster)
            if login is not None:
                _check_login(role_set, identity, node, login)
            (await self.view.locks()).check(
                identity, node=[n for n in (node.name, node.host_id, *node.hostnames) if n],
                login=login)
        except LimenError as err:
            await self._refused(err, identity, host, node, client_addr, via, login)
            raise
        relay = relay or self.new_relay(f"ssh {identity.username} -> {node.name}")
        session_id = str(uuid.uuid4())
        try:
            if node.agentless:
                await self._connect_agentless(node, role_set, identity, relay, client_addr,
                                              session_id, via)
            else:
                await self._connect_agent(node, identity, relay, client_addr, session_id,
                                          host)
        except LimenError as err:
            relay.close("connect failed")
            await self._refused(err, identity, host, node, client_addr, via, login)
            raise
        except BaseException:
            relay.close("connect failed")
            raise
        return relay

    async def _refused(self, err: LimenError, identity: Identity, target: str,
                       node: Node | None, client_addr: str, via: str,
                       login: str | None) -> None:
        """Every routing failure is audited: ``access.denied`` for a refusal, ``route.failed``
        for an unknown, ambiguous or unreachable target."""
        fields: dict[str, Any] = {"target": target, "reason": str(err),
                                  "remote_addr": client_addr, "via": via,
                                  "proxy": self.credentials.host_id}
        if login is not None:
            fields["login"] = login
        if node is not None:
            fields.update(server=node.name, server_id=node.host_id or None,
                          agentless=node.agentless)
        if err.__cause__ is not None:
            fields["error"] = str(err.__cause__)
        fields.update(lock_fields(err))
        kind = "access.denied" if isinstance(err, AccessDenied) else "route.failed"
        await self._emit(kind, identity, **fields)

    async def _connect_agent(self, node: Node, identity: Identity, relay: Relay,
                             client_addr: str, session_id: str, target: str) -> None:
        if not node.connected_here:
            elsewhere = [p for p in node.tunnels if p != self.credentials.host_id]
            if elsewhere and self.credentials.host_id not in node.tunnels:
                which = "proxy" if len(elsewhere) == 1 else "proxies"
                raise ConnectionProblem(f"node {node.name!r} is connected to {which} "
                                        f"{', '.join(elsewhere)}, not this one")
            # presence outlives the tunnel by a few heartbeats: known, but not connected
            raise ConnectionProblem(f"node {node.name!r} is offline")
        request = DialRequest(kind=KIND_NODE, target=target, client_addr=client_addr,
                              user=identity.username, session_id=session_id)
        try:
            conn = await self.tunnel.dial(node.host_id, request)
        except NotFound as err:  # the tunnel closed since the node list was read
            raise ConnectionProblem(f"node {node.name!r} is offline") from err
        except ConnectionProblem as err:
            raise ConnectionProblem(f"node {node.name!r} did not answer: {err}") from err
        conn.attach(relay.protocol(1))

    async def _connect_agentless(self, node: Node, role_set: RoleSet, identity: Identity,
                                 relay: Relay, client_addr: str, session_id: str,
                                 via: str) -> None:
        allowed = [login for login in identity.logins
                   if role_set.check_ssh(node.labels, login).allowed]
        fields: dict[str, Any] = {"server": node.name, "server_addr": node.address,
                                  "session_id": session_id, "remote_addr": client_addr,
                                  "proxy": self.credentials.host_id, "via": via,
                                  "agentless": True}
        if not allowed:
            reason = (role_set.check_ssh(node.labels, identity.logins[0]).reason
                      if identity.logins else "the certificate holds no login")
            raise AccessDenied(f"access to {node.name!r} denied: {reason}")
        host, port = parse_address(address_of(node))
        try:
            async with asyncio.timeout(self.connect_timeout):
                await asyncio.get_running_loop().create_connection(
                    lambda: relay.protocol(1), host, port)
        except (OSError, TimeoutError) as err:
            log.info("ssh proxy: cannot connect to %s at %s: %s", node.name, node.address,
                     err or "timeout")
            raise ConnectionProblem(f"node {node.name!r} is offline") from (
                err if str(err) else TimeoutError(f"no answer at {node.address} within "
                                                  f"{self.connect_timeout:.0f} s"))
        started = time.monotonic()
        await self._emit("session.start", identity, logins=allowed, **fields)

        def ended(done: Relay) -> None:
            task = asyncio.ensure_future(self._emit(
                "session.end", identity, bytes_in=done.bytes_from[0],
                bytes_out=done.bytes_from[1], duration_seconds=round(
                    time.monotonic() - started, 3), reason=done.close_reason, **fields))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        relay.on_close = ended

    async def _emit(self, event_type: str, identity: Identity, **fields: Any) -> None:
        try:
            await self.emitter.emit(make_event(event_type, cluster=self.credentials.cluster,
                                               user=identity.username, **fields))
        except (LimenError, OSError):
            log.exception("ssh proxy: cannot write audit event %s", event_type)


def _check_login(role_set: RoleSet, identity: Identity, node: Node, login: str) -> None:
    """:class:`AccessDenied` unless ``login`` is one of the certificate's logins allowed on the
    node's labels. Checked before dialling so the user reads why; the node (agent or sshd)
    still enforces on its own."""
    allowed = [name for name in identity.logins
               if role_set.check_ssh(node.labels, name, mfa_verified=True).allowed]
    if login not in allowed:
        raise AccessDenied(f"login {login!r} is not allowed on {node.name!r} "
                           f"(allowed: {', '.join(allowed) or 'none'})")


def _may_see(role_set: RoleSet, identity: Identity, node: Node) -> bool:
    """Some login of the certificate is allowed on the node's labels (MFA assumed: the node,
    or for agentless nodes the enforcement step, decides about it)."""
    return any(role_set.check_ssh(node.labels, login, mfa_verified=True).allowed
               for login in identity.logins)


class ProxySSHService:
    """Listeners ``ssh_proxy`` and ``tunnel`` of the proxy, as one daemon service."""

    name = "proxy-ssh"

    def __init__(self, settings: Settings, credentials: HostCredentials, auth: AuthClient,
                 emitter: Emitter, *, auth_address: str | Callable[[], str] | None = None,
                 idle_timeout: float = 3600.0, view_ttl: float = 2.0,
                 tunnel_options: Mapping[str, Any] | None = None) -> None:
        if not credentials.ssh_cert:
            raise BadParameter("the proxy's credentials hold no SSH host certificate")
        self.settings = settings
        self.credentials = credentials
        self.auth = auth
        self.view = ClusterView(auth, ttl=view_ttl)
        self.remote = RemoteClusters(auth, credentials, self.view, emitter)
        self.heartbeats = HeartbeatRelay(auth, credentials.host_id)
        """The agents' heartbeats, relayed to auth once a second."""
        self.leaf_cas = CARelay(lambda: auth, lambda leaf: f"{TRUST_LEAVES_PATH}/{leaf}/cas",
                                "leaf")
        """The leaves' own CA updates from their cluster links, handed to auth."""
        self.tunnel = TunnelServer(
            credentials, auth_address=auth_address or (lambda: auth.address),
            on_heartbeat=self._heartbeat, emitter=emitter, idle_timeout=idle_timeout,
            remote_trust=self.remote.host_ca_keys, on_cluster_heartbeat=self.remote.heartbeat,
            on_cluster_lost=self.remote.lost, on_cluster_cas=self.leaf_cas.hand,
            **dict(tunnel_options or {}))
        self.remote.bind(self.tunnel)
        self.connector = SSHConnector(credentials, self.tunnel, self.view, emitter,
                                      idle_timeout=idle_timeout)
        self.connector.remote = self.remote
        self.front = SSHFront(self.connector)
        self.root_locks = RootLockPublisher(auth, self.tunnel)
        """This cluster's locks on its users, pushed to the leaves' cluster links."""
        self.root_cas = RootCAPublisher(auth, self.tunnel, lambda: self.credentials)
        """This cluster's public CAs, pushed to the leaves' cluster links."""
        self.trust_push = TrustPusher(auth, self.tunnel, credentials.cluster)
        """Auth's signed trust answer, pushed to the agents."""
        self.peers: ProxyAnnouncer | None = None
        """This proxy in the cluster's proxy set (started with the tunnel listener)."""

    async def use_credentials(self, credentials: HostCredentials) -> None:
        """New connections get ``credentials``' host certificate and trust its CA keys (a
        CA rotation: ``limen.agents.host_cert_renewal``); open ones are untouched."""
        self.credentials = self.connector.credentials = credentials
        await self.tunnel.use_credentials(credentials)
        await self.front.use_credentials(credentials)

    async def start(self) -> dict[str, str]:
        tunnel = await self.tunnel.start(self.settings.listeners.tunnel)
        try:
            await self.heartbeats.start()
            ssh = await self.front.start(self.settings.listeners.ssh_proxy)
            if tunnel:  # else announced once the web port is known (announce_web_port)
                await self._announce(announced_tunnel_address(
                    self.settings.cluster.public_address, tunnel,
                    self.settings.cluster.tunnel_host))
            await self.root_locks.start()
            await self.root_cas.start()
            await self.trust_push.start()
        except BaseException:
            await self.root_cas.stop()
            await self.root_locks.stop()
            if self.peers is not None:
                await self.peers.stop()
            await self.front.stop()
            await self.tunnel.stop()
            await self.heartbeats.stop()
            raise
        return {"ssh_proxy": ssh, "tunnel": tunnel}

    async def announce_web_port(self, web_address: str) -> str:
        """A proxy without a tunnel listener (``listeners.tunnel`` empty) joins the proxy set
        at its web port (``tls://``: TLS routing, ALPN ``limen-tunnel``); the address its
        agents reach the tunnel at (the tunnel listener's when there is one)."""
        if self.peers is not None:
            return self.peers.address
        peers = await self._announce(announced_web_tunnel_address(
            self.settings.cluster.public_address, web_address,
            self.settings.cluster.tunnel_host))
        return peers.address

    async def _announce(self, address: str) -> ProxyAnnouncer:
        self.peers = peers = ProxyAnnouncer(self.auth, self.tunnel, address)
        await peers.start()
        return peers

    async def stop(self) -> None:
        await self.trust_push.stop()
        await self.leaf_cas.stop()
        await self.root_cas.stop()
        await self.root_locks.stop()
        if self.peers is not None:
            await self.peers.stop()
        await self.front.stop()
        await self.tunnel.stop()
        await self.heartbeats.stop()

    async def _heartbeat(self, record: AgentRecord, resource: Mapping[str, Any]) -> None:
        self.heartbeats.submit(record, resource)
