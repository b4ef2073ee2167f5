"""WebAuthn security keys as a second factor: the stored credential, and the relying party's
options and verification, done by the maintained ``webauthn`` library (py_webauthn).

Called by ``limen.auth.credentials.login`` (an assertion at login) and
``limen.auth.credentials.local_users`` (registration at sign-up and by a logged-in user, with
challenges from ``limen.auth.credentials.webauthn_challenges``). Pure functions: the caller
keeps the credentials and passes the challenge it issued.

The relying party is the proxy: the RP ID is its public host name and the only origin accepted
is its web origin (``https://HOST:PORT``), so an assertion made for another site, or relayed
through one, is refused. A signature counter that does not increase (when the key counts at
all) means a cloned key and is refused. The credential id and public key are not secrets, but
they are still never logged: the repr of :class:`WebAuthnCredential` shows its name only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from limen.errors import AccessDenied, BadParameter

if TYPE_CHECKING:  # py_webauthn is imported by the ceremonies, not by every auth start
    from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

__all__ = [
    "MAX_KEYS",
    "TIMEOUT_MS",
    "RelyingParty",
    "WebAuthnCredential",
    "WebAuthnRefused",
    "authentication_options",
    "challenge_of",
    "check_key_name",
    "registration_options",
    "relying_party",
    "verify_assertion",
    "verify_registration",
]

TIMEOUT_MS = 60000
"""How long the browser or lmsh waits for a touch of the key (the challenge lives as long)."""
MAX_KEYS = 16
"""Security keys one user may register."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class WebAuthnRefused(AccessDenied):
    """A refused WebAuthn step; ``reason_internal`` is for the audit log only."""

    def __init__(self, message: str, reason_internal: str) -> None:
        super().__init__(message)
        self.reason_internal = reason_internal


@dataclass(frozen=True)
class RelyingParty:
    """Who the keys are registered with: the proxy's host name and web origin."""

    rp_id: str
    origin: str
    name: str
    """Shown by the browser when the key is registered: the cluster's name."""
    require_user_verification: bool = False
    """Policy (``cluster.webauthn_user_verification: required``): whether the key must verify
    the user (PIN or biometrics) on top of the touch. Off by default: the key is the second
    factor after the password."""


def relying_party(proxy_address: str, cluster: str, *,
                  require_user_verification: bool = False) -> RelyingParty:
    """The relying party of a proxy reached at ``proxy_address`` (``host:port``)."""
    parts = urlsplit(f"https://{proxy_address}")
    if not parts.hostname:
        raise BadParameter(f"proxy address {proxy_address!r} has no host name")
    return RelyingParty(parts.hostname, f"https://{parts.netloc}", cluster,
                        require_user_verification)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str, what: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise BadParameter(f"{what} must be base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadParameter(f"{what} must be base64url") from None


@dataclass(frozen=True)
class WebAuthnCredential:
    """One registered security key of a user (kept in their local credentials)."""

    name: str
    credential_id: str = field(repr=False)
    """base64url of the credential id the key gave at registration."""
    public_key: str = field(repr=False)
    """base64url of the COSE public key."""
    sign_count: int = field(default=0, repr=False)
    """The key's signature counter at its last use; a later one must be greater."""
    added: float = 0.0
    last_used: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "credential_id": self.credential_id,
                "public_key": self.public_key, "sign_count": self.sign_count,
                "added": self.added, "last_used": self.last_used}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WebAuthnCredential:
        if not isinstance(data, Mapping):
            raise BadParameter("a stored security key must be a mapping")
        name, cid, key = data.get("name"), data.get("credential_id"), data.get("public_key")
        if not all(isinstance(v, str) and v for v in (name, cid, key)):
            raise BadParameter("a stored security key needs name, credential_id and public_key")
        count, added, used = data.get("sign_count", 0), data.get("added", 0.0), \
            data.get("last_used")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise BadParameter("a stored security key's sign_count must be a counter")
        if isinstance(added, bool) or not isinstance(added, int | float):
            raise BadParameter("a stored security key's added must be a Unix time")
        if used is not None and (isinstance(used, bool) or not isinstance(used, int | float)):
            raise BadParameter("a stored security key's last_used must be a Unix time or null")
        return cls(str(name), str(cid), str(key), count, float(added),
                   None if used is None else float(used))

    def listing(self) -> dict[str, Any]:
        """What ``lmsh mfa ls`` shows: no key material."""
        return {"name": self.name, "type": "webauthn", "added": self.added,
                "last_used": self.last_used}


def check_key_name(name: str, existing: Sequence[str]) -> str:
    """``name`` if it may name a new security key; ``BadParameter`` otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadParameter("a security key's name is 1-64 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    if name == "otp":
        raise BadParameter("'otp' names the authenticator app; choose another name")
    if name in existing:
        raise BadParameter(f"you already have a second factor named {name!r}")
    return name


def _descriptors(keys: Sequence[WebAuthnCredential]) -> list[PublicKeyCredentialDescriptor]:
    from webauthn.helpers.structs import PublicKeyCredentialDescriptor

    return [PublicKeyCredentialDescriptor(id=_unb64(k.credential_id, "credential id"))
            for k in keys]


def _user_verification(rp: RelyingParty) -> UserVerificationRequirement:
    from webauthn.helpers.structs import UserVerificationRequirement

    return (UserVerificationRequirement.REQUIRED if rp.require_user_verification
            else UserVerificationRequirement.PREFERRED)


def registration_options(rp: RelyingParty, user: str, keys: Sequence[WebAuthnCredential],
                         challenge: bytes) -> dict[str, Any]:
    """``PublicKeyCredentialCreationOptions`` as JSON (binary fields base64url) for
    ``navigator.credentials.create`` or lmsh; the user's keys are excluded (no double)."""
    from webauthn import generate_registration_options, options_to_json
    from webauthn.helpers.structs import AuthenticatorSelectionCriteria, ResidentKeyRequirement

    options = generate_registration_options(
        rp_id=rp.rp_id, rp_name=rp.name, user_name=user, user_id=user.encode(),
        challenge=challenge, timeout=TIMEOUT_MS, exclude_credentials=_descriptors(keys),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=_user_verification(rp)))
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def authentication_options(rp: RelyingParty, keys: Sequence[WebAuthnCredential],
                           challenge: bytes) -> dict[str, Any]:
    """``PublicKeyCredentialRequestOptions`` as JSON for ``navigator.credentials.get``."""
    from webauthn import generate_authentication_options, options_to_json

    options = generate_authentication_options(
        rp_id=rp.rp_id, challenge=challenge, timeout=TIMEOUT_MS,
        allow_credentials=_descriptors(keys), user_verification=_user_verification(rp))
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def challenge_of(response: object) -> bytes:
    """The challenge a registration or assertion answers (from its clientDataJSON), to find
    the stored challenge it claims; the signature covers it, checked later."""
    inner = response.get("response") if isinstance(response, Mapping) else None
    encoded = inner.get("clientDataJSON") if isinstance(inner, Mapping) else None
    if not isinstance(encoded, str) or len(encoded) > 4096:
        raise WebAuthnRefused("malformed security key response", "webauthn_malformed")
    try:
        client_data = json.loads(_unb64(encoded, "clientDataJSON"))
        return _unb64(client_data["challenge"], "challenge")
    except (ValueError, KeyError, TypeError, BadParameter):
        raise WebAuthnRefused("malformed security key response", "webauthn_malformed") from None


def verify_registration(rp: RelyingParty, response: Mapping[str, Any], challenge: bytes,
                        name: str, now: float) -> WebAuthnCredential:
    """The credential a ``navigator.credentials.create`` answer registers, verified against
    ``challenge``, the RP ID, the origin and the user-verification policy."""
    from webauthn import verify_registration_response
    from webauthn.helpers.exceptions import InvalidJSONStructure, InvalidRegistrationResponse

    try:
        verified = verify_registration_response(
            credential=dict(response), expected_challenge=challenge,
            expected_rp_id=rp.rp_id, expected_origin=rp.origin,
            require_user_verification=rp.require_user_verification)
    except (InvalidRegistrationResponse, InvalidJSONStructure) as err:
        raise WebAuthnRefused(f"security key registration refused: {err}",
                              "webauthn_bad_registration") from None
    return WebAuthnCredential(name, _b64(verified.credential_id),
                              _b64(verified.credential_public_key), verified.sign_count, now)


def verify_assertion(rp: RelyingParty, keys: Sequence[WebAuthnCredential],
                     response: Mapping[str, Any], challenge: bytes,
                     now: float) -> tuple[WebAuthnCredential, ...]:
    """The user's keys after a verified ``navigator.credentials.get`` answer (the key used
    has its new counter); ``WebAuthnRefused`` with the reason otherwise."""
    raw_id = response.get("rawId") if isinstance(response, Mapping) else None
    index = next((i for i, k in enumerate(keys) if k.credential_id == raw_id), None)
    if index is None:
        raise WebAuthnRefused("this security key is not registered", "webauthn_unknown_key")
    key = keys[index]
    from webauthn import verify_authentication_response
    from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidJSONStructure

    try:
        verified = verify_authentication_response(
            credential=dict(response), expected_challenge=challenge,
            expected_rp_id=rp.rp_id, expected_origin=rp.origin,
            credential_public_key=_unb64(key.public_key, "public key"),
            credential_current_sign_count=key.sign_count,
            require_user_verification=rp.require_user_verification)
    except (InvalidAuthenticationResponse, InvalidJSONStructure) as err:
        text = str(err)
        reason = ("webauthn_counter" if "sign count" in text
                  else "webauthn_origin" if "origin" in text or "RP ID" in text
                  else "webauthn_uv_required" if "verification" in text
                  else "bad_webauthn")
        raise WebAuthnRefused(f"security key refused: {text}", reason) from None
    used = replace(key, sign_count=verified.new_sign_count, last_used=now)
    return tuple(used if i == index else k for i, k in enumerate(keys))
