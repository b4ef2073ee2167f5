"""Verifies an OpenID Connect ID token (OpenID Connect Core 3.1.3.7) with PyJWT.

The signature is checked against the provider's JWKS with the key the token's header names
(asymmetric algorithms only: never ``none`` or an HMAC keyed with something public); ``iss``
must be the connector's issuer, ``aud`` must hold the connector's client id (and when it holds
several, ``azp`` must be that client id); ``exp``, ``iat`` and ``sub`` are required; ``exp``
and ``nbf`` are checked with PyJWT's clock and again with auth's (``now``), both with the same
``leeway``; ``nonce`` must be the one auth sent in the authorization request. Every refusal is
an :class:`~limen.auth.sso.errors.SSOFailure` whose reason names the check that failed. Pure
but for PyJWT; called by :class:`limen.auth.sso.oidc.OIDCLogins`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import jwt

from limen.auth.sso.errors import SSOFailure

__all__ = ["ALGORITHMS", "key_id", "verify_id_token"]

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
              "EdDSA")
"""Signature algorithms accepted for ID tokens (asymmetric: the key comes from the JWKS)."""
LEEWAY_SECONDS = 30


def key_id(raw: str) -> str | None:
    """The ``kid`` the token's header names (None without one); ``SSOFailure`` when the
    token is not a JWS at all."""
    try:
        header = jwt.get_unverified_header(raw)
    except jwt.PyJWTError:
        raise SSOFailure("malformed_id_token", "the ID token is not a signed JWT") from None
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


def _signing_key(raw: str, keys: jwt.PyJWKSet) -> jwt.PyJWK:
    kid = key_id(raw)
    usable = [k for k in keys.keys if getattr(k, "public_key_use", None) in (None, "sig")]
    if kid is not None:
        usable = [k for k in usable if k.key_id == kid]
    if len(usable) != 1:
        raise SSOFailure("unknown_signing_key", "the ID token is signed with a key the "
                         "provider does not publish")
    return usable[0]


def verify_id_token(raw: str, keys: jwt.PyJWKSet, *, issuer: str, client_id: str, nonce: str,
                    now: float, leeway: float = LEEWAY_SECONDS) -> Mapping[str, Any]:
    """The verified claims of ``raw``; ``SSOFailure`` naming the failed check otherwise."""
    key = _signing_key(raw, keys)
    algorithm = jwt.get_unverified_header(raw).get("alg")
    if algorithm not in ALGORITHMS or (key.algorithm_name not in (None, algorithm)
                                       and key.algorithm_name in ALGORITHMS):
        raise SSOFailure("bad_algorithm", f"the ID token's algorithm {algorithm!r} is not "
                         "accepted for this key")
    try:
        claims: dict[str, Any] = jwt.decode(
            raw, key=key.key, algorithms=[str(algorithm)], audience=client_id, issuer=issuer,
            leeway=leeway, options={"require": ["iss", "aud", "exp", "iat", "sub"]})
    except jwt.InvalidSignatureError:
        raise SSOFailure("bad_signature", "the ID token's signature is not valid") from None
    except jwt.InvalidAudienceError:
        raise SSOFailure("bad_audience", "the ID token was issued to another client") from None
    except jwt.InvalidIssuerError:
        raise SSOFailure("bad_issuer", "the ID token was issued by another issuer") from None
    except jwt.ExpiredSignatureError:
        raise SSOFailure("expired", "the ID token has expired") from None
    except jwt.ImmatureSignatureError:
        raise SSOFailure("not_yet_valid", "the ID token is not valid yet") from None
    except jwt.MissingRequiredClaimError as err:
        raise SSOFailure("missing_claim", f"the ID token has no {err.claim!r} claim") from None
    except jwt.PyJWTError as err:
        raise SSOFailure("malformed_id_token", f"the ID token is not valid: {err}") from None
    audience = claims["aud"]
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
        raise SSOFailure("bad_audience", "the ID token was issued to another client (azp)")
    _check_times(claims, now, leeway)
    sent = claims.get("nonce")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
        raise SSOFailure("bad_nonce", "the ID token does not answer this login (nonce)")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise SSOFailure("missing_claim", "the ID token's sub claim is empty")
    return claims


def _check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    """``exp`` and ``nbf`` against auth's clock (PyJWT checked the wall clock)."""
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, int | float) or now > exp + leeway:
        raise SSOFailure("expired", "the ID token has expired")
    if isinstance(nbf, int | float) and now + leeway < nbf:
        raise SSOFailure("not_yet_valid", "the ID token is not valid yet")
