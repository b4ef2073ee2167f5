"""Minimal JWTs for application access: sign with the cluster's JWT CA, verify with its JWKS.

The app agent asks auth for a token per user session (:func:`issue_app_token`) and passes it
to the internal web app in a header; the app checks it against the JWKS auth publishes
(:meth:`CertAuthority.jwks`). :func:`verify_jwt` is the same check in Python (used by tests
and by Limen's own components). Only what Limen emits is supported: compact JWS with
``EdDSA`` (Ed25519) or ``ES256`` (P-256) and a ``kid`` header; no ``none``, no HMAC.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from limen.ca._validity import CLOCK_SKEW, check_ttl, utc_now
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity
from limen.ca.keys import public_key_from_jwk
from limen.errors import AccessDenied, BadParameter

__all__ = ["issue_app_token", "sign_jwt", "verify_jwt"]

_ES256 = ec.ECDSA(hashes.SHA256())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(ca: CertAuthority, claims: Mapping[str, Any]) -> str:
    """A compact JWS of ``claims`` signed by the active key of a JWT CA."""
    if ca.type is not CertAuthorityType.JWT:
        raise BadParameter(f"a jwt CA is needed, got the {ca.type.value} CA")
    key = ca.signer
    alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    header = {"alg": alg, "typ": "JWT", "kid": ca.active.kid}
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode()) + "."
        + _b64(json.dumps(dict(claims), separators=(",", ":")).encode())
    ).encode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(signing_input)
    else:
        r, s = decode_dss_signature(key.sign(signing_input, _ES256))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing_input.decode() + "." + _b64(signature)


def issue_app_token(
    ca: CertAuthority, identity: Identity, audience: str, ttl: timedelta, *,
    now: datetime | None = None,
) -> str:
    """The identity token an app receives: ``iss`` cluster, ``sub`` user, ``aud`` app URI,
    plus ``username``, ``roles`` and ``traits``."""
    check_ttl(ttl)
    start = utc_now(now)
    return sign_jwt(ca, {
        "iss": ca.cluster,
        "sub": identity.username,
        "aud": audience,
        "iat": int(start.timestamp()),
        "nbf": int((start - CLOCK_SKEW).timestamp()),
        "exp": int((start + ttl).timestamp()),
        "username": identity.username,
        "roles": list(identity.roles),
        "traits": {k: list(v) for k, v in identity.traits.items()},
    })


def verify_jwt(
    token: str, jwks: Mapping[str, Any], *, audience: str, issuer: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The claims of a valid token, or :class:`AccessDenied` with the reason.

    ``jwks`` is a JSON Web Key Set (``{"keys": [...]}``); the header's ``kid`` selects the
    key and its ``alg`` must match the key type. ``exp``, ``nbf``, ``aud`` (and ``iss`` when
    given) are checked.
    """
    try:
        head_b64, body_b64, sig_b64 = token.split(".")
        header = json.loads(_unb64(head_b64))
        claims = json.loads(_unb64(body_b64))
        signature = _unb64(sig_b64)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise AccessDenied("malformed JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AccessDenied("malformed JWT")
    jwk = next((k for k in jwks.get("keys", ()) if k.get("kid") == header.get("kid")), None)
    if jwk is None:
        raise AccessDenied(f"JWT signed by unknown key {header.get('kid')!r}")
    try:
        key = public_key_from_jwk(jwk)
    except BadParameter as err:
        raise AccessDenied(str(err)) from None
    signing_input = f"{head_b64}.{body_b64}".encode()
    try:
        if header.get("alg") == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, signing_input)
        elif header.get("alg") == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                raise InvalidSignature
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                       int.from_bytes(signature[32:], "big"))
            key.verify(der, signing_input, _ES256)
        else:
            raise AccessDenied(f"JWT algorithm {header.get('alg')!r} does not match its key")
    except InvalidSignature:
        raise AccessDenied("JWT signature is invalid") from None
    instant = utc_now(now).timestamp()
    if not isinstance(claims.get("exp"), int) or instant >= claims["exp"]:
        raise AccessDenied("JWT is expired")
    if isinstance(claims.get("nbf"), int) and instant < claims["nbf"]:
        raise AccessDenied("JWT is not valid yet")
    aud = claims.get("aud")
    if audience != aud and not (isinstance(aud, list) and audience in aud):
        raise AccessDenied(f"JWT is not meant for {audience!r}")
    if issuer is not None and claims.get("iss") != issuer:
        raise AccessDenied(f"JWT is not issued by {issuer!r}")
    return claims
