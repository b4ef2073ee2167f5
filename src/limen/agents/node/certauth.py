"""Client authentication of the node agent: Limen user certificates, nothing else.

Called by the node's SSH connection (:mod:`limen.agents.node.connection`) with the key blob a
client offers in a ``publickey`` request. Pure: no I/O, no asyncssh. The blob must be an
OpenSSH user certificate that :func:`limen.ca.ssh_certs.verify_ssh_user_cert` accepts for the
requested login against the trust map read for this very attempt (right CA type, a CA trusted
for the cluster the identity claims, validity window, principal). Plain keys, host
certificates and certificates of Limen processes are refused with a reason for the audit log.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.serialization import SSHCertificate

from limen.ca.identity import Identity
from limen.ca.keys import PublicKey, ssh_public_key_blob
from limen.ca.ssh_certs import MAX_CERT_SIZE, parse_ssh_cert, verify_ssh_user_cert
from limen.errors import AccessDenied

__all__ = ["VerifiedUser", "authenticate_key", "is_certificate", "key_algorithm"]

_CERT_SUFFIX = b"-cert-v01@openssh.com"


@dataclass(frozen=True)
class VerifiedUser:
    identity: Identity
    """Who the certificate speaks for, with its validity window."""
    ca_blob: bytes
    """SSH wire encoding of the CA key that signed it."""
    permit_port_forwarding: bool
    permit_agent_forwarding: bool
    permit_pty: bool
    key_id: str


def key_algorithm(key_data: bytes) -> bytes:
    """The algorithm name at the start of an SSH key blob; AccessDenied if malformed."""
    if len(key_data) < 4:
        raise AccessDenied("malformed public key blob")
    (length,) = struct.unpack(">I", key_data[:4])
    if length == 0 or length > 64 or len(key_data) < 4 + length:
        raise AccessDenied("malformed public key blob")
    return key_data[4:4 + length]


def is_certificate(key_data: bytes) -> bool:
    """Whether an offered key blob is an OpenSSH certificate (of any kind)."""
    try:
        return key_algorithm(key_data).endswith(_CERT_SUFFIX)
    except AccessDenied:
        return False


def authenticate_key(
    key_data: bytes, login: str, trusted: Mapping[str, Sequence[PublicKey]],
    now: datetime | None = None,
) -> VerifiedUser:
    """Verify the offered key blob for ``login``; AccessDenied with the reason otherwise."""
    if len(key_data) > MAX_CERT_SIZE:
        raise AccessDenied("offered key is too large")
    algorithm = key_algorithm(key_data)
    if not algorithm.endswith(_CERT_SUFFIX):
        raise AccessDenied("a plain public key was offered: this server accepts only Limen "
                           "user certificates (run lmsh login)")
    line = algorithm + b" " + binascii.b2a_base64(key_data, newline=False)
    identity = verify_ssh_user_cert(line, trusted, now, principal=login)
    if identity.is_system:
        raise AccessDenied("the certificate of a Limen process cannot open user sessions")
    cert: SSHCertificate = parse_ssh_cert(line)
    extensions = cert.extensions
    return VerifiedUser(
        identity=identity,
        ca_blob=ssh_public_key_blob(_public(cert)),
        permit_port_forwarding=b"permit-port-forwarding" in extensions,
        permit_agent_forwarding=b"permit-agent-forwarding" in extensions,
        permit_pty=b"permit-pty" in extensions,
        key_id=cert.key_id.decode(errors="replace"),
    )


def _public(cert: SSHCertificate) -> PublicKey:
    key = cert.signature_key()
    return key  # type: ignore[return-value]  # verify_ssh_user_cert accepted it: Ed25519/P-256
