"""Trusted clusters: what both sides share. The labels of another cluster's CAs as stored, and
the handshake's wire format (:class:`CASet`, :class:`ValidateRequest`,
:class:`ValidateResponse`, see ``limen.auth.trusted_clusters.root_handshake``).

Used by the root side (``root_handshake``, ``root_leaves``, ``limen.proxy.trust_root_routes``)
and the leaf side (``leaf_roots``, ``limen.trust``); imports nothing of either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from limen.api.resources import NAME_PATTERN
from limen.ca.authority import CAKeyPair, CertAuthority, CertAuthorityType
from limen.ca.keys import load_public_key
from limen.errors import BadParameter

__all__ = [
    "CLUSTER_LABEL",
    "EXCHANGED_TYPES",
    "TRUST_LABEL",
    "TRUST_REMOTE",
    "CASet",
    "ValidateRequest",
    "ValidateResponse",
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
