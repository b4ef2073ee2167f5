"""OpenSSH certificates: issue user and host certificates, verify them against trusted CAs.

Auth calls the signers at login (user certificate) and when an agent joins (host
certificate); the SSH proxy and the node agent call the verifiers on every connection. The
certificates are standard OpenSSH certificates (PROTOCOL.certkeys), accepted by ``ssh``,
``sshd`` and asyncssh; the Limen :class:`~limen.ca.identity.Identity` rides in the extension
:data:`IDENTITY_EXTENSION`, which OpenSSH and asyncssh ignore (unknown *extensions* are
ignored by design; only unknown *critical options* make a certificate invalid).

Encoding. The certificate body is assembled here with ``struct`` and signed with the CA key in
one call. ``cryptography``'s ``SSHCertificateBuilder`` produces the same bytes (a unit test
checks byte equality with a fixed nonce), but it re-parses every certificate it signs and
builds ten intermediate objects: ~4,000 certificates/s on this machine against the 10,000/s
Limen needs. Parsing for verification uses ``cryptography``'s loader, an implementation
independent of this encoder.

Certificate contents:

* ``key_id``: ``user:<username>`` or ``host:<host_id>`` (shows up in sshd and audit logs);
* serial: 64 random bits; validity: ``[now - 1 min, now + ttl)``;
* user principals: the identity's logins, or :data:`NO_LOGIN_PRINCIPAL` when it has none;
  OpenSSH reads an *empty* principal list as "valid for every principal", so a user with no
  logins (kube or db access only) must not get one. The placeholder cannot be a login:
  Unix user names never start with ``-`` and :class:`Identity` refuses such logins;
* user extensions: ``permit-pty`` and ``permit-port-forwarding`` (on by default),
  ``permit-agent-forwarding`` (off by default), never ``permit-X11-forwarding`` or
  ``permit-user-rc``;
* host principals: host id, ``<host_id>.<cluster>``, hostname, then the caller's extra names
  and addresses (``localhost`` only if the caller asks: a host certificate naming
  ``localhost`` would let any Limen host impersonate it to a client using a
  ``@cert-authority *`` known_hosts line).
"""

from __future__ import annotations

import binascii
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateType,
    load_ssh_public_identity,
)

from limen.ca._validity import CLOCK_SKEW, check_ttl, utc_now
from limen.ca.authority import CAKeyPair, CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import PrivateKey, PublicKey, load_public_key, ssh_public_key_blob
from limen.errors import AccessDenied, BadParameter

__all__ = [
    "IDENTITY_EXTENSION",
    "MAX_CERT_SIZE",
    "NO_LOGIN_PRINCIPAL",
    "encode_certificate",
    "host_principals",
    "parse_ssh_cert",
    "sign_host_cert",
    "sign_user_cert",
    "verify_ssh_host_cert",
    "verify_ssh_user_cert",
]

IDENTITY_EXTENSION = "limen-identity@limen.dev"
"""Name of the certificate extension holding the identity JSON."""
NO_LOGIN_PRINCIPAL = "-limen-no-login-"
"""The only principal of a user certificate whose identity has no logins (see above)."""
MAX_CERT_SIZE = 64 * 1024
"""Certificates longer than this (in their text form) are refused before parsing."""

_IDENTITY_EXT = IDENTITY_EXTENSION.encode()
_CERT_SUFFIX = b"-cert-v01@openssh.com"
_USER, _HOST = SSHCertificateType.USER.value, SSHCertificateType.HOST.value
_EMPTY = b"\x00\x00\x00\x00"
_FLAG_EXTENSIONS = {
    "permit_agent_forwarding": b"permit-agent-forwarding",
    "permit_port_forwarding": b"permit-port-forwarding",
    "permit_pty": b"permit-pty",
}
_PACK_U32 = struct.Struct(">I").pack
_PACK_SERIAL_TYPE = struct.Struct(">QI").pack
_PACK_VALIDITY = struct.Struct(">QQ").pack


# ---------------------------------------------------------------------- signing


def sign_user_cert(
    ca: CertAuthority,
    public_key: PublicKey | str | bytes,
    identity: Identity,
    ttl: timedelta,
    *,
    permit_pty: bool = True,
    permit_port_forwarding: bool = True,
    permit_agent_forwarding: bool = False,
    now: datetime | None = None,
) -> bytes:
    """An OpenSSH user certificate line (``ssh-ed25519-cert-v01@openssh.com AAAA...``).

    ``public_key`` is the user's key (object or OpenSSH line); ``identity.cluster`` must be
    the CA's cluster. The identity's own validity fields are ignored: ``now`` and ``ttl``
    decide. The line has no trailing newline.
    """
    _check_ca(ca, CertAuthorityType.USER, identity)
    extensions = [(_IDENTITY_EXT, identity.to_json())]
    flags = {"permit_agent_forwarding": permit_agent_forwarding,
             "permit_port_forwarding": permit_port_forwarding, "permit_pty": permit_pty}
    extensions.extend((_FLAG_EXTENSIONS[name], b"") for name, on in flags.items() if on)
    principals = identity.logins or (NO_LOGIN_PRINCIPAL,)
    return _sign(ca, public_key, _USER, b"user:" + identity.username.encode(), principals,
                 ttl, now, extensions)


def host_principals(
    host_id: str, hostname: str | None, cluster: str, extra: Iterable[str] = (),
) -> tuple[str, ...]:
    """The principals of a host certificate, in order and without duplicates: the host id and
    the hostname, each also qualified by the cluster (``ssh web1.<cluster>`` via lmsh config)."""
    names = [host_id, f"{host_id}.{cluster}",
             *([hostname, f"{hostname}.{cluster}"] if hostname else []), *extra]
    return tuple(dict.fromkeys(n for n in names if n))


def sign_host_cert(
    ca: CertAuthority,
    public_key: PublicKey | str | bytes,
    host_id: str,
    hostname: str | None,
    principals: Iterable[str],
    ttl: timedelta,
    system_role: SystemRole = SystemRole.NODE,
    *,
    now: datetime | None = None,
) -> bytes:
    """An OpenSSH host certificate line for a Limen host (agent, proxy, auth).

    Principals: see :func:`host_principals`; ``principals`` adds names and addresses the
    host is reached by. The identity extension holds ``Identity.for_host(...)``.
    """
    identity = Identity.for_host(ca.cluster, host_id, hostname, SystemRole(system_role))
    _check_ca(ca, CertAuthorityType.HOST, identity)
    names = host_principals(host_id, hostname, ca.cluster, principals)
    return _sign(ca, public_key, _HOST, b"host:" + host_id.encode(), names, ttl, now,
                 [(_IDENTITY_EXT, identity.to_json())])


def _check_ca(ca: CertAuthority, ca_type: CertAuthorityType, identity: Identity) -> None:
    if ca.type is not ca_type:
        raise BadParameter(f"a {ca_type.value} CA is needed, got the {ca.type.value} CA")
    if identity.cluster != ca.cluster:
        raise BadParameter(f"identity of cluster {identity.cluster!r} cannot be signed by the "
                           f"CA of cluster {ca.cluster!r}")


def _sign(
    ca: CertAuthority, public_key: PublicKey | str | bytes, cert_type: int, key_id: bytes,
    principals: Sequence[str], ttl: timedelta, now: datetime | None,
    extensions: list[tuple[bytes, bytes]],
) -> bytes:
    check_ttl(ttl)
    start = utc_now(now)
    if not isinstance(public_key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        public_key = load_public_key(public_key)
    random = os.urandom(40)
    valid_after = int((start - CLOCK_SKEW).timestamp())
    valid_before = int((start + ttl).timestamp())
    return encode_certificate(
        ca.active, ca.signer, ssh_public_key_blob(public_key), cert_type,
        nonce=random[:32], serial=int.from_bytes(random[32:], "big"), key_id=key_id,
        principals=[p.encode() for p in principals], valid_after=valid_after,
        valid_before=valid_before, extensions=extensions,
    )


def _str(data: bytes) -> bytes:
    return _PACK_U32(len(data)) + data


def _mpint(value: int) -> bytes:
    return _str(value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b"")


def encode_certificate(
    ca_pair: CAKeyPair, signer: PrivateKey, subject_blob: bytes, cert_type: int, *,
    nonce: bytes, serial: int, key_id: bytes, principals: Sequence[bytes],
    valid_after: int, valid_before: int, extensions: Iterable[tuple[bytes, bytes]],
) -> bytes:
    """Assemble and sign one certificate (PROTOCOL.certkeys); returns its text line.

    Low level: ``subject_blob`` is the SSH wire encoding of the certified key; extensions are
    ``(name, value)`` pairs, sorted here as the format requires; a non-empty value is wrapped
    in an SSH string, as OpenSSH does.
    """
    type_len = int.from_bytes(subject_blob[:4], "big")
    cert_key_type = subject_blob[4:4 + type_len] + _CERT_SUFFIX
    exts = b"".join(
        _str(name) + (_str(_str(value)) if value else _EMPTY)
        for name, value in sorted(extensions)
    )
    tbs = b"".join((
        _str(cert_key_type), _str(nonce), subject_blob[4 + type_len:],
        _PACK_SERIAL_TYPE(serial, cert_type), _str(key_id),
        _str(b"".join(_str(p) for p in principals)),
        _PACK_VALIDITY(valid_after, valid_before),
        _EMPTY,  # critical options: none
        _str(exts), _EMPTY,  # reserved
        _str(ca_pair.ssh_blob),
    ))
    if isinstance(signer, ed25519.Ed25519PrivateKey):
        signature = _str(b"ssh-ed25519") + _str(signer.sign(tbs))
    else:
        r, s = decode_dss_signature(signer.sign(tbs, ec.ECDSA(hashes.SHA256())))
        signature = _str(b"ecdsa-sha2-nistp256") + _str(_mpint(r) + _mpint(s))
    return cert_key_type + b" " + binascii.b2a_base64(tbs + _str(signature), newline=False)


# ---------------------------------------------------------------------- verification


def parse_ssh_cert(cert: bytes | str | SSHCertificate) -> SSHCertificate:
    """Parse a certificate line; :class:`AccessDenied` when it is not a certificate."""
    if isinstance(cert, SSHCertificate):
        return cert
    raw = cert.encode() if isinstance(cert, str) else bytes(cert)
    if len(raw) > MAX_CERT_SIZE:
        raise AccessDenied(f"SSH certificate is larger than {MAX_CERT_SIZE} bytes")
    try:
        parsed = load_ssh_public_identity(raw.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise AccessDenied(f"malformed SSH certificate: {err}") from None
    if not isinstance(parsed, SSHCertificate):
        raise AccessDenied("an SSH public key was presented where a certificate is required")
    return parsed


def verify_ssh_user_cert(
    cert: bytes | str | SSHCertificate,
    trusted: Mapping[str, Sequence[PublicKey]],
    now: datetime | None = None,
    *,
    principal: str | None = None,
) -> Identity:
    """The identity of a valid user certificate, or :class:`AccessDenied` with the reason.

    ``trusted`` maps cluster names to their user CA keys (:func:`ssh_trust_map`). The
    certificate must be a user certificate, validly signed by a key trusted for the cluster
    its identity claims, inside its validity window, and (when ``principal`` is given) valid
    for that login.
    """
    parsed, identity = _verify(cert, trusted, now, SSHCertificateType.USER, principal)
    expected = [p.encode() for p in identity.logins or (NO_LOGIN_PRINCIPAL,)]
    if parsed.valid_principals != expected:
        raise AccessDenied("SSH certificate principals do not match its identity's logins")
    return identity


def verify_ssh_host_cert(
    cert: bytes | str | SSHCertificate,
    trusted: Mapping[str, Sequence[PublicKey]],
    now: datetime | None = None,
    *,
    principal: str | None = None,
) -> Identity:
    """The identity of a valid host certificate, or :class:`AccessDenied` with the reason.

    Same checks as :func:`verify_ssh_user_cert`, for host certificates and host CA keys;
    ``principal`` is the name or address the host was reached by.
    """
    parsed, identity = _verify(cert, trusted, now, SSHCertificateType.HOST, principal)
    if identity.host_id is None or identity.host_id.encode() not in parsed.valid_principals:
        raise AccessDenied("SSH host certificate does not name its host id as a principal")
    return identity


def _verify(
    cert: bytes | str | SSHCertificate, trusted: Mapping[str, Sequence[PublicKey]],
    now: datetime | None, want: SSHCertificateType, principal: str | None,
) -> tuple[SSHCertificate, Identity]:
    parsed = parse_ssh_cert(cert)
    try:
        parsed.verify_cert_signature()
        signer = parsed.signature_key()
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise AccessDenied("SSH certificate signature is invalid") from None
    if parsed.type is not want:
        raise AccessDenied(f"a {parsed.type.name.lower()} certificate was presented where a "
                           f"{want.name.lower()} certificate is required")
    kind = want.name.lower()
    signers = [cluster for cluster, keys in trusted.items() if any(k == signer for k in keys)]
    if not signers:
        raise AccessDenied(f"SSH {kind} certificate is signed by an untrusted CA")
    if parsed.critical_options:
        names = ", ".join(sorted(n.decode(errors="replace") for n in parsed.critical_options))
        raise AccessDenied(f"SSH certificate has unsupported critical options: {names}")
    data = parsed.extensions.get(_IDENTITY_EXT)
    if data is None:
        raise AccessDenied(f"SSH certificate has no {IDENTITY_EXTENSION} extension")
    not_before, not_after = _datetime(parsed.valid_after), _datetime(parsed.valid_before)
    try:
        identity = Identity.from_json(data, not_before=not_before, not_after=not_after)
    except BadParameter as err:
        raise AccessDenied(f"SSH certificate identity is malformed: {err}") from None
    if identity.cluster not in signers:
        raise AccessDenied(f"SSH certificate claims cluster {identity.cluster!r} but is signed "
                           f"by the {kind} CA of {', '.join(repr(c) for c in signers)}")
    instant = int(utc_now(now).timestamp())
    if instant < parsed.valid_after:
        raise AccessDenied(f"SSH certificate is not valid before {not_before.isoformat()}")
    if instant >= parsed.valid_before:
        raise AccessDenied(f"SSH certificate expired at {not_after.isoformat()}")
    if principal is not None and principal.encode() not in parsed.valid_principals:
        raise AccessDenied(f"SSH certificate is not valid for principal {principal!r}")
    return parsed, identity


def _datetime(timestamp: int) -> datetime:
    """An SSH validity bound as a datetime (``forever`` saturates at ``datetime.max``)."""
    try:
        return datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.max.replace(tzinfo=UTC)
