"""The identity token application access hands to every app: a JWT signed with PyJWT by the
cluster's JWT CA (ES256 with its P-256 key, EdDSA for an Ed25519 one), ``kid`` the key's RFC
7638 thumbprint, verifiable with the JWKS (:meth:`CertAuthority.jwks`: every trusted key, so
both during a rotation) the proxy serves at ``/.well-known/jwks.json``.

Claims::

    iss cluster name       sub, username  the Limen user   roles, traits  as the certificate
    aud the app's URI      iat, nbf, exp  a minute at most jti  a random id

During a rotation of the JWT CA (``limen.auth.rotation``) the CA's active key signs: the old
one until ``update_clients``, then the new one, with its own ``kid``; the JWKS lists the
signing key first.

Called by :mod:`limen.auth.app_access` (auth signs; the proxy asks per app session and caches
the token until shortly before it expires, or until the signing key changes:
``limen.proxy.app.app_route``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity
from limen.errors import BadParameter

__all__ = ["APP_JWT_TTL", "sign_app_jwt"]

APP_JWT_TTL = timedelta(minutes=1)
"""How long an app's identity token lives (the proxy asks again before it runs out)."""


def sign_app_jwt(ca: CertAuthority, identity: Identity, audience: str, now: datetime, *,
                 ttl: timedelta = APP_JWT_TTL) -> tuple[str, datetime]:
    """The token for ``identity`` at the app ``audience`` and its expiry (see the module)."""
    if ca.type is not CertAuthorityType.JWT:
        raise BadParameter(f"a jwt CA signs app tokens, not the {ca.type.value} CA")
    if not timedelta(0) < ttl <= APP_JWT_TTL:
        raise BadParameter(f"an app token lives at most {APP_JWT_TTL}")
    key = ca.signer
    algorithm = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    expires = now + ttl
    claims = {
        "iss": ca.cluster, "sub": identity.username, "username": identity.username,
        "roles": list(identity.roles),
        "traits": {k: list(v) for k, v in identity.traits.items()},
        "aud": audience, "iat": int(now.timestamp()), "nbf": int(now.timestamp()) - 5,
        "exp": int(expires.timestamp()), "jti": str(uuid.uuid4()),
    }
    token = jwt.encode(claims, key, algorithm=algorithm, headers={"kid": ca.active.kid})
    return token, expires
