"""Standard-library readers shared by the client's fast paths (the ProxyCommand,
``limen.client.proxyssh_fast_tls``, and kubectl's exec plugin,
``limen.client.kube_credentials_fast``), which must not import cryptography (about 95 ms of
a start-up paid on every ``ssh`` or ``kubectl``).

* :func:`ed25519_openssh` / :func:`ed25519_pkcs8_pem`: an unencrypted OpenSSH Ed25519
  private key file's seed and public key, and its PKCS#8 PEM (byte for byte what
  ``limen.ca.keys.private_key_to_pem`` writes for it).
* :func:`tlv` and :func:`identity_json`: DER walking of an X.509 certificate and the JSON of
  Limen's identity extension (``limen.ca.x509_certs.IDENTITY_OID``), unverified.

Anything these readers do not handle (another key type, an encrypted key, a certificate with
only the legacy identity extension) raises :class:`Unsupported`: the caller takes its full
path, which uses ``limen.ca``. A malformed DER element raises :class:`Malformed`.
"""

from __future__ import annotations

import base64
import json
import struct

__all__ = ["ED25519_SPKI_PREFIX", "Malformed", "Unsupported", "ed25519_openssh",
           "ed25519_pkcs8_pem", "identity_json", "tbs_elements", "tlv"]

IDENTITY_OID = bytes.fromhex("2bce0fba7501")
"""DER of 1.3.9999.7541.1, Limen's identity extension (``limen.ca.x509_certs.IDENTITY_OID``)."""
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
"""The SubjectPublicKeyInfo DER of an Ed25519 key, before its 32 bytes."""
_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")
_MAGIC = b"openssh-key-v1\0"


class Unsupported(Exception):
    """Not done without cryptography here: the caller takes the full path."""


class Malformed(Exception):
    """A certificate whose DER (or identity extension) cannot be read."""


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(data):
        raise Unsupported("truncated OpenSSH key")
    (size,) = struct.unpack_from(">I", data, pos)
    end = pos + 4 + size
    if end > len(data):
        raise Unsupported("truncated OpenSSH key")
    return data[pos + 4:end], end


def ed25519_openssh(openssh: bytes) -> tuple[bytes, bytes]:
    """The 32-byte seed and public key of an unencrypted OpenSSH Ed25519 private key file
    (:class:`Unsupported` for anything else)."""
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
    return secret[:32], public


def ed25519_pkcs8_pem(openssh: bytes) -> bytes:
    """The PKCS#8 PEM of an unencrypted OpenSSH Ed25519 private key (:class:`Unsupported`
    for anything else)."""
    der = _PKCS8_ED25519 + ed25519_openssh(openssh)[0]
    return (b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der)
            + b"-----END PRIVATE KEY-----\n")


def tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at ``pos``."""
    if pos + 2 > len(der):
        raise Malformed("malformed certificate")
    tag, size = der[pos], der[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 4 or pos + count > len(der):
            raise Malformed("malformed certificate")
        size, pos = int.from_bytes(der[pos:pos + count], "big"), pos + count
    if pos + size > len(der):
        raise Malformed("malformed certificate")
    return tag, pos, pos + size


def tbs_elements(der: bytes) -> list[tuple[int, int, int]]:
    """The (tag, start, end) of each element of a certificate's TBSCertificate."""
    tag, start, _end = tlv(der, 0)
    tag, start, end = tlv(der, start) if tag == 0x30 else (0, 0, 0)
    if tag != 0x30:
        raise Malformed("malformed certificate")
    elements = []
    pos = start
    while pos < end:
        tag, value, pos = tlv(der, pos)
        elements.append((tag, value, pos))
    return elements


def identity_json(der: bytes) -> dict[str, object]:
    """The identity JSON of a certificate (:class:`Unsupported` when it has none in the
    current extension)."""
    for tag, value, _end in tbs_elements(der):
        if tag != 0xA3:  # [3] extensions
            continue
        _seq, ext, ext_end = tlv(der, value)
        while ext < ext_end:
            _ext, item, ext = tlv(der, ext)
            oid_tag, oid, at = tlv(der, item)
            if oid_tag != 0x06 or der[oid:at] != IDENTITY_OID:
                continue
            tag, value_start, value_end = tlv(der, at)
            if tag == 0x01:  # critical flag
                tag, value_start, value_end = tlv(der, value_end)
            text_tag, text, text_end = tlv(der, value_start) if tag == 0x04 else (0, 0, 0)
            if text_tag != 0x0C or text_end != value_end:
                raise Malformed("malformed identity in the certificate")
            try:
                doc = json.loads(der[text:text_end].decode())
            except (UnicodeDecodeError, ValueError):
                raise Malformed("malformed identity in the certificate") from None
            if not isinstance(doc, dict):
                raise Malformed("malformed identity in the certificate")
            return doc
    raise Unsupported("no identity extension of the current form")
