"""From an authenticated kubectl connection to a kube agent's data connection.

:meth:`KubeRouter.connect` turns the client certificate of the TLS handshake into an identity
(this cluster's TLS CA, expiry, a user's, ``usage: kube``), chooses the kube cluster from the
certificate's scope and what the request names — its path prefix or the connection's server
name (:func:`~limen.proxy.kube.kube_choice.choose`: a certificate with a ``route_to_kube``
reaches only that cluster, one without reaches whichever the request names) — finds that
online kube cluster, decides at the cluster level (``kubernetes_labels``, deny first:
``check_kube``), dials a serving kube agent through its reverse tunnel in ``MODE_TLS`` (the
proxy is the TLS client; the agent must show its kube host certificate with the host id that
was dialled) and sends the :class:`~limen.tunnel.kube_wire.KubeConnect` naming the chosen
cluster. Every refusal is audited here as a failed ``kube.request`` with the reason; the agent
verifies the certificate and the prefix of every request again, and decides and audits each
request. Called by :mod:`limen.proxy.kube.kube_front`.

A request for a trusted leaf cluster's kube cluster (a certificate whose ``route_to_cluster``
names the leaf: ``lmsh kube login --cluster LEAF``) goes to that leaf's proxy through its
cluster link (:class:`~limen.proxy.leaf_forward.LeafForwarder`: the leaf exists and the
roles' ``cluster_labels`` admit it, else refused like an unknown cluster); the leaf verifies
the certificate against this cluster's CA, maps the roles, and its proxy and kube agent decide
and audit (:mod:`limen.proxy.trust_leaf_resources`). The forwarding is audited here as a
``kube.request`` naming ``target_cluster``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.x509_certs import verify_client_cert
from limen.errors import AccessDenied, ConnectionProblem, LimenError, NotFound
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.proxy.agent_dial import AgentDialer
from limen.proxy.kube.kube_choice import KubeChoice, Named, choose
from limen.proxy.leaf_forward import LeafForwarder
from limen.proxy.routing import ClusterView
from limen.tunnel.kube_wire import KubeConnect, encode_connect
from limen.tunnel.protocol import KIND_KUBE
from limen.tunnel.server import TunnelServer

__all__ = ["KubeRouter", "KubeTarget", "Opened"]

_CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class KubeTarget:
    """An online kube cluster as the proxy sees it."""

    name: str
    resource: Mapping[str, Any]
    host_ids: tuple[str, ...]

    @property
    def labels(self) -> dict[str, str]:
        raw = (self.resource.get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in raw.items()}


@dataclass(frozen=True)
class Opened:
    identity: Identity
    target: KubeTarget
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class KubeRouter:
    def __init__(self, credentials: HostCredentials, tunnel: TunnelServer, view: ClusterView,
                 emitter: Emitter, *, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.credentials = credentials
        self.tunnel = tunnel
        self.view = view
        self.emitter = emitter
        self._now = now
        self._clock = clock
        self._trust = {credentials.cluster: credentials.tls_cas()}
        self._agents = AgentDialer(credentials, tunnel, SystemRole.KUBE, KIND_KUBE,
                                   "kube agent", now)
        self.leaves = LeafForwarder(credentials, tunnel, view, KIND_KUBE, now)
        self._cached: tuple[float, list[dict[str, Any]]] | None = None
        self._lock = asyncio.Lock()

    def identify(self, der: bytes | None) -> Identity:
        """The kube certificate's identity (AccessDenied otherwise)."""
        identity = self.verify(der)
        self.check_kube_cert(identity)
        return identity

    def verify(self, der: bytes | None) -> Identity:
        """Who a valid certificate of this cluster names, whatever it is for."""
        if not der:
            raise AccessDenied("no client certificate: run lmsh kube login NAME (Limen "
                               "authenticates kubectl by its certificate)")
        return verify_client_cert(der, self._trust, self._now())

    @staticmethod
    def check_kube_cert(identity: Identity) -> None:
        """AccessDenied unless ``identity`` is a user's kube certificate."""
        if identity.is_system:
            raise AccessDenied("a Limen process certificate cannot use the kube front")
        if "kube" not in identity.usage:
            raise AccessDenied("this certificate is not for a kube cluster: run lmsh kube "
                               "login NAME")

    async def refused(self, reason: str, *, identity: Identity | None, client_addr: str,
                      session_id: str, kube_cluster: str = "", target_cluster: str = ""
                      ) -> None:
        extra: dict[str, Any] = {"target_cluster": target_cluster} if target_cluster else {}
        await self.emitter.emit(make_event(
            "kube.request", success=False, cluster=self.credentials.cluster,
            user=identity.username if identity else None, session_id=session_id,
            kube_cluster=kube_cluster or (identity.route_to_kube or "" if identity else ""),
            remote_addr=client_addr, reason=reason, **extra))

    async def presence(self) -> list[dict[str, Any]]:
        """The kube presence records from auth, cached for a moment; a failed read keeps the
        previous answer (ConnectionProblem without one)."""
        async with self._lock:
            if self._cached is not None and self._clock() - self._cached[0] < _CACHE_SECONDS:
                return self._cached[1]
            try:
                items = list((await self.view.auth.call("GET", "/v1/presence/kubes"))["items"])
            except (LimenError, OSError) as err:
                if self._cached is None:
                    raise ConnectionProblem(f"cannot read the online kube clusters from auth: "
                                            f"{err}") from None
                return self._cached[1]
            self._cached = (self._clock(), items)
            return items

    async def find(self, name: str) -> KubeTarget:
        records = [r for r in await self.presence()
                   if ((r.get("resource") or {}).get("metadata") or {}).get("name") == name]
        if not records:
            raise NotFound(f"kube cluster {name!r} is not online (no kube agent serves it)")
        records.sort(key=lambda r: str(r.get("updated", "")), reverse=True)
        return KubeTarget(name, records[0]["resource"],
                          tuple(str(r.get("host_id", "")) for r in records))

    def choose(self, identity: Identity, named: Named) -> KubeChoice:
        """Where ``identity``'s request naming ``named`` goes (AccessDenied otherwise)."""
        return choose(identity, self.credentials.cluster, named)

    async def connect(self, der: bytes | None, *, client_addr: str, session_id: str,
                      named: Named | None = None) -> Opened:
        """Authenticate, choose the cluster (what the request names: ``named``), decide and
        open (see the module); a refusal is audited and raised as the LimenError the front
        answers with."""
        identity: Identity | None = None
        named = named or Named()
        leaf = ""
        name = ""
        try:
            identity = self.verify(der)
            self.check_kube_cert(identity)  # refused under its name
            assert der is not None
            choice = self.choose(identity, named)
            name, leaf = choice.kube, choice.leaf
            if leaf:
                return await self._forward(identity, der, choice, client_addr, session_id)
            target = await self.find(name)
            try:
                role_set = await self.view.role_set(identity)
            except OSError as err:
                raise ConnectionProblem(f"cannot read the roles from auth: {err}") from None
            decision = role_set.check_kube(target.labels)
            if not decision.allowed:
                raise AccessDenied(f"access to kube cluster {name} denied: {decision.reason}")
            pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode()
            reader, writer = await self.open(target, KubeConnect(
                name, pem, client_addr, session_id), identity.username)
        except LimenError as err:
            local = self.credentials.cluster
            asked = named.as_path(local)
            if asked is not None and not name:
                name, leaf = asked.kube, "" if asked.cluster == local else asked.cluster
            await self.refused(str(err), identity=identity, client_addr=client_addr,
                               session_id=session_id, kube_cluster=name, target_cluster=leaf)
            raise
        return Opened(identity, target, reader, writer)

    async def _forward(self, identity: Identity, der: bytes, choice: KubeChoice,
                       client_addr: str, session_id: str) -> Opened:
        """The connection through leaf ``choice.leaf``'s proxy (see the module doc),
        audited."""
        name, leaf = choice.kube, choice.leaf
        pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode()
        reader, writer = await self.leaves.open(
            identity, der, leaf, target=name,
            first=encode_connect(KubeConnect(name, pem, client_addr, session_id)),
            client_addr=client_addr, session_id=session_id)
        await self.emitter.emit(make_event(
            "kube.request", cluster=self.credentials.cluster, user=identity.username,
            session_id=session_id, kube_cluster=name, remote_addr=client_addr,
            target_cluster=leaf, via="cluster link"))
        return Opened(identity, KubeTarget(name, {}, ()), reader, writer)

    async def open(self, target: KubeTarget, request: KubeConnect, username: str
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A data connection to a kube agent serving ``target``, request sent."""
        return await self._agents.open(
            target.host_ids, target.name, encode_connect(request),
            client_addr=request.client_addr, user=username, session_id=request.session_id)
