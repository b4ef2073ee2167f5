"""A software security key for tests and automation: a CTAP2 authenticator kept in a file.

**Not a security key.** Anyone who can read the file can use the credentials in it; a real key
keeps its private keys in hardware. It exists so lmsh can be driven without a USB key (tests,
scripted setups): ``LMSH_WEBAUTHN_DEVICE=/path/to/key.json`` makes lmsh talk to this instead
of a USB HID key (``limen.client.webauthn``). The file must be the caller's and mode 0600;
it is created on first use.

It answers the CTAP2 commands a ``fido2`` client sends a device (authenticatorGetInfo,
authenticatorMakeCredential, authenticatorGetAssertion) over ``CtapDevice.call`` with
CTAPHID_CBOR, exactly as a USB key would, so lmsh's code path is the real one from the fido2
client up; user presence is always given (there is nobody to touch it; a pre-flight asking
for none gets none) and it does no user verification (no PIN). Each credential is an ECDSA
P-256 key; one signature counter per device counts every signature and is written back to the
file after each, so a copy of the file used in parallel is what a cloned key looks like to the
server.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from threading import Event
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.cose import ES256
from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.hid import CAPABILITY, CTAPHID
from fido2.webauthn import AttestedCredentialData, AuthenticatorData

from limen.errors import AccessDenied, BadParameter

__all__ = ["AAGUID", "SoftwareKey", "check_key_file"]

AAGUID = bytes.fromhex("6c696d656e2d736f66742d6b65792d31")
"""The AAGUID this authenticator reports ("limen-soft-key-1")."""
_MAKE_CREDENTIAL, _GET_ASSERTION, _GET_INFO = 0x01, 0x02, 0x04
_ES256 = -7


class SoftwareKey(CtapDevice):
    """A CTAP2 device whose state lives in ``path`` (JSON, 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists():
            check_key_file(path)
        else:
            self._save({"credentials": [], "sign_count": 0})

    @property
    def capabilities(self) -> int:
        return int(CAPABILITY.CBOR | CAPABILITY.NMSG)

    @classmethod
    def list_devices(cls) -> Iterator[CtapDevice]:
        return iter(())  # only made from a file named by the caller

    def call(self, cmd: int, data: bytes = b"", event: Event | None = None,
             on_keepalive: Callable[[STATUS], None] | None = None) -> bytes:
        if cmd != CTAPHID.CBOR or not data:
            raise CtapError(CtapError.ERR.INVALID_COMMAND)
        command, request = data[0], cbor.decode(data[1:]) if len(data) > 1 else {}
        if not isinstance(request, Mapping):
            return bytes([CtapError.ERR.INVALID_CBOR])
        handlers = {_GET_INFO: self._info, _MAKE_CREDENTIAL: self._make_credential,
                    _GET_ASSERTION: self._get_assertion}
        handler = handlers.get(command)
        if handler is None:
            return bytes([CtapError.ERR.INVALID_COMMAND])
        try:
            return b"\x00" + cbor.encode(handler(request))
        except CtapError as err:
            return bytes([err.code])

    # -- the commands -------------------------------------------------------------------------
    def _info(self, _request: Mapping[Any, Any]) -> dict[int, Any]:
        return {1: ["FIDO_2_0"], 3: AAGUID, 4: {"rk": False, "up": True, "plat": False},
                5: 4096}

    def _make_credential(self, request: Mapping[Any, Any]) -> dict[int, Any]:
        client_data_hash, rp = request.get(1), request.get(2)
        if not isinstance(client_data_hash, bytes) or not isinstance(rp, Mapping):
            raise CtapError(CtapError.ERR.MISSING_PARAMETER)
        if not any(p.get("alg") == _ES256 for p in request.get(4) or []):
            raise CtapError(CtapError.ERR.UNSUPPORTED_ALGORITHM)
        rp_id = str(rp.get("id"))
        state = self._load()
        excluded = {bytes(c["id"]) for c in request.get(5) or []}
        if any(_unhex(c["id"]) in excluded and c["rp_id"] == rp_id
               for c in state["credentials"]):
            raise CtapError(CtapError.ERR.CREDENTIAL_EXCLUDED)
        key = ec.generate_private_key(ec.SECP256R1())
        cred_id = secrets.token_bytes(32)
        state["credentials"].append({
            "id": cred_id.hex(), "rp_id": rp_id,
            "private_key": key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).decode()})
        state["sign_count"] += 1
        self._save(state)
        attested = AttestedCredentialData.create(
            AAGUID, cred_id, ES256.from_cryptography_key(key.public_key()))  # type: ignore[no-untyped-call]
        auth_data = AuthenticatorData.create(
            hashlib.sha256(rp_id.encode()).digest(),
            AuthenticatorData.FLAG.UP | AuthenticatorData.FLAG.AT, state["sign_count"],
            attested)
        return {1: "none", 2: bytes(auth_data), 3: {}}

    def _get_assertion(self, request: Mapping[Any, Any]) -> dict[int, Any]:
        rp_id, client_data_hash = request.get(1), request.get(2)
        if not isinstance(rp_id, str) or not isinstance(client_data_hash, bytes):
            raise CtapError(CtapError.ERR.MISSING_PARAMETER)
        allowed = [bytes(c["id"]) for c in request.get(3) or []]
        state = self._load()
        found = next((c for c in state["credentials"]
                      if c["rp_id"] == rp_id and _unhex(c["id"]) in allowed), None)
        if found is None:
            raise CtapError(CtapError.ERR.NO_CREDENTIALS)
        state["sign_count"] += 1
        self._save(state)
        options = request.get(5) or {}
        present = AuthenticatorData.FLAG.UP if options.get("up", True) else \
            AuthenticatorData.FLAG(0)
        auth_data = bytes(AuthenticatorData.create(
            hashlib.sha256(rp_id.encode()).digest(), present, state["sign_count"]))
        key = serialization.load_pem_private_key(found["private_key"].encode(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CtapError(CtapError.ERR.OTHER)
        signature = key.sign(auth_data + client_data_hash, ec.ECDSA(hashes.SHA256()))
        return {1: {"type": "public-key", "id": _unhex(found["id"])}, 2: auth_data,
                3: signature}

    # -- the file -----------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        check_key_file(self.path)
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise BadParameter(f"software security key {self.path}: {err}") from None
        if not isinstance(state, dict) or not isinstance(state.get("credentials"), list) \
                or not isinstance(state.get("sign_count"), int):
            raise BadParameter(f"software security key {self.path} is not a key file")
        return state

    def _save(self, state: Mapping[str, Any]) -> None:
        temp = self.path.with_name(self.path.name + ".new")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(state, out)
        os.replace(temp, self.path)


def check_key_file(path: Path) -> None:
    """``AccessDenied`` unless ``path`` is a regular file of this user with mode 0600."""
    try:
        info = path.stat()
    except OSError as err:
        raise BadParameter(f"software security key {path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or \
            stat.S_IMODE(info.st_mode) != 0o600:
        raise AccessDenied(f"software security key {path} must be a file of yours with "
                           "mode 0600 (chmod 600)")


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text)

