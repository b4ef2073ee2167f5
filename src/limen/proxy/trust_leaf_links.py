"""The leaf proxy's cluster links: one reverse tunnel to each root cluster this cluster trusts.

::

    TrustView (limen.trust: enabled TrustedClusters whose handshake is done; the TrustCache
               beside auth, a RemoteTrustCache polling auth in a proxy apart from it)
      └─ LeafLinks.sync()  on every change (and every ``resync`` s, to retry)
           root R appears ─▶ tunnel address: spec.tunnel_address, else the root proxy's
                             /v1/webapi/ping "tunnel" (verified with R's TLS CA, and the
                             server must be R's proxy, not another host of R; a 0.0.0.0 or
                             :: host means the proxy's own host; a tls:// one, R's proxy
                             publishing one port: its web address, TLS routing verified
                             with R's TLS CA) ─▶ TunnelAgent(address,
                             THIS proxy's host credentials (role proxy), peer_trust = R's host
                             CA, peer_cluster = R) ─ reconnects with the usual backoff
           root R disabled, deleted, its CAs or addresses changed ─▶ the link is stopped
                             (and started again from the new state)

    heartbeat ─▶ {nodes: [{name, hostname, host_id, labels}]}: this cluster's nodes, so root
                 users can list them (``lmsh ls --cluster``); nothing else is published
    dial from R {target, user cert} ─▶ prepare(): BEFORE any data connection
         1. the certificate must verify against R's user CA, for cluster R (never another)
         2. its roles go through R's role_map (TrustCache.role_names, read now: a changed
            role_map applies to the next connection); nothing mapped: refused
         3. the node is resolved among those the MAPPED roles may see, in this cluster only
            (never onwards to this cluster's own leaves), and dialled through this proxy's
            tunnel server ─▶ relay: R's data connection ◀──▶ the node's data connection
         4. R's locks (RootLocks: R pushes its locks on users, roles and logins through the
            link) on the user or its ROOT roles refuse it; under the leaf roles' ``lock:
            strict`` a copy older than 30 s refuses it too (cannot verify locks)
       any refusal ─▶ audited here (access.denied, user_cluster R) and answered dial_failed
    root locks ◀─ locks {revision, items} from R ─▶ RootLocks; the sessions of R's users
       relayed here are re-checked (RootSessionGuard): a lock on one cuts its relay (at once
       under ``lock: strict``, at the next check within 2 s otherwise), audited
    root CAs ◀─ cas {update} from R (R's public CAs signed by R's proxy, on every change: a CA
       rotation) ─▶ POST /v1/trust/roots/R/cas to this cluster's auth (CARelay,
       limen.proxy.trust_ca_relay: retried while auth is unreachable), which checks the
       signature itself and stores them
       (limen.auth.trusted_clusters.leaf_cas); the stored change comes back through the
       TrustView. A change of R's CAs alone does not restart the link: its trust in R's proxy
       takes the new host CA keys in place (open sessions stay)
    own CAs ─▶ leaf_cas {update} to R (LeafCAPublisher, limen.proxy.trust_leaf_own_cas: this
       cluster's public CAs signed by this proxy, when a link is welcomed and on every change:
       a CA rotation here); R's auth checks and stores them. A renewed host certificate of
       this proxy (the rotation's update_servers) is presented by each link's next connection

Dials of kind ``db`` and ``kube`` (a root user's ``psql``/``kubectl`` through the root's
fronts) carry the user's X.509 certificate instead and go to
:class:`~limen.proxy.trust_leaf_resources.LeafResourceDials` (the root's TLS CA, role_map,
locks, then this cluster's db/kube routers), when ``routers`` is given; without it they are
refused like any other kind.

The node agent then verifies the same certificate itself (it trusts R's user CA through the
TrustCache too), maps the roles and enforces this cluster's RBAC; the session is recorded and
audited here with ``user_cluster``. A daemon service of ``limen start``
(``limen.cli.compose``; ``limen.cli.compose_remote`` for a proxy apart from auth).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from limen.aio.backoff import Backoff
from limen.aio.task_service import TaskService
from limen.auth.client import AuthClient
from limen.auth.http.trust_leaf import TRUST_ROOTS_PATH
from limen.auth.trusted_clusters.wire import CASet
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.peer_role import require_server_role
from limen.ca.ssh_certs import verify_ssh_user_cert
from limen.errors import AccessDenied, BadParameter, LimenError, NotFound
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.net.address import format_address, parse_address
from limen.net.http import ApiClient
from limen.net.relay import Relay
from limen.net.tunnel_address import TLS_PREFIX, parse_tunnel_address
from limen.proxy.sshproxy import ProxySSHService
from limen.proxy.trust_ca_relay import CARelay
from limen.proxy.trust_leaf_own_cas import LeafCAPublisher
from limen.proxy.trust_leaf_resources import LeafResourceDials, Routers
from limen.services.locks import Locked, LocksUnknown, lock_fields
from limen.trust.cache import TrustedRoot, TrustView, as_local_user
from limen.trust.root_locks import RootLocks
from limen.trust.root_session_locks import RootSessionGuard
from limen.tunnel.agent import PreparedDial, TunnelAgent, TunnelAgentSettings
from limen.tunnel.protocol import (
    KIND_DB,
    KIND_KUBE,
    KIND_NODE,
    MODE_RAW,
    MODE_TLS,
    DialRequest,
    Locks,
    RootCAs,
)

__all__ = ["LeafLinks", "tunnel_address_from_ping"]

log = logging.getLogger(__name__)
_ANY_HOST = ("0.0.0.0", "::", "")  # noqa: S104 - compared, never bound


def tunnel_address_from_ping(proxy_address: str, ping: dict[str, Any]) -> str:
    """The root's tunnel address from its ping; an unspecified host is the proxy's host. A
    root proxy without a tunnel listener names its web port (``tls://``): the link goes
    through ``proxy_address``, the web port it was given, with TLS routing."""
    tunnel = ping.get("tunnel")
    if not isinstance(tunnel, str) or not tunnel:
        raise BadParameter(f"the root proxy {proxy_address} announces no tunnel listener; set "
                           "spec.tunnel_address")
    if parse_tunnel_address(tunnel).tls:
        return TLS_PREFIX + format_address(*parse_address(proxy_address))
    host, port = parse_address(tunnel)
    if host in _ANY_HOST:
        host = parse_address(proxy_address)[0]
    return format_address(host, port)


def _tls_cas(root: TrustedRoot) -> list[x509.Certificate] | None:
    """The root's TLS CA certificates: they verify its proxy's web port (``tls://`` links)."""
    return list(root.tls_ca.trusted_certificates()) if root.tls_ca is not None else None


@dataclass
class _Link:
    root: TrustedRoot
    agent: TunnelAgent


def _state(root: TrustedRoot) -> tuple[Any, ...]:
    """What a running link depends on: a change restarts it (a change of the root's CAs is
    taken in place, :meth:`LeafLinks.sync`)."""
    return root.proxy_address, root.tunnel_address


class _RelayDial:
    """A prepared dial: the node is connected on side 1; the root's data socket joins side 0."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def serve(self, sock: Any) -> None:
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: self.relay.protocol(0), sock=sock)
        except OSError:
            sock.close()
            self.relay.close("the root's data connection failed")
            raise

    def cancel(self) -> None:
        self.relay.close("the root's data connection could not be opened")


class LeafLinks(TaskService):
    """See the module doc. ``proxy()`` is this process's proxy SSH service once started."""

    name = "cluster-links"

    def __init__(self, cache: TrustView, proxy: Callable[[], ProxySSHService | None],
                 emitter: Emitter, *, resync: float = 5.0,
                 heartbeat_interval: float | None = None,
                 backoff: Callable[[], Backoff] = Backoff,
                 clock: Callable[[], float] = time.time,
                 root_locks: RootLocks | None = None, lock_interval: float = 2.0,
                 routers: Callable[[], Routers] | None = None) -> None:
        self.cache = cache
        self.proxy = proxy
        self.emitter = emitter
        self.resync = resync
        self.heartbeat_interval = heartbeat_interval
        self.backoff = backoff
        self.clock = clock
        self.links: dict[str, _Link] = {}
        """Running links by root cluster name."""
        self.relay = CARelay(self._auth, lambda root: f"{TRUST_ROOTS_PATH}/{root}/cas",
                             "root", backoff=backoff)
        """The latest CA update of each root, handed to auth (retried until it answers)."""
        self.errors: dict[str, str] = {}
        """Why a root has no link (address discovery failed), by root cluster name."""
        self.root_locks = root_locks or RootLocks()
        """The roots' locks on their users, as each root last sent them."""
        self.guard = RootSessionGuard(self.root_locks, interval=lock_interval)
        self.own_cas = LeafCAPublisher(self._own, lambda: {name: link.agent for name, link
                                                           in self.links.items()})
        """This cluster's own CAs, sent to each root over its link."""
        self.resources = None if routers is None else LeafResourceDials(
            cache, self._credentials, routers, self.root_locks, self._audit, guard=self.guard)
        """db and kube dials of root users (None: refused)."""

    def _serves(self) -> frozenset[tuple[str, str]]:
        """SSH to nodes; with ``routers``, db and kube (TLS between the two proxies) too."""
        kinds = {(KIND_NODE, MODE_RAW)}
        if self.resources is not None:
            kinds |= {(KIND_DB, MODE_TLS), (KIND_KUBE, MODE_TLS)}
        return frozenset(kinds)

    def _credentials(self) -> HostCredentials | None:
        ssh = self.proxy()
        return ssh.credentials if ssh is not None else None

    def _auth(self) -> AuthClient | None:
        ssh = self.proxy()
        return ssh.auth if ssh is not None else None

    def _own(self) -> tuple[CASet, HostCredentials] | None:
        """This cluster's CAs as this proxy last read them, and its credentials now."""
        ssh = self.proxy()
        cas = ssh.root_cas.cas if ssh is not None else None
        return (cas, ssh.credentials) if ssh is not None and cas is not None else None

    # ------------------------------------------------------------------ service

    async def start(self) -> dict[str, str]:
        await self.guard.start()
        await self.own_cas.start()
        return await super().start()

    async def stop(self) -> None:
        await super().stop()
        await self.own_cas.stop()
        await self.guard.stop()
        await self.relay.stop()
        for name in list(self.links):
            await self._drop(name, "stopping")

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cluster links: sync failed")
            await self.cache.wait_changed(self.resync)

    async def sync(self) -> None:
        """Start, stop or restart links so they match the trusted roots now."""
        ssh = self.proxy()
        if ssh is None:
            return
        roots = {name: root for name, root in self.cache.roots.items()
                 if root.host_ca is not None and root.tls_ca is not None
                 and root.proxy_address}
        for name, link in list(self.links.items()):
            if link.agent.credentials is not ssh.credentials:  # renewed: the next hello
                link.agent.use_credentials(ssh.credentials)
            if name not in roots:
                await self._drop(name, "the TrustedCluster is disabled or deleted")
            elif _state(roots[name]) != _state(link.root):
                await self._drop(name, "the root's addresses changed")
            elif roots[name] is not link.root:
                self._follow_cas(link, roots[name])
        for name, root in roots.items():
            if name not in self.links:
                await self._open(ssh, root)

    async def _open(self, ssh: ProxySSHService, root: TrustedRoot) -> None:
        name = root.root_cluster
        assert root.host_ca is not None
        try:
            address = root.tunnel_address or await self._discover(root)
        except (LimenError, OSError) as err:
            if self.errors.get(name) != str(err):
                log.warning("cluster links: no tunnel address for root %s: %s", name, err)
            self.errors[name] = str(err)
            return
        self.errors.pop(name, None)

        async def prepare(request: DialRequest) -> PreparedDial:
            return await self._prepare(ssh, name, request)

        async def heartbeat() -> dict[str, Any]:
            return await self._heartbeat(ssh)

        def locks(message: Locks) -> None:
            self.root_locks.update(name, message)

        def cas(message: RootCAs) -> None:
            self.relay.hand(name, message.update)

        agent = TunnelAgent(address, ssh.credentials, None, heartbeat, prepare=prepare,
                            settings=TunnelAgentSettings(
                                peer_trust={name: root.host_ca.trusted_public_keys()},
                                peer_cluster=name, peer_tls_cas=_tls_cas(root),
                                heartbeat_interval=self.heartbeat_interval,
                                backoff=self.backoff, clock=self.clock, on_locks=locks,
                                on_cas=cas, serves=self._serves()))
        self.links[name] = _Link(root, agent)
        await agent.start()
        log.info("cluster links: dialling root %s at %s", name, address)

    @staticmethod
    def _follow_cas(link: _Link, root: TrustedRoot) -> None:
        """The root's CAs changed (a rotation): the link's next welcome is verified against
        the root's host CA keys as stored now; the open connection stays."""
        assert root.host_ca is not None
        keys = root.host_ca.trusted_public_keys()
        assert link.root.host_ca is not None
        if keys != link.root.host_ca.trusted_public_keys():
            log.info("cluster links: root %s's host CA keys changed; the link trusts %d key(s)",
                     root.root_cluster, len(keys))
        link.agent.peer_trust = {root.root_cluster: keys}
        link.agent.trust_peer_tls(_tls_cas(root))
        link.root = root

    async def _drop(self, name: str, reason: str) -> None:
        link = self.links.pop(name, None)
        if link is not None:
            await link.agent.stop()
            log.info("cluster links: link to root %s stopped: %s", name, reason)

    async def _discover(self, root: TrustedRoot) -> str:
        assert root.tls_ca is not None
        context = ssl.create_default_context(cadata=root.tls_ca.pem_bundle())
        require_server_role(context, SystemRole.PROXY,  # the root's proxy, not any host of it
                            {root.root_cluster: list(root.tls_ca.trusted_certificates())})
        async with ApiClient(f"https://{root.proxy_address}", context, timeout=10.0) as api:
            ping = await api.call("GET", "/v1/webapi/ping")
        if not isinstance(ping, dict) or ping.get("cluster") != root.root_cluster:
            raise AccessDenied(f"{root.proxy_address} does not serve cluster "
                               f"{root.root_cluster!r}")
        return tunnel_address_from_ping(root.proxy_address, ping)

    # ------------------------------------------------------------------ the link's traffic

    async def _heartbeat(self, ssh: ProxySSHService) -> dict[str, Any]:
        nodes = await ssh.view.nodes(ssh.tunnel.registry)
        return {"kind": "cluster", "nodes": [
            {"name": n.name, "hostname": n.hostnames[0] if n.hostnames else n.name,
             "host_id": n.host_id, "labels": dict(n.labels)} for n in nodes]}

    async def _prepare(self, ssh: ProxySSHService, root_name: str,
                       request: DialRequest) -> PreparedDial:
        if request.kind in (KIND_DB, KIND_KUBE) and self.resources is not None:
            return await self.resources.prepare(root_name, request)
        fields: dict[str, Any] = {"user_cluster": root_name, "target": request.target,
                                  "remote_addr": request.client_addr, "via": "cluster link",
                                  "session_id": request.session_id}
        user = request.user or None
        try:
            if request.kind != KIND_NODE:
                raise AccessDenied(f"this cluster serves no {request.kind!r} dials of its roots")
            root = self.cache.roots.get(root_name)
            if root is None:
                raise AccessDenied(f"cluster {root_name!r} is no longer trusted here")
            identity = self._verify(root, request.cert)
            user = identity.username
            local = as_local_user(self.cache, identity, root_name)
            fields["roles"] = list(local.roles)
            mode = (await ssh.view.role_set(local)).options.lock
            self.root_locks.check(identity, strict=mode == "strict")
            host, port = parse_address(request.target, 0)
            relay = await ssh.connector.connect(
                local, host, port, None, request.client_addr,
                via=f"cluster {root_name}", local_only=True)
        except (AccessDenied, NotFound, BadParameter) as err:
            extra = ({"rule": "lock", **lock_fields(err)}
                     if isinstance(err, Locked | LocksUnknown) else {})
            await self._audit(user, reason=str(err), **fields, **extra)
            raise
        self._guard_session(identity, mode, relay, fields)
        return _RelayDial(relay)

    def _guard_session(self, identity: Identity, mode: str | None, relay: Relay,
                       fields: dict[str, Any]) -> None:
        """Cut the relay when a lock of the root targets the user (RootSessionGuard)."""
        async def end(reason: str, lock: dict[str, Any]) -> None:
            relay.close(reason)
            await self._audit(identity.username, reason=reason, action="session", rule="lock",
                              **fields, **lock)

        untrack = self.guard.track(identity, mode, end)
        relay.done.add_done_callback(lambda _done: untrack())

    def _verify(self, root: TrustedRoot, cert: str) -> Identity:
        if not cert:
            raise AccessDenied("the root sent no user certificate")
        identity = verify_ssh_user_cert(
            cert, {root.root_cluster: root.user_ca.trusted_public_keys()},
            datetime.fromtimestamp(self.clock(), UTC))
        if identity.is_system:
            raise AccessDenied("a certificate of a Limen process cannot open user sessions")
        return identity

    async def _audit(self, user: str | None, **fields: Any) -> None:
        ssh = self.proxy()
        cluster = ssh.credentials.cluster if ssh is not None else ""
        try:
            await self.emitter.emit(make_event("access.denied", cluster=cluster, user=user,
                                               **fields))
        except (LimenError, OSError):
            log.exception("cluster links: cannot audit a refused dial")
