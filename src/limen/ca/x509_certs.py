"""X.509 certificates: issue client and server certificates, verify client certificates.

Auth calls the signers at login (the user's client certificate for Limen's API, Kubernetes
and databases) and when a Limen process joins (its server certificate, which doubles as a
client certificate towards auth). The proxy, the agents and auth call
:func:`verify_client_cert` on every mutual-TLS connection, after the TLS handshake has
checked the chain (see :mod:`limen.ca.tls`); clients of the proxy and of auth call
:func:`verify_server_cert` inside their handshake (:mod:`limen.ca.peer_role`).

Identity extension: the :class:`~limen.ca.identity.Identity` JSON is stored, as a DER
UTF8String, in a non-critical extension with OID :data:`IDENTITY_OID`. Go's X.509 parser
(kubectl, every client-go program) refuses a certificate with an OID component beyond 31
bits, so Limen's UUID-derived arc (:data:`LIMEN_OID_ARC`, ``2.25.<uuid>``, ITU-T X.667)
cannot be in a certificate kubectl loads: new certificates carry the identity under
:data:`IDENTITY_OID` in ``1.3.9999.7541`` (the unassigned ``1.3.9999`` arc Teleport squats
too, a sub-arc of our own), and the verifiers still read :data:`LEGACY_IDENTITY_OID` (under
the UUID arc) from certificates issued before. ``openssl x509 -text`` shows the JSON
readably under that OID.

Certificate contents: subject ``CN=<username>``, one ``O=`` per role (or the system role of
a Limen process); validity ``[now - 1 min, now + ttl]``; basicConstraints CA:FALSE,
keyUsage digitalSignature, extendedKeyUsage clientAuth (client) or serverAuth (+ clientAuth
when the server certificate carries an identity); an authorityKeyIdentifier so OpenSSL picks
the right CA certificate during a rotation (old and new CA share a subject name).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from limen.ca._validity import CLOCK_SKEW, check_ttl, utc_now
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import PublicKey, load_public_key, signature_hash
from limen.errors import AccessDenied, BadParameter

__all__ = [
    "IDENTITY_OID",
    "LEGACY_IDENTITY_OID",
    "LIMEN_OID_ARC",
    "certificate_to_pem",
    "identity_from_cert",
    "load_certificate",
    "sign_client_cert",
    "sign_db_client_cert",
    "sign_server_cert",
    "verify_client_cert",
    "verify_server_cert",
]

LIMEN_OID_ARC = "2.25.302031238717382597021762673184226632960"
"""Limen's private OID arc: ``2.25`` + the UUID e33919c6-12ea-43ec-9a38-9a6ecddf6500."""
LEGACY_IDENTITY_OID = x509.ObjectIdentifier(LIMEN_OID_ARC + ".1")
"""OID of the identity extension in certificates issued before :data:`IDENTITY_OID` (read,
never written)."""
IDENTITY_OID = x509.ObjectIdentifier("1.3.9999.7541.1")
"""OID of the identity extension (value: DER UTF8String of the identity JSON); every
component fits Go's parser (see the module)."""

_Ext = x509.Extension[x509.ExtensionType]
_NOT_CA: _Ext = x509.Extension(
    x509.BasicConstraints.oid, True, x509.BasicConstraints(ca=False, path_length=None))
_DIGITAL_SIGNATURE: _Ext = x509.Extension(x509.KeyUsage.oid, True, x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
    encipher_only=False, decipher_only=False,
))
_CLIENT_EKU: _Ext = x509.Extension(x509.ExtendedKeyUsage.oid, False,
                                   x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]))
_SERVER_EKU: _Ext = x509.Extension(x509.ExtendedKeyUsage.oid, False,
                                   x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]))
_SERVER_CLIENT_EKU: _Ext = x509.Extension(x509.ExtendedKeyUsage.oid, False, x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
))
_UTF8STRING = 0x0C


# ---------------------------------------------------------------------- signing


def sign_client_cert(
    tls_ca: CertAuthority,
    public_key: PublicKey | str | bytes,
    identity: Identity,
    ttl: timedelta,
    *,
    now: datetime | None = None,
) -> x509.Certificate:
    """A client certificate for ``identity`` signed by the cluster's TLS (or DB) CA."""
    return _builder(tls_ca, public_key, identity, ttl, now, _subject(identity), [
        _CLIENT_EKU, _extension(_identity_extension(identity)),
    ]).sign(tls_ca.signer, signature_hash(tls_ca.signer))


def sign_db_client_cert(
    db_ca: CertAuthority,
    public_key: PublicKey | str | bytes,
    db_user: str,
    ttl: timedelta,
    *,
    now: datetime | None = None,
) -> x509.Certificate:
    """The certificate a db agent presents to a database for ``db_user``: subject exactly
    ``CN=<db_user>`` (what PostgreSQL ``cert`` authentication and MariaDB ``REQUIRE SUBJECT``
    compare), client authentication only, no Limen identity. Signed by the DB CA only."""
    if db_ca.type is not CertAuthorityType.DB:
        raise BadParameter(f"database client certificates come from the DB CA, not the "
                           f"{db_ca.type.value} CA")
    return _builder(db_ca, public_key, None, ttl, now, x509.Name([_common_name(db_user)]),
                    [_CLIENT_EKU]).sign(db_ca.signer, signature_hash(db_ca.signer))


def sign_server_cert(
    tls_ca: CertAuthority,
    public_key: PublicKey | str | bytes,
    dns_names: Iterable[str],
    ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    ttl: timedelta = timedelta(days=1),
    identity: Identity | None = None,
    *,
    now: datetime | None = None,
) -> x509.Certificate:
    """A server certificate for the given names and addresses.

    With an ``identity`` (a Limen process that also calls auth) the certificate carries it,
    its subject is the identity's, and it is valid for client authentication too.
    """
    dns = list(dict.fromkeys(dns_names))
    try:
        ips = [ipaddress.ip_address(a) for a in ip_addresses]
    except ValueError as err:
        raise BadParameter(f"invalid IP address in server certificate: {err}") from None
    if not dns and not ips:
        raise BadParameter("a server certificate needs at least one DNS name or IP address")
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans.extend(x509.IPAddress(ip) for ip in ips)
    san = _extension(x509.SubjectAlternativeName(sans))
    if identity is None:
        subject = x509.Name([_common_name(dns[0] if dns else str(ips[0]))])
        extensions = [_SERVER_EKU, san]
    else:
        subject = _subject(identity)
        extensions = [_SERVER_CLIENT_EKU, _extension(_identity_extension(identity)), san]
    return _builder(tls_ca, public_key, identity, ttl, now, subject, extensions).sign(
        tls_ca.signer, signature_hash(tls_ca.signer)
    )


def _builder(
    ca: CertAuthority, public_key: PublicKey | str | bytes, identity: Identity | None,
    ttl: timedelta, now: datetime | None, subject: x509.Name,
    extensions: list[x509.Extension[x509.ExtensionType]],
) -> x509.CertificateBuilder:
    """Everything but the signature, in one constructor call: the builder's chained setters
    copy it once per call and were a fifth of an X.509 issuance's CPU. The times are naive
    UTC, as ``CertificateBuilder.not_valid_before()`` would store them."""
    if not ca.type.is_x509:
        raise BadParameter(f"a TLS or DB CA is needed, got the {ca.type.value} CA")
    if identity is not None and identity.cluster != ca.cluster:
        raise BadParameter(f"identity of cluster {identity.cluster!r} cannot be signed by the "
                           f"CA of cluster {ca.cluster!r}")
    check_ttl(ttl)
    start = utc_now(now).replace(tzinfo=None)
    ca_cert = ca.active.certificate
    assert ca_cert is not None  # enforced by CertAuthority for TLS and DB CAs
    if not isinstance(public_key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        public_key = load_public_key(public_key)
    return x509.CertificateBuilder(
        issuer_name=ca_cert.subject, subject_name=subject, public_key=public_key,
        serial_number=x509.random_serial_number(), not_valid_before=start - CLOCK_SKEW,
        not_valid_after=start + ttl,
        extensions=[_NOT_CA, _DIGITAL_SIGNATURE,
                    _extension(ca.active.authority_key_identifier), *extensions],
    )


def _extension(value: x509.ExtensionType, *, critical: bool = False) -> x509.Extension[
        x509.ExtensionType]:
    return x509.Extension(value.oid, critical, value)


def _common_name(value: str) -> x509.NameAttribute[str]:
    if not 1 <= len(value) <= 64:
        raise BadParameter(f"{value!r} cannot be a certificate common name (1-64 characters)")
    return x509.NameAttribute(NameOID.COMMON_NAME, value)


def _subject(identity: Identity) -> x509.Name:
    groups = (identity.system_role.value,) if identity.system_role else identity.roles
    return _name(identity.username, groups)


@functools.lru_cache(maxsize=4096)
def _name(common_name: str, organizations: tuple[str, ...]) -> x509.Name:
    """Subject names are few and immutable: build each once (a third of the Python-side
    signing cost otherwise)."""
    return x509.Name([
        _common_name(common_name),
        *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations),
    ])


def _identity_extension(identity: Identity) -> x509.UnrecognizedExtension:
    data = identity.to_json()
    size = len(data)
    if size < 0x80:
        header = bytes((_UTF8STRING, size))
    else:
        length = size.to_bytes((size.bit_length() + 7) // 8, "big")
        header = bytes((_UTF8STRING, 0x80 | len(length))) + length
    return x509.UnrecognizedExtension(IDENTITY_OID, header + data)


def _utf8string(der: bytes) -> bytes:
    if len(der) < 2 or der[0] != _UTF8STRING:
        raise ValueError("not a DER UTF8String")
    size, offset = der[1], 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 4 or len(der) < 2 + count:
            raise ValueError("bad DER length")
        size, offset = int.from_bytes(der[2:2 + count], "big"), 2 + count
    if len(der) != offset + size:
        raise ValueError("DER length does not match the value")
    return der[offset:]


# ---------------------------------------------------------------------- reading, verifying


def load_certificate(data: bytes | str) -> x509.Certificate:
    """A certificate from PEM or DER; :class:`BadParameter` when it is neither."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as err:
        raise BadParameter(f"malformed X.509 certificate: {err}") from None


def certificate_to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def identity_from_cert(cert: x509.Certificate) -> Identity | None:
    """The identity a certificate *claims*, unverified; ``None`` when it has none.

    Raises :class:`BadParameter` when the extension is present but malformed.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(IDENTITY_OID).value
    except x509.ExtensionNotFound:
        try:
            ext = cert.extensions.get_extension_for_oid(LEGACY_IDENTITY_OID).value
        except x509.ExtensionNotFound:
            return None
    assert isinstance(ext, x509.UnrecognizedExtension)
    try:
        data = _utf8string(ext.value)
    except ValueError as err:
        raise BadParameter(f"identity extension is not a UTF8String: {err}") from None
    return Identity.from_json(data, not_before=cert.not_valid_before_utc,
                              not_after=cert.not_valid_after_utc)


def verify_client_cert(
    cert: x509.Certificate | bytes | str,
    trusted: Mapping[str, Sequence[x509.Certificate]],
    now: datetime | None = None,
) -> Identity:
    """The identity of a valid client certificate, or :class:`AccessDenied` with the reason.

    ``trusted`` maps cluster names to their TLS CA certificates (:func:`tls_trust_map`). The
    certificate must be signed by a CA certificate trusted for the cluster its identity
    claims, be an end-entity certificate valid for client authentication, carry an identity,
    and be inside its validity window (as must the issuing CA certificate).
    """
    return _verify(cert, trusted, ExtendedKeyUsageOID.CLIENT_AUTH, "client", now)


def verify_server_cert(
    cert: x509.Certificate | bytes | str,
    trusted: Mapping[str, Sequence[x509.Certificate]],
    role: SystemRole,
    now: datetime | None = None,
) -> Identity:
    """The identity of a Limen server's certificate when it is ``role``'s, else
    :class:`AccessDenied`: the checks of :func:`verify_client_cert` for server authentication,
    and the identity's system role must be ``role``. A client calls it on the certificate its
    TLS handshake verified (:mod:`limen.ca.peer_role`): a CA that signed it is not enough, a
    node's certificate is not a proxy's (CVE-2021-41393 class)."""
    identity = _verify(cert, trusted, ExtendedKeyUsageOID.SERVER_AUTH, "server", now)
    if identity.system_role is not role:
        held = identity.system_role.value if identity.system_role else "user"
        raise AccessDenied(f"the certificate is a {held}'s ({identity.username}), not a "
                           f"{role.value}'s")
    return identity


def _verify(
    cert: x509.Certificate | bytes | str,
    trusted: Mapping[str, Sequence[x509.Certificate]],
    usage: x509.ObjectIdentifier, what: str, now: datetime | None,
) -> Identity:
    if not isinstance(cert, x509.Certificate):
        try:
            cert = load_certificate(cert)
        except BadParameter as err:
            raise AccessDenied(str(err)) from None
    issuer, signers = _find_issuer(cert, trusted)
    try:
        extensions = {type(e.value): e.value for e in cert.extensions}
    except ValueError as err:
        raise AccessDenied(f"malformed X.509 certificate: {err}") from None
    basic = extensions.get(x509.BasicConstraints)
    if isinstance(basic, x509.BasicConstraints) and basic.ca:
        raise AccessDenied(f"a CA certificate was presented as a {what} certificate")
    eku = extensions.get(x509.ExtendedKeyUsage)
    if not isinstance(eku, x509.ExtendedKeyUsage) or usage not in eku:
        raise AccessDenied(f"certificate is not valid for {what} authentication")
    try:
        identity = identity_from_cert(cert)
    except (BadParameter, ValueError) as err:
        raise AccessDenied(f"certificate identity is malformed: {err}") from None
    if identity is None:
        raise AccessDenied("certificate has no Limen identity extension")
    if identity.cluster not in signers:
        raise AccessDenied(f"certificate claims cluster {identity.cluster!r} but is issued by "
                           f"the CA of {', '.join(repr(c) for c in signers)}")
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [a.value for a in common_names] != [identity.username]:
        raise AccessDenied("certificate subject does not match its identity")
    instant = utc_now(now)
    if instant < cert.not_valid_before_utc:
        raise AccessDenied(
            f"certificate is not valid before {cert.not_valid_before_utc.isoformat()}"
        )
    if instant > cert.not_valid_after_utc:
        raise AccessDenied(f"certificate expired at {cert.not_valid_after_utc.isoformat()}")
    if not issuer.not_valid_before_utc <= instant <= issuer.not_valid_after_utc:
        raise AccessDenied("the issuing CA certificate is outside its validity period")
    return identity


def _find_issuer(
    cert: x509.Certificate, trusted: Mapping[str, Sequence[x509.Certificate]],
) -> tuple[x509.Certificate, list[str]]:
    """The trusted CA certificate that signed ``cert`` and every cluster trusting it."""
    named = [ca for cas in trusted.values() for ca in cas if ca.subject == cert.issuer]
    if not named:
        raise AccessDenied("certificate is not issued by a trusted CA")
    for ca in named:
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            continue
        signers = [cluster for cluster, cas in trusted.items() if any(c == ca for c in cas)]
        return ca, signers
    raise AccessDenied("certificate signature is invalid")
