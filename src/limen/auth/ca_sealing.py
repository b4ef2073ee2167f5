"""The CAs' private records, encrypted (AES-256-GCM) when the backend is shared.

Several auth replicas keep one cluster's CAs in one PostgreSQL database, so a CA's private
key must never sit there in plain text: :class:`CASealer` encrypts the whole private record
(``CertAuthority.to_dict()``) with the key of ``backend.ca_key_file``
(``limen.auth.ca_key_file``), a fresh random 96-bit nonce per write, and the CA's identity
(cluster and type) as associated data, so a record copied to another CA's key fails to open::

    /secrets/ca/<cluster>/<type> = {"sealed": "AES-256-GCM", "key_id": "<16 hex>",
                                    "nonce": "<base64>", "ciphertext": "<base64>"}

``key_id`` (a keyed hash of the key, telling nothing of it) lets a replica started with
another key file say so instead of failing with a bare authentication error. Without a sealer
(SQLite in the 0700 data directory, no ``ca_key_file``) records keep the plain JSON of
``CertAuthority.to_dict()``. Called by ``limen.auth.authorities`` (every CA read and write)
and ``lmctl backend migrate`` (sealing a plain store on its way into PostgreSQL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.errors import BadParameter

__all__ = [
    "CA_KEY_BYTES",
    "SEALED_FORMAT",
    "CASealer",
    "ca_associated_data",
    "decode_ca_record",
    "encode_ca_record",
    "is_sealed",
]

CA_KEY_BYTES = 32
"""AES-256: the key of ``backend.ca_key_file`` is exactly this long."""
SEALED_FORMAT = "AES-256-GCM"
_NONCE_BYTES = 12
_KEY_ID_LABEL = b"limen ca key id v1"


def ca_associated_data(cluster: str, ca_type: CertAuthorityType) -> bytes:
    """What a sealed record is bound to: the CA's cluster and type."""
    return f"limen ca record v1\x00{cluster}\x00{ca_type.value}".encode()


class CASealer:
    """Encrypts and decrypts CA records with one 32-byte key; ``source`` names where the key
    came from (the key file's path) in error messages."""

    def __init__(self, key: bytes, source: str = "backend.ca_key_file") -> None:
        if len(key) != CA_KEY_BYTES:
            raise BadParameter(f"a CA record key has {CA_KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self.source = source
        self.key_id = hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]
        """A fingerprint of the key for messages; reveals nothing of the key itself."""

    def seal(self, plaintext: bytes, associated: bytes) -> dict[str, str]:
        """The sealed document of ``plaintext`` (a new random nonce every call)."""
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = self._aead.encrypt(nonce, plaintext, associated)
        return {"sealed": SEALED_FORMAT, "key_id": self.key_id,
                "nonce": base64.b64encode(nonce).decode(),
                "ciphertext": base64.b64encode(ciphertext).decode()}

    def open(self, doc: Mapping[str, Any], associated: bytes, what: str) -> bytes:
        """The plaintext of a sealed document; ``BadParameter`` naming ``what`` when it was
        sealed with another key, was altered, or is malformed."""
        if doc.get("sealed") != SEALED_FORMAT:
            raise BadParameter(f"{what} is sealed with {doc.get('sealed')!r}, which this "
                               f"version does not know (expected {SEALED_FORMAT})")
        key_id = doc.get("key_id")
        if key_id != self.key_id:
            raise BadParameter(
                f"cannot decrypt {what}: it was encrypted with another key (key id {key_id}) "
                f"than the one in {self.source} (key id {self.key_id}); every auth replica "
                "needs the same backend.ca_key_file")
        try:
            nonce = base64.b64decode(str(doc.get("nonce", "")), validate=True)
            ciphertext = base64.b64decode(str(doc.get("ciphertext", "")), validate=True)
        except (binascii.Error, ValueError):
            raise BadParameter(f"{what} is damaged (its nonce or ciphertext is not base64)"
                               ) from None
        if len(nonce) != _NONCE_BYTES:
            raise BadParameter(f"{what} is damaged (a {len(nonce)}-byte nonce)")
        try:
            return self._aead.decrypt(nonce, ciphertext, associated)
        except InvalidTag:
            raise BadParameter(f"cannot decrypt {what} with the key in {self.source}: the "
                               "record was altered or belongs to another CA") from None


def _document(value: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise BadParameter(f"{what} is not a JSON object")
    return doc


def is_sealed(value: bytes) -> bool:
    """Is this stored CA record encrypted (rather than plain ``CertAuthority`` JSON)?"""
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and "sealed" in doc


def encode_ca_record(ca: CertAuthority, sealer: CASealer | None) -> bytes:
    """The stored form of ``ca``'s private record: sealed with ``sealer``, or plain JSON."""
    plain = json.dumps(ca.to_dict()).encode()
    if sealer is None:
        return plain
    return json.dumps(sealer.seal(plain, ca_associated_data(ca.cluster, ca.type))).encode()


def decode_ca_record(value: bytes, cluster: str, ca_type: CertAuthorityType,
                     sealer: CASealer | None) -> CertAuthority:
    """The CA stored as ``value`` under ``cluster``/``ca_type`` (sealed or plain); a sealed one
    needs ``sealer``. ``BadParameter`` with a clear reason when it cannot be read."""
    what = f"the {ca_type.value} CA record of cluster {cluster}"
    doc = _document(value, what)
    if "sealed" in doc:
        if sealer is None:
            raise BadParameter(
                f"{what} is encrypted (key id {doc.get('key_id')}): set backend.ca_key_file "
                "(LIMEN_CA_KEY_FILE for lmctl) to the key file the auth replicas use")
        plain = sealer.open(doc, ca_associated_data(cluster, ca_type), what)
        doc = _document(plain, what)
    ca = CertAuthority.from_dict(doc)
    if ca.cluster != cluster or ca.type is not ca_type:
        raise BadParameter(f"{what} holds the {ca.type.value} CA of cluster {ca.cluster}")
    return ca
