"""Trusted clusters, root side: the handshake a leaf runs with a ``trusted_cluster`` token.

::

    leaf auth ──TLS (root CA pinned)──▶ root proxy POST /v1/webapi/trustedclusters/validate
              ──mTLS (proxy identity)──▶ root auth POST /v1/trustedclusters/validate
      {token, leaf_cluster, leaf_cas: {user: [ssh keys], host: [ssh keys], tls: PEM}}
      ◀── {root_cluster, cas: {user: [...], host: [...], tls: PEM}}

The root consumes the single-use token, records a ``RemoteCluster`` named after the leaf
(labels from the token; connection ``offline`` until the leaf's tunnel comes, later) and keeps
the leaf's public CAs as ``CertAuthority`` resources ``<type>.<leaf>`` labelled
``limen.dev/trust: remote`` (the leaf's host CA verifies the leaf proxy's tunnel later). The
wire format (``CASet``, ``ValidateRequest``, ``ValidateResponse``) is shared with the leaf
(``limen.auth.trusted_clusters.wire``). Called by the auth API (``limen.auth.http.app``).
"""

from __future__ import annotations

from limen.api.resources import Kind, Resource
from limen.auth.authorities import ca_resource_name
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.wire import (
    CLUSTER_LABEL,
    EXCHANGED_TYPES,
    TRUST_LABEL,
    TRUST_REMOTE,
    CASet,
    ValidateRequest,
    ValidateResponse,
)
from limen.backend.base import Condition, Put
from limen.errors import AccessDenied, BadParameter, CompareFailed, LimenError
from limen.services.resource_store import encode, resource_key

__all__ = ["validate_trusted_cluster"]

async def validate_trusted_cluster(auth: AuthServer, request: ValidateRequest, *,
                                   remote_addr: str = "") -> ValidateResponse:
    """Admit the leaf of ``request`` (see the module doc); ``AccessDenied`` (audited as a
    refused ``join``) for a bad, used or expired token, a name clash or a known leaf."""
    leaf = request.leaf_cluster
    try:
        record = await auth.tokens.consume(request.token, ("trusted_cluster",), now=auth.now())
        if leaf == auth.cluster_name:
            raise BadParameter(f"the leaf cluster cannot be named {leaf!r} like this root")
        remote = Resource(Kind.REMOTE_CLUSTER, leaf,
                          spec={"connection": "offline", "last_heartbeat": None},
                          labels=dict(record.spec.get("labels") or {}))
        puts = [Put(resource_key(Kind.REMOTE_CLUSTER, leaf), encode(remote))]
        conditions = [Condition(resource_key(Kind.REMOTE_CLUSTER, leaf), 0)]
        for ca in request.leaf_cas.authorities(leaf, "leaf_cas"):
            name = ca_resource_name(ca.type, leaf)
            stored = Resource(Kind.CERT_AUTHORITY, name, spec=ca.to_dict(),
                              labels={CLUSTER_LABEL: leaf, TRUST_LABEL: TRUST_REMOTE})
            puts.append(Put(resource_key(Kind.CERT_AUTHORITY, name), encode(stored)))
            conditions.append(Condition(resource_key(Kind.CERT_AUTHORITY, name), 0))
        try:
            await auth.backend.atomic(conditions, puts)
        except CompareFailed:
            raise AccessDenied(f"a cluster named {leaf!r} is already known here (remove its "
                               "RemoteCluster first)") from None
    except LimenError as err:
        await auth.emit("join", success=False, role="trusted_cluster", leaf_cluster=leaf,
                        reason=str(err), remote_addr=remote_addr)
        raise AccessDenied(f"trusted cluster refused: {err}") from None
    await auth.emit("join", role="trusted_cluster", leaf_cluster=leaf, token_id=record.name,
                    remote_addr=remote_addr)
    own = {t: auth.authorities.get(t).public_only() for t in EXCHANGED_TYPES}
    return ValidateResponse(auth.cluster_name, CASet.of(own))
