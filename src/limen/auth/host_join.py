"""``/v1/join``: a host with a join token gets its certificates, on auth's terms.

    request {token, role, host_id?, hostname, public_key, ssh_public_key?, proof?, addresses}
      1. role may join with a token; hostname is one label     (limen.auth.host_names)
      2. the token is valid for the role: checked, not used yet (limen.auth.tokens)
      3. the host id: new, or proposed and free, or proposed and taken + proof of the
         host's current certificate                            (limen.auth.host_registry)
      4. certificates signed with the names auth decides from the role and the identity;
         the request's ``addresses`` are ignored               (limen.auth.host_names)
      5. ONE backend transaction: the token still unused (deleted when single use) and the
         host id's record unchanged; else refused, and the certificates are never handed out
    audit: ``join`` with success or the reason, the host id, token id and names issued

The static proxy, db and kube tokens (``auth.proxy_token_file``, ``auth.db_token_file``,
``auth.kube_token_file``) skip 2 and 5's token part: they are reusable by design, each for its
own role only. Called by ``limen.auth.core.AuthServer.join``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from limen.api.resources import Kind
from limen.auth.authorities import Authorities
from limen.auth.host_certs import HostCerts
from limen.auth.host_names import HostNames, check_hostname, joined_host_names
from limen.auth.host_registry import claim_host_id
from limen.auth.tokens import JoinTokens, use_ops
from limen.backend.base import Backend, Condition, Delete
from limen.ca.authority import CertAuthorityType
from limen.ca.identity import SystemRole
from limen.ca.keys import load_public_key, spki_pin
from limen.errors import AccessDenied, BadParameter, CompareFailed, LimenError
from limen.services.resource_store import ResourceStore

__all__ = ["JOIN_TYPES_BY_ROLE", "JoinAuthority", "JoinRequest", "join_host"]

JOIN_TYPES_BY_ROLE = {
    SystemRole.NODE: ("node",), SystemRole.DB: ("db",), SystemRole.KUBE: ("kube",),
    SystemRole.APP: ("app",), SystemRole.PROXY: ("proxy",),
}
STATIC_PROXY_TOKEN_ID = "static-proxy-token"
STATIC_TOKEN_IDS = {SystemRole.PROXY: STATIC_PROXY_TOKEN_ID, SystemRole.DB: "static-db-token",
                    SystemRole.KUBE: "static-kube-token"}
"""The token id audited for a join with a role's static token."""


class JoinAuthority(Protocol):
    """What a join needs of the auth server (``limen.auth.core.AuthServer`` is one): passed
    in, so that this module, which the server calls, does not import the server back."""

    backend: Backend
    store: ResourceStore
    tokens: JoinTokens
    authorities: Authorities
    cluster_name: str
    proxy_names: tuple[str, ...]

    def now(self) -> datetime: ...

    def is_static_token(self, role: SystemRole, token: str) -> bool: ...

    def issue_host_certs(self, host_id: str, hostname: str, role: SystemRole,
                         public_key: str, addresses: Sequence[str], *,
                         ssh_public_key: str = "", names: HostNames | None = None
                         ) -> HostCerts: ...

    async def emit(self, event_type: str, *, success: bool | None = None,
                   user: str | None = None, **fields: Any) -> None: ...


@dataclass(frozen=True)
class JoinRequest:
    token: str
    role: str
    host_id: str
    """Proposed (the joiner's saved id) or empty (auth picks one)."""
    hostname: str
    public_key: str
    addresses: tuple[str, ...] = ()
    """What the joiner would like certified: ignored (audited as ``ignored_addresses``)."""
    ssh_public_key: str = ""
    proof: Mapping[str, Any] | None = None


async def join_host(auth: JoinAuthority, request: JoinRequest, *,
                    remote_addr: str = "") -> HostCerts:
    token_id = ""
    try:
        role = SystemRole(request.role)
        if role not in JOIN_TYPES_BY_ROLE:
            raise BadParameter(f"role {request.role!r} cannot join with a token")
        check_hostname(request.hostname)
        key_pin = spki_pin(load_public_key(request.public_key))
        conditions: list[Condition] = []
        deletes: list[Delete] = []
        if role in STATIC_TOKEN_IDS and auth.is_static_token(role, request.token):
            token_id = STATIC_TOKEN_IDS[role]
        else:
            record = await auth.tokens.check(request.token, JOIN_TYPES_BY_ROLE[role],
                                             now=auth.now())
            token_id = record.name
            conditions, deletes = use_ops(record)
        tls_ca = auth.authorities.get(CertAuthorityType.TLS)
        claim = await claim_host_id(
            auth.backend, request.host_id, role=role, hostname=request.hostname,
            public_key_pin=key_pin, proof=request.proof,
            trusted={auth.cluster_name: list(tls_ca.trusted_certificates())},
            cluster=auth.cluster_name, public_key=request.public_key, now=auth.now())
        names = joined_host_names(role, claim.host_id, request.hostname, auth.cluster_name,
                                  auth.proxy_names)
        certs = auth.issue_host_certs(claim.host_id, request.hostname, role,
                                      request.public_key, (), names=names,
                                      ssh_public_key=request.ssh_public_key)
        try:
            await auth.backend.atomic([*conditions, claim.condition], [*deletes, claim.put])
        except CompareFailed:
            raise AccessDenied(await _lost_race(auth, token_id, claim.host_id)) from None
    except (LimenError, ValueError) as err:
        await auth.emit("join", success=False, host_id=request.host_id,
                        hostname=request.hostname, role=request.role, reason=str(err),
                        remote_addr=remote_addr, **({"token_id": token_id} if token_id else {}))
        raise AccessDenied(f"join refused: {err}") from None
    await auth.emit("join", host_id=claim.host_id, hostname=request.hostname, role=role.value,
                    token_id=token_id, remote_addr=remote_addr, rejoined=claim.rejoined,
                    dns_names=list(names.dns), ip_addresses=list(names.ips),
                    ignored_addresses=list(request.addresses))
    return certs


async def _lost_race(auth: JoinAuthority, token_id: str, host_id: str) -> str:
    """Why the final transaction failed: another join used the token or took the id first."""
    if token_id not in STATIC_TOKEN_IDS.values() and \
            await auth.store.find(Kind.TOKEN, token_id) is None:
        return "join token was already used"
    return f"host id {host_id} was registered by another join at the same time"
