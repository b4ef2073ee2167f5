"""The TLS context of ``lmsh proxy ssh`` without importing cryptography (about 95 ms of the
ProxyCommand's start-up, which OpenSSH pays on every connection).

* The proxy is verified by OpenSSL against the profile cluster's TLS CA alone (saved at login),
  with its host name and TLS 1.3; then :func:`check_proxy_cert` reads the Limen identity from
  the verified certificate (the DER walked here, the identity extension's JSON) and requires
  the proxy of that cluster, before any byte is sent: a node's or a database agent's
  certificate, also signed by the cluster's CA, is refused (CVE-2021-41393 class).
* The user's OpenSSH Ed25519 key is turned into PKCS#8 in memory and loaded, with the login
  certificate, through an anonymous in-memory file (``memfd_create``): it never touches disk.

Whatever this module cannot do without cryptography (another key type, no ``memfd_create``, a
certificate carrying only the legacy identity extension) answers ``None`` or raises
:class:`Unsupported`; the caller (``limen.client.proxyssh_tls``) then uses the full checks of
``limen.ca``.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import struct

from limen.errors import AccessDenied

__all__ = ["Unsupported", "check_proxy_cert", "ed25519_pkcs8_pem", "fast_context"]

_IDENTITY_OID = bytes.fromhex("2bce0fba7501")
"""DER of 1.3.9999.7541.1, Limen's identity extension (``limen.ca.x509_certs.IDENTITY_OID``)."""
_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")
_MAGIC = b"openssh-key-v1\0"


class Unsupported(Exception):
    """Not done without cryptography here: the caller takes the full path."""


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(data):
        raise Unsupported("truncated OpenSSH key")
    (size,) = struct.unpack_from(">I", data, pos)
    end = pos + 4 + size
    if end > len(data):
        raise Unsupported("truncated OpenSSH key")
    return data[pos + 4:end], end


def ed25519_pkcs8_pem(openssh: bytes) -> bytes:
    """The PKCS#8 PEM of an unencrypted OpenSSH Ed25519 private key (:class:`Unsupported`
    for anything else)."""
    lines = [line for line in openssh.strip().splitlines() if not line.startswith(b"-----")]
    try:
        blob = base64.b64decode(b"".join(lines), validate=True)
    except ValueError:
        raise Unsupported("not an OpenSSH private key") from None
    if not blob.startswith(_MAGIC):
        raise Unsupported("not an OpenSSH private key")
    pos = len(_MAGIC)
    cipher, pos = _string(blob, pos)
    kdf, pos = _string(blob, pos)
    _options, pos = _string(blob, pos)
    if cipher != b"none" or kdf != b"none" or blob[pos:pos + 4] != b"\0\0\0\1":
        raise Unsupported("an encrypted or multi-key OpenSSH file")
    _public, pos = _string(blob, pos + 4)
    private, _ = _string(blob, pos)
    if private[:4] != private[4:8]:
        raise Unsupported("corrupt OpenSSH key (check words differ)")
    key_type, at = _string(private, 8)
    if key_type != b"ssh-ed25519":
        raise Unsupported(f"key type {key_type[:40]!r}")
    public, at = _string(private, at)
    secret, _ = _string(private, at)
    if len(public) != 32 or len(secret) != 64 or secret[32:] != public:
        raise Unsupported("corrupt OpenSSH Ed25519 key")
    der = _PKCS8_ED25519 + secret[:32]
    return (b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der)
            + b"-----END PRIVATE KEY-----\n")


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


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at ``pos``."""
    if pos + 2 > len(der):
        raise AccessDenied("malformed server certificate")
    tag, size = der[pos], der[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 4 or pos + count > len(der):
            raise AccessDenied("malformed server certificate")
        size, pos = int.from_bytes(der[pos:pos + count], "big"), pos + count
    if pos + size > len(der):
        raise AccessDenied("malformed server certificate")
    return tag, pos, pos + size


def _identity(der: bytes) -> dict[str, object]:
    """The identity JSON of a certificate (:class:`Unsupported` when it has none in the
    current extension)."""
    tag, start, end = _tlv(der, 0)
    tag, start, end = _tlv(der, start) if tag == 0x30 else (0, 0, 0)
    if tag != 0x30:
        raise AccessDenied("malformed server certificate")
    pos = start
    while pos < end:
        tag, value, pos = _tlv(der, pos)
        if tag != 0xA3:  # [3] extensions
            continue
        _seq, ext, ext_end = _tlv(der, value)
        while ext < ext_end:
            _ext, item, ext = _tlv(der, ext)
            oid_tag, oid, at = _tlv(der, item)
            if oid_tag != 0x06 or der[oid:at] != _IDENTITY_OID:
                continue
            tag, value_start, value_end = _tlv(der, at)
            if tag == 0x01:  # critical flag
                tag, value_start, value_end = _tlv(der, value_end)
            text_tag, text, text_end = _tlv(der, value_start) if tag == 0x04 else (0, 0, 0)
            if text_tag != 0x0C or text_end != value_end:
                raise AccessDenied("malformed identity in the server certificate")
            try:
                doc = json.loads(der[text:text_end].decode())
            except (UnicodeDecodeError, ValueError):
                raise AccessDenied("malformed identity in the server certificate") from None
            if not isinstance(doc, dict):
                raise AccessDenied("malformed identity in the server certificate")
            return doc
    raise Unsupported("no identity extension of the current form")


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
