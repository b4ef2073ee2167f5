"""Certificate authority records: one per cluster and CA type, with rotation and export.

Auth generates one :class:`CertAuthority` of each :class:`CertAuthorityType` for its cluster,
keeps them (private keys included, as plain dicts from :meth:`CertAuthority.to_dict`) in its
backend, and hands them to the signers in :mod:`limen.ca.ssh_certs`, :mod:`limen.ca.x509_certs`
and :mod:`limen.ca.jwt`. Everything that only *checks* certificates (proxies, agents, trusted
clusters, ``lmsh``) receives :meth:`CertAuthority.public_only` copies, which never contain
private key material.

::

    CertAuthority(cluster="root", type=TLS)
      active               CAKeyPair(public, private, self-signed CA certificate)  signs
      additional_trusted   CAKeyPair(public, certificate), ...                     verify only

Rotation: :meth:`CertAuthority.rotate` makes a fresh active key pair and keeps the previous
public key (and CA certificate) in ``additional_trusted``, so certificates issued before the
rotation stay valid until they expire; :meth:`CertAuthority.finish_rotation` drops the old keys
once no certificate signed by them can still be live (auth decides when: after the longest TTL).

Key types: Ed25519 for the SSH CAs; ECDSA P-256 for the TLS and database CAs (browsers and
some TLS stacks reject Ed25519 certificates) and for the JWT signer (ES256 is the JWT
algorithm with the broadest library support). ``generate(..., key_type=...)`` overrides both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from limen.ca.keys import (
    KeyType,
    PrivateKey,
    PublicKey,
    generate_private_key,
    jwk_thumbprint,
    key_type_of,
    load_private_key,
    load_public_key,
    private_key_to_pem,
    public_jwk,
    public_key_to_openssh,
    signature_hash,
    spki_pin,
    ssh_fingerprint,
    ssh_public_key_blob,
)
from limen.errors import BadParameter

__all__ = [
    "CA_CERT_VALIDITY",
    "DEFAULT_KEY_TYPES",
    "CAKeyPair",
    "CertAuthority",
    "CertAuthorityType",
    "ssh_trust_map",
    "tls_trust_map",
]

CA_CERT_VALIDITY = timedelta(days=3650)
"""Lifetime of the self-signed X.509 certificate of the TLS and database CAs (10 years)."""


class CertAuthorityType(StrEnum):
    USER = "user"
    """Signs SSH user certificates."""
    HOST = "host"
    """Signs SSH host certificates (agents, proxy)."""
    TLS = "tls"
    """Signs X.509 client and server certificates (Limen's mTLS, kube and db clients)."""
    DB = "db"
    """Signs the certificates databases see from the db agent."""
    JWT = "jwt"
    """Signs JWTs for application access."""

    @property
    def is_ssh(self) -> bool:
        return self in (CertAuthorityType.USER, CertAuthorityType.HOST)

    @property
    def is_x509(self) -> bool:
        return self in (CertAuthorityType.TLS, CertAuthorityType.DB)


DEFAULT_KEY_TYPES: Mapping[CertAuthorityType, KeyType] = {
    CertAuthorityType.USER: KeyType.ED25519,
    CertAuthorityType.HOST: KeyType.ED25519,
    CertAuthorityType.TLS: KeyType.ECDSA_P256,
    CertAuthorityType.DB: KeyType.ECDSA_P256,
    CertAuthorityType.JWT: KeyType.ECDSA_P256,
}


@dataclass(frozen=True, eq=False)
class CAKeyPair:
    """One CA key: its public key, the private key (absent in exported copies), the CA
    certificate (TLS and DB CAs only). Derived encodings are computed once and cached."""

    public_key: PublicKey
    private_key: PrivateKey | None = None
    certificate: x509.Certificate | None = None

    def __post_init__(self) -> None:
        key_type_of(self.public_key)
        if self.private_key is not None and self.private_key.public_key() != self.public_key:
            raise BadParameter("CA private key does not match its public key")
        if self.certificate is not None and self.certificate.public_key() != self.public_key:
            raise BadParameter("CA certificate does not match its public key")

    def public_only(self) -> CAKeyPair:
        return CAKeyPair(self.public_key, None, self.certificate)

    @cached_property
    def ssh_blob(self) -> bytes:
        """SSH wire encoding of the public key (the ``signature key`` of SSH certificates)."""
        return ssh_public_key_blob(self.public_key)

    @cached_property
    def ssh_public_key(self) -> str:
        """``ssh-ed25519 AAAA...`` line (for ``cert-authority`` / ``@cert-authority`` lines)."""
        return public_key_to_openssh(self.public_key)

    @cached_property
    def kid(self) -> str:
        """RFC 7638 thumbprint, the JWT ``kid`` of this key."""
        return jwk_thumbprint(self.public_key)

    @cached_property
    def authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        """The AKI extension of certificates this key signs (for path building by OpenSSL)."""
        if self.certificate is not None:
            try:
                ski = self.certificate.extensions.get_extension_for_class(
                    x509.SubjectKeyIdentifier
                ).value
                return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
            except x509.ExtensionNotFound:
                pass
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.public_key)

    def to_dict(self) -> dict[str, str]:
        doc = {"public_key": self.ssh_public_key}
        if self.private_key is not None:
            # PKCS#8 PEM for every type: unlike the OpenSSH format (random check bytes), it is
            # deterministic, so storing an unchanged CA twice writes identical records.
            doc["private_key"] = private_key_to_pem(self.private_key)
        if self.certificate is not None:
            doc["certificate"] = self.certificate.public_bytes(
                serialization.Encoding.PEM
            ).decode()
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CAKeyPair:
        if not isinstance(doc, Mapping) or not isinstance(doc.get("public_key"), str):
            raise BadParameter("CA key pair needs a 'public_key' string")
        private = doc.get("private_key")
        cert = doc.get("certificate")
        try:
            certificate = None if cert is None else x509.load_pem_x509_certificate(cert.encode())
        except (ValueError, AttributeError) as err:
            raise BadParameter(f"cannot load CA certificate: {err}") from None
        return cls(
            public_key=load_public_key(doc["public_key"]),
            private_key=None if private is None else load_private_key(private),
            certificate=certificate,
        )


@dataclass(frozen=True, eq=False)
class CertAuthority:
    """The CA of one type for one cluster (see the module docstring)."""

    cluster: str
    type: CertAuthorityType
    active: CAKeyPair
    """The key that signs; its private key is present in auth's copy only."""
    additional_trusted: tuple[CAKeyPair, ...] = ()
    """Other keys certificates may still be signed by (previous keys during a rotation)."""

    def __post_init__(self) -> None:
        if not isinstance(self.cluster, str) or not self.cluster:
            raise BadParameter("CA cluster name must be a non-empty string")
        try:
            object.__setattr__(self, "type", CertAuthorityType(self.type))
        except ValueError:
            raise BadParameter(f"unknown CA type {self.type!r}") from None
        object.__setattr__(self, "additional_trusted", tuple(self.additional_trusted))
        if self.type.is_x509:
            for pair in self.key_pairs:
                if pair.certificate is None:
                    raise BadParameter(f"{self.type.value} CA of {self.cluster} needs a CA "
                                       "certificate for every key")

    # ------------------------------------------------------------------ creation, rotation

    @classmethod
    def generate(
        cls, cluster: str, ca_type: CertAuthorityType | str,
        key_type: KeyType | str | None = None, *, now: datetime | None = None,
    ) -> CertAuthority:
        """A new CA with a fresh key (default key type per :data:`DEFAULT_KEY_TYPES`)."""
        ca_type = CertAuthorityType(ca_type)
        return cls(cluster, ca_type, _new_key_pair(cluster, ca_type, key_type, now))

    def rotate(
        self, key_type: KeyType | str | None = None, *, now: datetime | None = None,
    ) -> CertAuthority:
        """A copy signing with a fresh key; the old active key stays trusted (verify only)."""
        if self.active.private_key is None:
            raise BadParameter("cannot rotate a public-only CA copy")
        new = _new_key_pair(self.cluster, self.type,
                            key_type or key_type_of(self.active.public_key), now)
        return replace(self, active=new,
                       additional_trusted=(self.active.public_only(), *self.additional_trusted))

    def finish_rotation(self) -> CertAuthority:
        """A copy that trusts only the active key (the end of a rotation)."""
        return replace(self, additional_trusted=())

    def public_only(self) -> CertAuthority:
        """A copy without any private key: what auth gives to proxies, agents, other clusters."""
        return CertAuthority(self.cluster, self.type, self.active.public_only(),
                             tuple(p.public_only() for p in self.additional_trusted))

    # ------------------------------------------------------------------ access

    @property
    def key_pairs(self) -> tuple[CAKeyPair, ...]:
        """Active first, then the additional trusted keys."""
        return (self.active, *self.additional_trusted)

    @property
    def has_private_key(self) -> bool:
        return self.active.private_key is not None

    @property
    def signer(self) -> PrivateKey:
        """The active private key; :class:`BadParameter` on a public-only copy."""
        if self.active.private_key is None:
            raise BadParameter(
                f"the {self.type.value} CA of {self.cluster} is a public-only copy: cannot sign"
            )
        return self.active.private_key

    def trusted_public_keys(self) -> tuple[PublicKey, ...]:
        return tuple(p.public_key for p in self.key_pairs)

    def trusted_certificates(self) -> tuple[x509.Certificate, ...]:
        """The CA certificates to trust (TLS and DB CAs; empty for the others)."""
        return tuple(p.certificate for p in self.key_pairs if p.certificate is not None)

    def ssh_public_keys(self) -> tuple[str, ...]:
        """OpenSSH lines of every trusted key, for ``cert-authority`` and ``known_hosts``."""
        return tuple(p.ssh_public_key for p in self.key_pairs)

    def pem_bundle(self) -> str:
        """PEM text of every trusted CA certificate (``cas/<cluster>.pem``, ``cadata``)."""
        return "".join(
            c.public_bytes(serialization.Encoding.PEM).decode()
            for c in self.trusted_certificates()
        )

    @property
    def fingerprint(self) -> str:
        """Of the active key: ``SHA256:...`` for SSH CAs, the ``sha256:<hex>`` pin otherwise."""
        if self.type.is_ssh:
            return ssh_fingerprint(self.active.public_key)
        return spki_pin(self.active.public_key)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JSON Web Key Set of every trusted key (``kid`` = RFC 7638 thumbprint)."""
        return {"keys": [public_jwk(p.public_key, p.kid) for p in self.key_pairs]}

    # ------------------------------------------------------------------ storage

    def to_dict(self) -> dict[str, Any]:
        """Plain data for auth's backend (private keys included when present)."""
        return {
            "cluster": self.cluster,
            "type": self.type.value,
            "active": self.active.to_dict(),
            "additional_trusted": [p.to_dict() for p in self.additional_trusted],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CertAuthority:
        """Inverse of :meth:`to_dict`; :class:`BadParameter` on malformed input."""
        if not isinstance(doc, Mapping):
            raise BadParameter("CA record must be a mapping")
        try:
            ca_type = CertAuthorityType(str(doc.get("type")))
        except ValueError:
            raise BadParameter(f"unknown CA type {doc.get('type')!r}") from None
        extra = doc.get("additional_trusted") or []
        if not isinstance(extra, list):
            raise BadParameter("CA 'additional_trusted' must be a list")
        return cls(
            cluster=doc.get("cluster", ""),
            type=ca_type,
            active=CAKeyPair.from_dict(doc.get("active") or {}),
            additional_trusted=tuple(CAKeyPair.from_dict(p) for p in extra),
        )


def ssh_trust_map(
    cas: Iterable[CertAuthority], ca_type: CertAuthorityType,
) -> dict[str, tuple[PublicKey, ...]]:
    """``cluster -> trusted keys`` of the given SSH CA type, the input of the SSH verifiers."""
    out: dict[str, tuple[PublicKey, ...]] = {}
    for ca in cas:
        if ca.type is ca_type:
            out[ca.cluster] = out.get(ca.cluster, ()) + ca.trusted_public_keys()
    return out


def tls_trust_map(
    cas: Iterable[CertAuthority], ca_type: CertAuthorityType = CertAuthorityType.TLS,
) -> dict[str, tuple[x509.Certificate, ...]]:
    """``cluster -> trusted CA certificates``, the input of :func:`verify_client_cert`."""
    out: dict[str, tuple[x509.Certificate, ...]] = {}
    for ca in cas:
        if ca.type is ca_type:
            out[ca.cluster] = out.get(ca.cluster, ()) + ca.trusted_certificates()
    return out


def _new_key_pair(
    cluster: str, ca_type: CertAuthorityType, key_type: KeyType | str | None,
    now: datetime | None,
) -> CAKeyPair:
    private = generate_private_key(key_type or DEFAULT_KEY_TYPES[ca_type])
    cert = _self_signed(cluster, ca_type, private, now) if ca_type.is_x509 else None
    return CAKeyPair(private.public_key(), private, cert)


def _self_signed(
    cluster: str, ca_type: CertAuthorityType, key: PrivateKey, now: datetime | None,
) -> x509.Certificate:
    common_name = f"{cluster} {ca_type.value} CA"
    if len(common_name) > 64:
        raise BadParameter(f"cluster name {cluster!r} is too long for a CA certificate "
                           "(at most 57 characters)")
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    start = (now or datetime.now(UTC)) - timedelta(minutes=1)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, signature_hash(key))
    )
