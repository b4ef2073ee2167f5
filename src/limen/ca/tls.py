"""``ssl.SSLContext`` factories for Limen's TLS listeners and clients, from in-memory material.

Called by auth (its mTLS API), the proxy (web, database and Kubernetes fronts, its client
towards auth), the agents and ``lmsh``. Policy, in one place: TLS 1.2 minimum (1.3 is
negotiated whenever the peer has it), ECDHE with AEAD ciphers only for TLS 1.2, key exchange
over X25519, P-256 or P-384 only (``limen.ca.tls_groups``: Python's ``ssl`` cannot set a group
list itself), no compression, no renegotiation. Certificates served to the public (the proxy's
web listener) carry ECDSA P-256 keys (``limen.ca.host_keys``): browsers refuse Ed25519.

``ssl`` can only load a certificate chain and key from a path: :func:`server_context` and
:func:`client_context` write them to an anonymous in-memory file (``memfd_create``, opened
again through ``/proc/self/fd``), so the private key never reaches a disk and no temporary
directory is needed (a pod with a read-only root filesystem may have none). Where memfd or
``/proc`` is missing (not Linux), they fall back to a fresh private directory (0700, file
0600) deleted before returning. Trusted CA certificates go in through ``cadata`` (no file).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from limen.ca.keys import PrivateKey, private_key_to_pem
from limen.ca.tls_groups import restrict_groups
from limen.errors import BadParameter

__all__ = ["TLS12_CIPHERS", "client_context", "server_context"]

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""Cipher suites allowed when TLS 1.2 is negotiated (TLS 1.3 suites are all AEAD)."""


def server_context(
    cert_chain: x509.Certificate | Sequence[x509.Certificate],
    private_key: PrivateKey,
    client_cas: Sequence[x509.Certificate] | None = None,
    require_client_cert: bool = True,
) -> ssl.SSLContext:
    """A server context presenting ``cert_chain`` (leaf first).

    With ``client_cas`` the server asks for a client certificate issued by one of them, and
    refuses the handshake without one when ``require_client_cert`` is true.
    """
    if require_client_cert and not client_cas:
        raise BadParameter("requiring client certificates needs at least one client CA")
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(ctx, cert_chain, private_key)
    if client_cas:
        ctx.load_verify_locations(cadata=_pem(client_cas))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(
    cert_chain: x509.Certificate | Sequence[x509.Certificate] | None,
    private_key: PrivateKey | None,
    ca_certs: Sequence[x509.Certificate],
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context trusting only ``ca_certs``, presenting a client certificate if given.

    Hostname checking is on unless ``check_hostname`` is false (e.g. dialling a Limen host
    by address through a tunnel, where the identity is checked afterwards).
    """
    if (cert_chain is None) != (private_key is None):
        raise BadParameter("a client certificate and its private key go together")
    if not ca_certs:
        raise BadParameter("a TLS client needs at least one trusted CA certificate")
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=_pem(ca_certs))
    if cert_chain is not None and private_key is not None:
        _load_chain(ctx, cert_chain, private_key)
    return ctx


def _base(protocol: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers(TLS12_CIPHERS)
    restrict_groups(ctx)
    return ctx


def _pem(certs: Sequence[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _load_chain(
    ctx: ssl.SSLContext, chain: x509.Certificate | Sequence[x509.Certificate],
    key: PrivateKey,
) -> None:
    certs = [chain] if isinstance(chain, x509.Certificate) else list(chain)
    if not certs:
        raise BadParameter("an empty certificate chain cannot be presented")
    pem = private_key_to_pem(key) + _pem(certs)
    try:
        if not _load_from_memory(ctx, pem):
            _load_from_private_dir(ctx, pem)
    except ssl.SSLError as err:
        raise BadParameter(f"cannot use certificate and key: {err}") from None


def _load_from_memory(ctx: ssl.SSLContext, pem: str) -> bool:
    """Load ``pem`` through an anonymous in-memory file; False where there is none (no
    ``memfd_create``, no ``/proc``)."""
    try:
        fd = os.memfd_create("limen-tls", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        return False
    try:
        data = memoryview(pem.encode())
        while data:
            data = data[os.write(fd, data):]
        path = f"/proc/self/fd/{fd}"
        if not os.path.exists(path):
            return False
        ctx.load_cert_chain(path)
        return True
    finally:
        os.close(fd)


def _load_from_private_dir(ctx: ssl.SSLContext, pem: str) -> None:
    try:
        with tempfile.TemporaryDirectory(prefix="limen-tls-") as tmp:
            path = os.path.join(tmp, "chain.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(pem)
            ctx.load_cert_chain(path)
    except OSError as err:
        raise BadParameter(f"cannot load the certificate and key: no in-memory file and no "
                           f"usable temporary directory ({err}); set TMPDIR") from None
