"""The root proxy's side of trusted clusters: it accepts leaves' cluster links and routes root
users' sessions through them.

::

    user ──SSH──▶ root SSHFront ──▶ SSHConnector.connect(identity, "web1", 3022, "leaf")
                                      └─▶ RemoteClusters.connect
                                           1. RemoteCluster "leaf" known, the user's roles'
                                              cluster_labels allow its labels (else audited
                                              access.denied; answered like an unknown cluster)
                                           2. TunnelServer.dial_cluster("leaf", {target, user
                                              cert}) ─▶ the leaf proxy verifies the certificate,
                                              maps the roles, resolves and dials its node
                                              (limen.proxy.trust_leaf_links) or answers dial_failed
                                           3. relay: user channel ◀──▶ data connection;
                                              session.start / session.end name target_cluster

The SSH session stays end to end between the user's client and the leaf's node agent, which
verifies the root-signed certificate and enforces the leaf's RBAC after mapping. For the
tunnel server, :meth:`RemoteClusters.host_ca_keys` says which host CA verifies a leaf's link
(the one stored at the handshake, only while the RemoteCluster exists) and
:meth:`heartbeat` / :meth:`lost` report the link to auth (``/v1/remoteclusters/...``).
Called by :mod:`limen.proxy.sshproxy`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from limen.api.resources import Resource
from limen.auth.client import AuthClient
from limen.auth.trusted_clusters.wire import TRUST_LABEL, TRUST_REMOTE
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity
from limen.ca.keys import PublicKey
from limen.errors import AccessDenied, LimenError, NotFound
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.net.address import format_address
from limen.net.relay import Relay
from limen.proxy.routing import ClusterView
from limen.tunnel.clusters import ClusterRecord
from limen.tunnel.protocol import KIND_NODE, DialRequest
from limen.tunnel.server import TunnelServer

__all__ = ["RemoteClusters", "split_cluster_suffix"]

log = logging.getLogger(__name__)


def split_cluster_suffix(host: str, clusters: Sequence[str]) -> tuple[str, str | None]:
    """``web1.leaf`` → ``("web1", "leaf")`` when ``leaf`` is one of ``clusters`` (the longest
    matching name wins); otherwise ``(host, None)``."""
    for cluster in sorted(clusters, key=len, reverse=True):
        suffix = f".{cluster}"
        if host.endswith(suffix) and len(host) > len(suffix):
            return host[: -len(suffix)], cluster
    return host, None


class RemoteClusters:
    """See the module doc. :meth:`bind` gives it the tunnel server it routes through."""

    def __init__(self, auth: AuthClient, credentials: HostCredentials, view: ClusterView,
                 emitter: Emitter) -> None:
        self.auth = auth
        self.credentials = credentials
        self.view = view
        self.emitter = emitter
        self.tunnel: TunnelServer | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    def bind(self, tunnel: TunnelServer) -> None:
        self.tunnel = tunnel

    # ------------------------------------------------------------------ the tunnel server

    async def host_ca_keys(self, cluster: str) -> tuple[PublicKey, ...]:
        """The host CA keys of admitted leaf ``cluster``; :class:`AccessDenied` otherwise."""
        try:
            await self.auth.get("remotecluster", cluster)
            doc = await self.auth.get("certauthority", f"host.{cluster}")
        except NotFound:
            raise AccessDenied(f"no trusted cluster named {cluster!r} was admitted here"
                               ) from None
        stored = Resource.from_document(doc)
        if stored.labels.get(TRUST_LABEL) != TRUST_REMOTE or stored.spec.get("disabled"):
            raise AccessDenied(f"the host CA of cluster {cluster!r} is not trusted here")
        ca = CertAuthority.from_dict(stored.spec)
        if ca.cluster != cluster or ca.type is not CertAuthorityType.HOST:
            raise AccessDenied(f"the stored host CA of {cluster!r} is inconsistent")
        return ca.trusted_public_keys()

    async def heartbeat(self, record: ClusterRecord) -> None:
        await self.auth.call("POST", "/v1/remoteclusters/heartbeat", {
            "cluster": record.cluster, "tunnel": self.credentials.host_id,
            "nodes": [dict(n) for n in record.nodes]})

    async def lost(self, record: ClusterRecord) -> None:
        try:
            await self.auth.call("POST", f"/v1/remoteclusters/{record.cluster}/offline",
                                 {"tunnel": self.credentials.host_id})
        except NotFound:
            return

    # ------------------------------------------------------------------ routing

    async def cluster_of(self, host: str) -> tuple[str, str | None]:
        """``(host without the suffix, leaf)`` for ``node.leaf``; ``(host, None)`` else."""
        if "." not in host:
            return host, None
        names = [*(self.tunnel.clusters if self.tunnel is not None else ()),
                 *(await self.view.remote_clusters())]
        return split_cluster_suffix(host, names)

    async def connect(self, identity: Identity, cert: str, host: str, port: int, cluster: str,
                      client_addr: str, *, via: str, relay: Relay) -> None:
        """Connect side 1 of ``relay`` to ``host`` in leaf ``cluster`` (see the module doc)."""
        assert self.tunnel is not None, "bind() the tunnel server first"
        host, _ = split_cluster_suffix(host, [cluster])
        session_id = str(uuid.uuid4())
        fields: dict[str, Any] = {"target_cluster": cluster, "server": host,
                                  "session_id": session_id, "remote_addr": client_addr,
                                  "proxy": self.credentials.host_id, "via": via}
        remote = (await self.view.remote_clusters()).get(cluster)
        unknown = NotFound(f"unknown cluster {cluster!r}: no such cluster is reachable here")
        if remote is None:
            raise unknown
        decision = (await self.view.role_set(identity)).check_cluster(dict(remote.labels))
        if not decision.allowed:
            await self._emit("access.denied", identity, reason=decision.reason,
                             rule=decision.rule, **fields)
            raise unknown
        if not cert:
            raise AccessDenied("no user certificate to present to the leaf cluster")
        conn = await self.tunnel.dial_cluster(cluster, DialRequest(
            kind=KIND_NODE, target=format_address(host, port) if port else host,
            client_addr=client_addr, user=identity.username, session_id=session_id, cert=cert))
        conn.attach(relay.protocol(1))
        started = time.monotonic()
        await self._emit("session.start", identity, **fields)

        def ended(done: Relay) -> None:
            self._spawn(self._emit(
                "session.end", identity, bytes_in=done.bytes_from[0],
                bytes_out=done.bytes_from[1], reason=done.close_reason,
                duration_seconds=round(time.monotonic() - started, 3), **fields))

        relay.on_close = ended

    async def _emit(self, event_type: str, identity: Identity, **fields: Any) -> None:
        try:
            await self.emitter.emit(make_event(event_type, cluster=self.credentials.cluster,
                                               user=identity.username,
                                               user_cluster=identity.cluster, **fields))
        except (LimenError, OSError):
            log.exception("ssh proxy: cannot write audit event %s", event_type)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
