"""The root proxy's side of database and Kubernetes access to a trusted leaf cluster.

::

    psql / kubectl ──mTLS (root user cert, route_to_cluster "leaf")──▶ root db/kube front
      DBRouter.connect / KubeRouter.connect ─▶ LeafForwarder.open(identity, cert, kind, ...)
        1. the RemoteCluster "leaf" exists here and the user's roles' cluster_labels admit
           its labels (deny by default: an unknown leaf and one the roles do not admit are
           refused alike, "unknown cluster")
        2. TunnelServer.dial_cluster("leaf", {kind db|kube, target, user cert PEM}) over the
           leaf proxy's cluster link; the leaf proxy verifies the certificate against this
           cluster's TLS CA, maps the roles and decides (limen.proxy.trust_leaf_resources)
        3. mutual TLS on the data connection: this proxy presents its proxy certificate, the
           leaf must show its proxy certificate signed by the leaf's TLS CA as stored at the
           trust handshake (``tls.<leaf>``, ``limen.dev/trust: remote``, not disabled)
        4. the first message (the db session request / the kube connection request) is sent;
           the database protocol or kubectl's HTTP follows

:meth:`LeafForwarder.listing` is the same dial with an empty target and the user's login
certificate, for ``lmsh db ls --cluster LEAF`` / ``lmsh kube ls --cluster LEAF`` through the
web API (``limen.proxy.web``): the leaf answers with what the MAPPED roles allow there
(:mod:`limen.proxy.trust_leaf_listing`).

Refusals are raised as LimenError for the router to audit (a failed ``db.session.start`` /
``kube.request`` naming ``target_cluster``); a forwarded connection is audited by the router
too. The leaf audits the session itself (with ``user_cluster``). Called by
:mod:`limen.proxy.db.db_route` and :mod:`limen.proxy.kube.kube_route`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from limen.api.resources import Resource
from limen.auth.trusted_clusters.wire import TRUST_LABEL, TRUST_REMOTE
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import load_private_key
from limen.ca.peer_role import require_server_role
from limen.ca.tls import client_context
from limen.ca.x509_certs import verify_client_cert, verify_server_cert
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError, NotFound
from limen.net.streams import close_writer, stream_pair
from limen.proxy.routing import ClusterView
from limen.tunnel.protocol import MODE_TLS, DialRequest
from limen.tunnel.server import TunnelServer

__all__ = ["LeafForwarder", "leaf_of"]

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_TLS_TIMEOUT = 10.0
MAX_LISTING = 4 * 1024 * 1024
"""Largest listing read from a leaf."""


def leaf_of(identity: Identity, own_cluster: str) -> str | None:
    """The leaf cluster a certificate routes to; None for this cluster's own resources."""
    route = identity.route_to_cluster
    return route if route and route != own_cluster else None


class LeafForwarder:
    """See the module doc; one per router (``kind`` is the tunnel dial kind, db or kube)."""

    def __init__(self, credentials: HostCredentials, tunnel: TunnelServer, view: ClusterView,
                 kind: str, now: Callable[[], datetime]) -> None:
        self.credentials = credentials
        self.tunnel = tunnel
        self.view = view
        self.kind = kind
        self._now = now

    async def admit(self, identity: Identity, leaf: str) -> None:
        """NotFound unless ``leaf`` is a leaf cluster here that the user's roles admit."""
        unknown = NotFound(f"unknown cluster {leaf!r}: no such cluster is reachable here")
        remote = (await self.view.remote_clusters()).get(leaf)
        if remote is None:
            raise unknown
        try:
            role_set = await self.view.role_set(identity)
        except OSError as err:
            raise ConnectionProblem(f"cannot read the roles from auth: {err}") from None
        decision = role_set.check_cluster(dict(remote.labels))
        if not decision.allowed:
            raise AccessDenied(f"cluster {leaf!r} is not reachable here: {decision.reason}")

    async def open(self, identity: Identity, der: bytes, leaf: str, *, target: str,
                   first: bytes, client_addr: str, session_id: str) -> Streams:
        """A data connection to ``leaf``'s proxy serving ``target`` for ``identity`` (whose
        certificate is ``der``), ``first`` sent; see the module doc."""
        await self.admit(identity, leaf)
        cas = await self._leaf_cas(leaf)
        context = self._leaf_context(leaf, cas)
        pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode()
        conn = await self.tunnel.dial_cluster(leaf, DialRequest(
            kind=self.kind, target=target, mode=MODE_TLS, client_addr=client_addr,
            user=identity.username, session_id=session_id, cert=pem))
        reader, writer = stream_pair(conn.attach)
        try:
            async with asyncio.timeout(_TLS_TIMEOUT):
                await writer.start_tls(context)
            self._check_leaf_proxy(writer, leaf, cas)
            writer.write(first)
            await writer.drain()
        except (LimenError, OSError, ssl.SSLError, TimeoutError) as err:
            await close_writer(writer)
            if isinstance(err, LimenError):
                raise
            raise ConnectionProblem(f"cannot open a connection with the proxy of cluster "
                                    f"{leaf!r}: {err}") from None
        return reader, writer

    async def listing(self, der: bytes, leaf: str, client_addr: str) -> list[dict[str, Any]]:
        """The leaf's answer to a listing for the user of login certificate ``der``."""
        identity = verify_client_cert(der, {self.credentials.cluster:
                                            self.credentials.tls_cas()}, self._now())
        if identity.is_system:
            raise AccessDenied("the listing is for users")
        reader, writer = await self.open(identity, der, leaf, target="", first=b"",
                                         client_addr=client_addr, session_id="")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(_TLS_TIMEOUT * 3):
                while chunk := await reader.read(64 * 1024):
                    size += len(chunk)
                    if size > MAX_LISTING:
                        raise BadParameter(f"the listing of cluster {leaf!r} is too large")
                    chunks.append(chunk)
        except (OSError, TimeoutError) as err:
            raise ConnectionProblem(f"cluster {leaf!r} did not answer the listing: {err}"
                                    ) from None
        finally:
            await close_writer(writer)
        body = b"".join(chunks)
        if not body:
            raise AccessDenied(f"cluster {leaf!r} refused the listing")
        try:
            items = json.loads(body)["items"]
        except (ValueError, KeyError, TypeError):
            raise BadParameter(f"cluster {leaf!r} answered a malformed listing") from None
        if not isinstance(items, list):
            raise BadParameter(f"cluster {leaf!r} answered a malformed listing")
        return [dict(item, cluster=leaf) for item in items if isinstance(item, dict)]

    async def _leaf_cas(self, leaf: str) -> list[x509.Certificate]:
        """The leaf's TLS CA as stored at the trust handshake (AccessDenied otherwise)."""
        try:
            doc = await self.view.auth.get("certauthority", f"tls.{leaf}")
        except NotFound:
            raise AccessDenied(f"no TLS CA of cluster {leaf!r} is trusted here") from None
        stored = Resource.from_document(doc)
        if stored.labels.get(TRUST_LABEL) != TRUST_REMOTE or stored.spec.get("disabled"):
            raise AccessDenied(f"the TLS CA of cluster {leaf!r} is not trusted here")
        ca = CertAuthority.from_dict(stored.spec)
        if ca.cluster != leaf or ca.type is not CertAuthorityType.TLS:
            raise AccessDenied(f"the stored TLS CA of {leaf!r} is inconsistent")
        return list(ca.trusted_certificates())

    def _leaf_context(self, leaf: str, cas: list[x509.Certificate]) -> ssl.SSLContext:
        """TLS client: this proxy's certificate; the server must be the leaf's proxy."""
        context = client_context(x509.load_pem_x509_certificate(self.credentials.tls_cert_pem),
                                 load_private_key(self.credentials.private_key_pem), cas,
                                 check_hostname=False)
        return require_server_role(context, SystemRole.PROXY, {leaf: cas})

    def _check_leaf_proxy(self, writer: asyncio.StreamWriter, leaf: str,
                          cas: list[x509.Certificate]) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise AccessDenied(f"the proxy of cluster {leaf!r} presented no certificate")
        proxy = verify_server_cert(x509.load_der_x509_certificate(der), {leaf: cas},
                                   SystemRole.PROXY, self._now())
        if proxy.cluster != leaf:
            raise AccessDenied(f"the data connection is from cluster {proxy.cluster!r}, "
                               f"not {leaf!r}")
