"""The pure parts of single sign-on: claims to a user name, roles and traits
(``limen.auth.sso.claims``), and the ID token checks that need a token no honest provider
would send (``limen.auth.sso.id_token``): the ``none`` algorithm, an HMAC signed with the
public key, several audiences without ``azp``, a missing nonce. The provider-signed tokens and
the whole flow are tested against the real provider in tests/integration/test_sso_oidc*.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from limen.api.oidc_connector import ClaimMapping
from limen.auth.sso.claims import mapped_roles, traits_of, username_of
from limen.auth.sso.errors import SSOFailure
from limen.auth.sso.id_token import verify_id_token

ISSUER = "https://idp.example.com"
KEY = ec.generate_private_key(ec.SECP256R1())
JWK = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key()))
KEYS = jwt.PyJWKSet.from_dict({"keys": [JWK | {"kid": "k1", "use": "sig", "alg": "ES256"}]})


def _token(**claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "limen", "sub": "alice", "iat": now, "exp": now + 60,
            "nonce": "n1"} | claims
    return jwt.encode({k: v for k, v in body.items() if v is not None}, KEY, algorithm="ES256",
                      headers={"kid": "k1"})


def _verify(token: str) -> Any:
    return verify_id_token(token, KEYS, issuer=ISSUER, client_id="limen", nonce="n1",
                           now=time.time())


def test_roles_from_exact_and_glob_values_of_strings_and_lists() -> None:
    mappings = [ClaimMapping("groups", "eng-*", ("dev",)),
                ClaimMapping("groups", "admins", ("ops", "dev")),
                ClaimMapping("email_verified", "true", ("verified",))]
    claims = {"groups": ["eng-web", "admins"], "email_verified": True}
    assert mapped_roles(mappings, claims) == ["dev", "ops", "verified"]
    assert mapped_roles(mappings, {"groups": "sales"}) == []
    # a glob is anchored and its other characters are literal
    assert mapped_roles([ClaimMapping("g", "a.*", ("r",))], {"g": "abc"}) == []
    assert mapped_roles([ClaimMapping("g", "a.*", ("r",))], {"g": "a.x"}) == ["r"]


def test_traits_are_the_user_claims() -> None:
    traits = traits_of({"sub": "alice", "groups": ["a", "b"], "nonce": "n", "aud": "limen",
                        "exp": 1, "age": 7, "address": {"city": "x"}})
    assert traits == {"sub": ["alice"], "groups": ["a", "b"], "age": ["7"]}


def test_the_user_name_claim() -> None:
    assert username_of({"email": "Alice@Example.com"}, "email") == "alice@example.com"
    for claims, reason in (({}, "no_username"),
                           ({"email": "a@b.c", "email_verified": False}, "email_not_verified"),
                           ({"email": "not a name"}, "bad_username")):
        with pytest.raises(SSOFailure) as refused:
            username_of(claims, "email")
        assert refused.value.reason == reason


def test_a_good_token_verifies() -> None:
    assert _verify(_token())["sub"] == "alice"
    assert _verify(_token(aud=["limen", "api"], azp="limen"))["sub"] == "alice"


@pytest.mark.parametrize(("token", "reason"), [
    (lambda: _token(aud=["other", "limen"]), "bad_audience"),  # several audiences, no azp
    (lambda: _token(nonce=None), "bad_nonce"),
    (lambda: _token(iss="https://evil.example.com"), "bad_issuer"),
    (lambda: _token(exp=int(time.time()) - 3600), "expired"),
    (lambda: _token(sub=None), "missing_claim"),
])
def test_refused_claims(token: Any, reason: str) -> None:
    with pytest.raises(SSOFailure) as refused:
        _verify(token())
    assert refused.value.reason == reason


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_unsigned_and_hmac_tokens_are_refused() -> None:
    claims = jwt.decode(_token(), options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'kid': 'k1'})}.{_b64(claims)}."
    with pytest.raises(SSOFailure) as refused:
        _verify(unsigned)
    assert refused.value.reason == "bad_algorithm"
    signing_input = f"{_b64({'alg': 'HS256', 'kid': 'k1'})}.{_b64(claims)}"
    mac = hmac.new(json.dumps(JWK).encode(), signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(SSOFailure) as refused:
        _verify(forged)
    assert refused.value.reason == "bad_algorithm"


def test_an_unknown_key_is_refused() -> None:
    other = jwt.encode(jwt.decode(_token(), options={"verify_signature": False}),
                       ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                       headers={"kid": "k2"})
    with pytest.raises(SSOFailure) as refused:
        _verify(other)
    assert refused.value.reason == "unknown_signing_key"
