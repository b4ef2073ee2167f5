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
wire format (:class:`CASet`, :class:`ValidateRequest`, :class:`ValidateResponse`) is shared
with the leaf (``limen.trust``). Called by the auth API (``limen.auth.http.app``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from limen.api.resources import NAME_PATTERN, Kind, Resource
from limen.auth.authorities import ca_resource_name
from limen.auth.server import AuthServer
from limen.backend.base import Condition, Put
from limen.ca.authority import CAKeyPair, CertAuthority, CertAuthorityType
from limen.ca.keys import load_public_key
from limen.errors import AccessDenied, BadParameter, CompareFailed, LimenError
from limen.services.resources import encode, resource_key

__all__ = [
    "CLUSTER_LABEL",
    "TRUST_LABEL",
    "TRUST_REMOTE",
    "CASet",
    "ValidateRequest",
    "ValidateResponse",
    "validate_trusted_cluster",
]

CLUSTER_LABEL = "limen.dev/cluster"
TRUST_LABEL = "limen.dev/trust"
"""Label of CertAuthority resources of another cluster: ``remote`` (a leaf's, on the root) or
``trusted-cluster`` (a root's, on the leaf)."""
TRUST_REMOTE = "remote"
EXCHANGED_TYPES = (CertAuthorityType.USER, CertAuthorityType.HOST, CertAuthorityType.TLS)
_MAX_KEYS = 16


@dataclass(frozen=True)
class CASet:
    """The public CAs one cluster hands the other: SSH user and host keys, TLS CA PEM."""

    user: tuple[str, ...]
    host: tuple[str, ...]
    tls: str

    @classmethod
    def of(cls, cas: Mapping[CertAuthorityType, CertAuthority]) -> CASet:
        return cls(cas[CertAuthorityType.USER].ssh_public_keys(),
                   cas[CertAuthorityType.HOST].ssh_public_keys(),
                   cas[CertAuthorityType.TLS].pem_bundle())

    def to_json(self) -> dict[str, Any]:
        return {"user": list(self.user), "host": list(self.host), "tls": self.tls}

    @classmethod
    def from_json(cls, value: Any, field: str) -> CASet:
        if not isinstance(value, dict):
            raise BadParameter(f"{field} must be an object {{user, host, tls}}")
        keys = {}
        for name in ("user", "host"):
            items = value.get(name)
            if not isinstance(items, list) or not items or len(items) > _MAX_KEYS or \
                    not all(isinstance(i, str) and i for i in items):
                raise BadParameter(f"{field}.{name} must be a list of SSH public keys")
            keys[name] = tuple(items)
        tls = value.get("tls")
        if not isinstance(tls, str) or "BEGIN CERTIFICATE" not in tls:
            raise BadParameter(f"{field}.tls must be the PEM of the TLS CA")
        result = cls(keys["user"], keys["host"], tls)
        result.authorities("check", field)  # every key and certificate must parse
        return result

    def authorities(self, cluster: str, field: str = "cas") -> list[CertAuthority]:
        """Public-only CertAuthority objects of ``cluster`` (first key/certificate active)."""
        try:
            out = [self._ssh(cluster, CertAuthorityType.USER, self.user),
                   self._ssh(cluster, CertAuthorityType.HOST, self.host)]
            certs = x509.load_pem_x509_certificates(self.tls.encode())
        except (ValueError, BadParameter) as err:
            raise BadParameter(f"{field}: {err}") from None
        if not certs or len(certs) > _MAX_KEYS:
            raise BadParameter(f"{field}.tls holds no usable certificate")
        for cert in certs:
            try:
                ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                ca = False
            if not ca:
                raise BadParameter(f"{field}.tls: {cert.subject.rfc4514_string()} is not a CA")
        pairs = [CAKeyPair(c.public_key(), None, c) for c in certs]  # type: ignore[arg-type]
        out.append(CertAuthority(cluster, CertAuthorityType.TLS, pairs[0], tuple(pairs[1:])))
        return out

    @staticmethod
    def _ssh(cluster: str, ca_type: CertAuthorityType, keys: tuple[str, ...]) -> CertAuthority:
        pairs = [CAKeyPair(load_public_key(k)) for k in keys]
        return CertAuthority(cluster, ca_type, pairs[0], tuple(pairs[1:]))


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise BadParameter(f"{field} must be a cluster name (lowercase letters, digits, . _ -)")
    return value


@dataclass(frozen=True)
class ValidateRequest:
    token: str
    leaf_cluster: str
    leaf_cas: CASet

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "leaf_cluster": self.leaf_cluster,
                "leaf_cas": self.leaf_cas.to_json()}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ValidateRequest:
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise BadParameter("token is required")
        return cls(token, _name(body.get("leaf_cluster"), "leaf_cluster"),
                   CASet.from_json(body.get("leaf_cas"), "leaf_cas"))


@dataclass(frozen=True)
class ValidateResponse:
    root_cluster: str
    cas: CASet

    def to_json(self) -> dict[str, Any]:
        return {"root_cluster": self.root_cluster, "cas": self.cas.to_json()}

    @classmethod
    def from_json(cls, body: Any) -> ValidateResponse:
        if not isinstance(body, dict):
            raise BadParameter("the root's answer must be a JSON object")
        return cls(_name(body.get("root_cluster"), "root_cluster"),
                   CASet.from_json(body.get("cas"), "cas"))


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
