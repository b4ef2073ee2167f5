"""Key pairs and their encodings: generation, OpenSSH / PEM (de)serialisation, fingerprints, pins.

Called by the CA records (:mod:`limen.ca.authority`), the certificate signers, auth (to
generate CA keys), the client (``lmsh`` generates the user's Ed25519 key at login) and the
agents (their host key). Two key types exist in Limen: Ed25519 (the default) and ECDSA P-256
(for TLS peers that do not take Ed25519, e.g. browsers, and for ES256 JWTs).

Identifiers printed to humans and compared by programs:

* :func:`ssh_fingerprint` — ``SHA256:<base64, no padding>``, exactly what ``ssh-keygen -l``
  prints for the key;
* :func:`spki_pin` — ``sha256:<hex>`` of the DER SubjectPublicKeyInfo; the CA pin given with
  join tokens and sign-up links (compare with :func:`pin_matches`);
* :func:`jwk_thumbprint` — RFC 7638 thumbprint, the ``kid`` of JWT signing keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from limen.errors import BadParameter

__all__ = [
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "generate_private_key",
    "jwk_thumbprint",
    "key_type_of",
    "load_private_key",
    "load_public_key",
    "pin_matches",
    "private_key_to_openssh",
    "private_key_to_pem",
    "public_jwk",
    "public_key_from_jwk",
    "public_key_to_openssh",
    "public_key_to_pem",
    "sign_message",
    "signature_hash",
    "signature_verifies",
    "spki_pin",
    "ssh_fingerprint",
    "ssh_public_key_blob",
]

PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


_U32 = struct.Struct(">I").pack
_SSH_ED25519_PREFIX = _U32(11) + b"ssh-ed25519"
_SSH_P256_PREFIX = _U32(19) + b"ecdsa-sha2-nistp256" + _U32(8) + b"nistp256"


class KeyType(StrEnum):
    """Key algorithms Limen generates and accepts."""

    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256"


def generate_private_key(key_type: KeyType | str = KeyType.ED25519) -> PrivateKey:
    """A fresh private key of ``key_type`` (Ed25519 unless told otherwise)."""
    kt = _key_type(key_type)
    if kt is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def key_type_of(key: PrivateKey | PublicKey) -> KeyType:
    """The :class:`KeyType` of a loaded key; :class:`BadParameter` for other curves."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return KeyType.ECDSA_P256
    raise BadParameter(f"unsupported key type {type(key).__name__}: use Ed25519 or ECDSA P-256")


def signature_hash(key: PrivateKey) -> hashes.SHA256 | None:
    """The hash X.509 signing needs with ``key``: SHA-256 for ECDSA, none for Ed25519."""
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def sign_message(key: PrivateKey, message: bytes) -> bytes:
    """``message`` signed with ``key`` (Ed25519, or ECDSA with SHA-256): the signed
    documents Limen's processes hand each other (host proofs, trust answers, CA updates)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def signature_verifies(key: Any, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is :func:`sign_message`'s of ``message`` by ``key``'s private
    half; False for a key of another type."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except InvalidSignature:
        return False
    return True


# ---------------------------------------------------------------------- private keys


def private_key_to_openssh(key: PrivateKey) -> str:
    """``-----BEGIN OPENSSH PRIVATE KEY-----`` text (unencrypted), as ``ssh`` reads it."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def private_key_to_pem(key: PrivateKey) -> str:
    """PKCS#8 ``-----BEGIN PRIVATE KEY-----`` text (unencrypted), as TLS stacks read it."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def load_private_key(data: str | bytes) -> PrivateKey:
    """Load an unencrypted OpenSSH or PEM (PKCS#8 / SEC1) private key."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in raw:
            key: Any = serialization.load_ssh_private_key(raw, password=None)
        else:
            key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise BadParameter(f"cannot load private key: {err}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise BadParameter(f"unsupported private key type {type(key).__name__}")
    key_type_of(key)
    return key


# ---------------------------------------------------------------------- public keys


def public_key_to_openssh(key: PublicKey, comment: str = "") -> str:
    """One ``authorized_keys`` line: ``ssh-ed25519 AAAA... [comment]``."""
    line = key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    return f"{line} {comment}" if comment else line


def public_key_to_pem(key: PublicKey) -> str:
    """``-----BEGIN PUBLIC KEY-----`` (SubjectPublicKeyInfo) text."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(data: str | bytes) -> PublicKey:
    """Load an OpenSSH public key line (comment allowed) or a PEM SubjectPublicKeyInfo."""
    raw = (data.encode() if isinstance(data, str) else bytes(data)).strip()
    try:
        if raw.startswith(b"-----BEGIN"):
            key: Any = serialization.load_pem_public_key(raw)
        else:
            if b"-cert-v01@openssh.com" in raw.split(b" ", 1)[0]:
                raise ValueError("a certificate, not a public key")
            key = serialization.load_ssh_public_key(raw)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise BadParameter(f"cannot load public key: {err}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise BadParameter(f"unsupported public key type {type(key).__name__}")
    key_type_of(key)
    return key


def ssh_public_key_blob(key: PublicKey) -> bytes:
    """The SSH wire encoding of a public key (RFC 4253 §6.6, RFC 5656, RFC 8709).

    Built directly from the raw key bytes: signing calls this for every certificate and the
    generic OpenSSH serialiser is several times slower.
    """
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return _SSH_ED25519_PREFIX + _U32(len(raw)) + raw
    key_type_of(key)
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return _SSH_P256_PREFIX + _U32(len(point)) + point


def ssh_fingerprint(key: PublicKey) -> str:
    """``SHA256:<base64>`` exactly as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(ssh_public_key_blob(key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def spki_pin(key_or_cert: PublicKey | x509.Certificate) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo (of a key or a certificate's key)."""
    key = key_or_cert.public_key() if isinstance(key_or_cert, x509.Certificate) else key_or_cert
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def pin_matches(pin: str, key_or_cert: PublicKey | x509.Certificate) -> bool:
    """Constant-time check of a ``sha256:<hex>`` pin (case-insensitive hex)."""
    return hmac.compare_digest(pin.strip().lower().encode(), spki_pin(key_or_cert).encode())


# ---------------------------------------------------------------------- JWK (RFC 7517/7638)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jwk_members(key: PublicKey) -> dict[str, str]:
    """The required JWK members of a public key (the ones RFC 7638 hashes)."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    key_type_of(key)
    numbers = key.public_numbers()
    return {"crv": "P-256", "kty": "EC", "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big"))}


def jwk_thumbprint(key: PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the ``kid`` of Limen JWT keys."""
    canonical = json.dumps(_jwk_members(key), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def public_jwk(key: PublicKey, kid: str | None = None) -> dict[str, str]:
    """The public JWK of ``key`` with ``use``, ``alg`` and ``kid`` (thumbprint by default)."""
    jwk = _jwk_members(key)
    jwk.update({"use": "sig", "alg": "EdDSA" if jwk["kty"] == "OKP" else "ES256",
                "kid": kid or jwk_thumbprint(key)})
    return jwk


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """Load an Ed25519 (OKP) or P-256 (EC) public JWK; :class:`BadParameter` otherwise."""
    try:
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk["x"]))
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            x = int.from_bytes(_b64url_decode(jwk["x"]), "big")
            y = int.from_bytes(_b64url_decode(jwk["y"]), "big")
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except (KeyError, TypeError, ValueError) as err:
        raise BadParameter(f"invalid JWK: {err}") from None
    raise BadParameter(f"unsupported JWK kty={jwk.get('kty')!r} crv={jwk.get('crv')!r}")


def _key_type(value: KeyType | str) -> KeyType:
    try:
        return KeyType(value)
    except ValueError:
        raise BadParameter(
            f"unknown key type {value!r} (known: {', '.join(k.value for k in KeyType)})"
        ) from None
