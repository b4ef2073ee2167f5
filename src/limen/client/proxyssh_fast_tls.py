"""The TLS context of ``lmsh proxy ssh`` without importing cryptography (about 95 ms of the
ProxyCommand's start-up, which OpenSSH pays on every connection).

* The proxy is verified by OpenSSL against the profile cluster's TLS CA alone (saved at login),
  with its host name and TLS 1.3; then :func:`check_proxy_cert` reads the Limen identity from
  the verified certificate (the DER walked here, the identity extension's JSON) and requires
  the proxy of that cluster, before any byte is sent: a node's or a database agent's
  certificate, also signed by the cluster's CA, is refused (CVE-2021-41393 class).
* The user's OpenSSH Ed25519 key is turned into PKCS#8 in memory (``limen.client.fast_der``,
  which also walks the DER) and loaded, with the login certificate, through an anonymous
  in-memory file (``memfd_create``): it never touches disk.

Whatever this module cannot do without cryptography (another key type, no ``memfd_create``, a
certificate carrying only the legacy identity extension) answers ``None`` or raises
:class:`Unsupported`; the caller (``limen.client.proxyssh_tls``) then uses the full checks of
``limen.ca``.
"""

from __future__ import annotations

import os
import ssl

from limen.client.fast_der import Malformed, Unsupported, ed25519_pkcs8_pem, identity_json
from limen.errors import AccessDenied

__all__ = ["Unsupported", "check_proxy_cert", "ed25519_pkcs8_pem", "fast_context"]


def fast_context(cert_pem: bytes, openssh_key: bytes, ca_path: str) -> ssl.SSLContext:
    """Mutual TLS 1.3 with the login certificate ``cert_pem`` and its key (the OpenSSH
    private key file's bytes), trusting the CA file ``ca_path`` only; the proxy's role is
    checked afterwards with :func:`check_proxy_cert`."""
    if not hasattr(os, "memfd_create") or not os.path.isdir("/proc/self/fd"):
        raise Unsupported("no anonymous in-memory files here")
    pem = ed25519_pkcs8_pem(openssh_key) + cert_pem
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION
    context.load_verify_locations(cafile=ca_path)
    fd = os.memfd_create("lmsh-tls", os.MFD_CLOEXEC)
    try:
        view = memoryview(pem)
        while view:
            view = view[os.write(fd, view):]
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return context


def _identity(der: bytes) -> dict[str, object]:
    """The identity JSON of the server's certificate (:class:`Unsupported` when it has none
    in the current extension)."""
    try:
        return identity_json(der)
    except Malformed as err:
        raise AccessDenied(f"the server's certificate: {err}") from None


def check_proxy_cert(der: bytes | None, cluster: str) -> None:
    """:class:`AccessDenied` unless the (OpenSSL-verified) certificate ``der`` is the proxy's
    of ``cluster``."""
    if not der:
        raise AccessDenied("the server presented no certificate")
    doc = _identity(der)
    if doc.get("v") != 1:
        raise Unsupported(f"identity version {doc.get('v')!r}")
    role = doc.get("system_role")
    if doc.get("cluster") != cluster or role != "proxy":
        held = role if isinstance(role, str) else "user"
        raise AccessDenied(f"the server is not a proxy of {cluster}: the certificate is a "
                           f"{held}'s ({str(doc.get('user', '?'))[:80]}) of "
                           f"{str(doc.get('cluster', '?'))[:80]}")
