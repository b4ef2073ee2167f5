"""Auth API routes that tell this cluster's own agents and proxies what it trusts, and take a
trusted root's CA updates from this cluster's proxies::

    GET /v1/trust/roots[?revision=R]
        ◀── {cluster, revision, user_ca, host_ca, tls_ca, rotation: {user, host},
              roots: [{trusted_cluster, root_cluster,
              proxy_address, tunnel_address, role_map, cas: {user, host?, tls?}}]}
        ◀── {cluster, revision: R, unchanged: true}     when R is still current

``user_ca``, ``host_ca`` and ``tls_ca`` are this cluster's own user, host and TLS CAs (all
their trusted keys: a CA rotation shows here; a root proxy sends them to the leaves,
``limen.proxy.trust_root_cas``), ``rotation`` their rotation states (``limen.auth.rotation``: a host
renews its host certificate by it);
``roots`` are the enabled trusted root clusters exactly as the auth process's ``TrustCache``
sees them (``limen.auth.trusted_clusters.leaf_roots.enabled_roots``). Every CA is a
``CertAuthority.public_only()`` dict: public keys and CA certificates, never a private key.
``revision`` is a digest of the answer, so a poller that already has it gets a short reply.

::

    GET /v1/trust/roots/signed[?revision=R]
        ◀── the answer signed by auth (``limen.auth.trust_signature``: {cluster, revision,
            issued_at, answer, cert, signature}); a keepalive (``answer`` empty) when R is
            still current

Proxies only: ``limen.proxy.trust_push`` pushes it to the agents over their tunnels, and the
agents check auth's signature themselves (the proxy cannot change what they trust).

Only system identities of this cluster that verify users' certificates (node, proxy, db, kube,
app; admins) may call it; users, even with rules, are refused. The caller is
``limen.trust.roots_poller.RemoteTrustCache`` in a node or proxy started apart from auth.

::

    POST /v1/trust/roots/{root}/cas   {update}   ◀── {changed}

The update root ``root``'s proxy sent over this cluster's link to it, relayed by this cluster's
proxy (``limen.proxy.trust_leaf_links``; only proxies and admins may call it). The proxy is
not believed: auth checks the root proxy's signature itself and stores the CAs or refuses
the whole update (``limen.auth.trusted_clusters.leaf_cas``: 403 or 400, audited).
Registered by ``limen.auth.http.app.build_app``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from limen.api.resources import Kind
from limen.auth.authorities import ca_resource_name
from limen.auth.core import AuthServer
from limen.auth.http.authz import require_system
from limen.auth.http.trust_signer import TrustSigner
from limen.auth.rotation import ROTATABLE, RotationState
from limen.auth.trust_signature import SIGNED_TRUST_PATH
from limen.auth.trusted_clusters.leaf_cas import apply_root_cas
from limen.auth.trusted_clusters.leaf_roots import enabled_roots
from limen.ca.authority import CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.net.http import json_body

__all__ = ["TRUST_ROOTS_PATH", "trust_answer", "trust_routes"]

TRUST_ROOTS_PATH = "/v1/trust/roots"
_CALLERS = (SystemRole.NODE, SystemRole.PROXY, SystemRole.DB, SystemRole.KUBE, SystemRole.APP)

IdentityOf = Callable[[web.Request], Awaitable[Identity]]


async def trust_answer(auth: AuthServer) -> dict[str, Any]:
    """The full answer (see the module doc), ``revision`` included."""
    own = (await auth.authorities.trusted(CertAuthorityType.USER))[auth.cluster_name]
    host = (await auth.authorities.trusted(CertAuthorityType.HOST))[auth.cluster_name]
    tls = (await auth.authorities.trusted(CertAuthorityType.TLS))[auth.cluster_name]
    rotation = {}
    for ca_type in ROTATABLE:
        stored = await auth.store.find(Kind.CERT_AUTHORITY,
                                       ca_resource_name(ca_type, auth.cluster_name))
        rotation[ca_type.value] = RotationState.from_dict(
            None if stored is None else stored.spec.get("rotation")).to_dict()
    roots = []
    for name, entry in sorted((await enabled_roots(auth.store, auth.cluster_name)).items()):
        spec = entry.trusted_cluster.spec
        roots.append({
            "trusted_cluster": entry.trusted_cluster.name, "root_cluster": name,
            "proxy_address": str(spec.get("proxy_address") or ""),
            "tunnel_address": str(spec.get("tunnel_address") or ""),
            "role_map": list(spec.get("role_map") or []),
            "cas": {ca_type.value: ca.public_only().to_dict()
                    for ca_type, ca in sorted(entry.cas.items())},
        })
    answer: dict[str, Any] = {"cluster": auth.cluster_name,
                              "user_ca": own.public_only().to_dict(),
                              "host_ca": host.public_only().to_dict(),
                              "tls_ca": tls.public_only().to_dict(), "rotation": rotation,
                              "roots": roots}
    text = json.dumps(answer, sort_keys=True, separators=(",", ":"), default=str)
    answer["revision"] = hashlib.sha256(text.encode()).hexdigest()[:32]
    return answer


def trust_routes(auth: AuthServer, identity_of: IdentityOf) -> list[web.RouteDef]:
    cached: dict[str, Any] = {}
    signer = TrustSigner(auth)

    async def current() -> dict[str, Any]:
        # Recompute only when a TrustedCluster or a CertAuthority changed (parsing CAs is the
        # cost; every agent polls every few seconds).
        listed = [*await auth.store.list(Kind.TRUSTED_CLUSTER),
                  *await auth.store.list(Kind.CERT_AUTHORITY)]
        revisions = tuple(sorted((r.kind.value, r.name, r.revision) for r in listed))
        if cached.get("inputs") != revisions:
            cached["answer"] = await trust_answer(auth)
            cached["inputs"] = revisions
        answer: dict[str, Any] = cached["answer"]
        return answer

    async def roots(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        require_system(identity, _CALLERS)
        answer = await current()
        if request.query.get("revision") == answer["revision"]:
            return web.json_response({"cluster": answer["cluster"],
                                      "revision": answer["revision"], "unchanged": True})
        return web.json_response(answer)

    async def signed(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        require_system(identity, (SystemRole.PROXY,))
        answer = await current()
        return web.json_response(signer.sign(
            answer, keepalive=request.query.get("revision") == answer["revision"]))

    async def root_cas(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        require_system(identity, (SystemRole.PROXY,))
        changed = await apply_root_cas(auth, request.match_info["root"],
                                       await json_body(request), relayed_by=identity.host_id or "")
        return web.json_response({"changed": changed})

    return [web.get(TRUST_ROOTS_PATH, roots), web.get(SIGNED_TRUST_PATH, signed),
            web.post(TRUST_ROOTS_PATH + "/{root}/cas", root_cas)]
