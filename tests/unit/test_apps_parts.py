"""Application access parts without a cluster: the app JWT (PyJWT, checked with the JWKS the
proxy serves, both keys during a rotation), the served form of app Resources, and the request
head the app receives (the client's Limen-*, X-Forwarded-*, hop-by-hop fields and Limen's
cookie gone; Host, X-Forwarded-*, the JWT and the rewrites set; no absolute-form target).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from limen.api.app_spec import app_spec, default_public_addr
from limen.auth.app_jwt import sign_app_jwt
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity
from limen.errors import BadParameter
from limen.proxy.app.http_relay import request_head

ALICE = Identity("alice", "root", roles=("dev",), traits={"logins": ("alice",)})


def _verify(token: str, jwks: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["ES256"], **kwargs)
    return claims


def test_the_app_jwt_verifies_with_the_jwks_during_a_rotation() -> None:
    ca = CertAuthority.generate("root", CertAuthorityType.JWT)
    now = datetime.now(UTC)
    old, _ = sign_app_jwt(ca, ALICE, "http://127.0.0.1:8080", now)
    rotated = ca.rotate()
    new, expires = sign_app_jwt(rotated, ALICE, "http://127.0.0.1:8080", now)
    assert expires - now == timedelta(minutes=1)
    for token in (old, new):
        claims = _verify(token, rotated.jwks(), audience="http://127.0.0.1:8080", issuer="root")
        assert claims["sub"] == claims["username"] == "alice"
        assert claims["roles"] == ["dev"]
        assert claims["traits"] == {"logins": ["alice"]}
        assert claims["exp"] - claims["iat"] == 60
        assert claims["jti"]
    with pytest.raises(jwt.InvalidAudienceError):
        _verify(new, rotated.jwks(), audience="http://other", issuer="root")
    with pytest.raises(KeyError):  # the old key is gone once the rotation finished
        _verify(old, rotated.finish_rotation().jwks(), audience="http://127.0.0.1:8080")
    with pytest.raises(BadParameter):
        sign_app_jwt(CertAuthority.generate("root", CertAuthorityType.TLS), ALICE, "x", now)
    with pytest.raises(BadParameter):
        sign_app_jwt(ca, ALICE, "x", now, ttl=timedelta(hours=1))


def test_an_app_spec_is_read_once() -> None:
    spec = app_spec("grafana", {"kind": "app", "uri": "https://10.0.0.5:3000/sub/",
                                "rewrite": {"headers": [{"name": "X-Team", "value": "ops"}]},
                                "tls": {"insecure_skip_verify": True}},
                    "proxy.example.com:443")
    assert spec.public_addr == "grafana.proxy.example.com"
    assert (spec.scheme, spec.host, spec.port, spec.path_prefix) == \
        ("https", "10.0.0.5", 3000, "/sub")
    assert spec.host_header == "10.0.0.5:3000"
    assert spec.insecure_skip_verify
    assert spec.headers == (("X-Team", "ops"),)
    assert default_public_addr("a", "Proxy.Test") == "a.proxy.test"
    explicit = app_spec("a", {"uri": "http://h", "public_addr": "A.example.com:8443"}, "p")
    assert explicit.public_addr == "a.example.com"
    assert explicit.host_header == "h"
    for bad in ({"uri": "ftp://h"}, {"uri": "http://h",
                                     "rewrite": {"headers": [{"name": "Limen-Jwt-Assertion",
                                                              "value": "forged"}]}},
                {"uri": "http://h", "rewrite": {"headers": [{"name": "Host", "value": "x"}]}}):
        with pytest.raises(BadParameter):
            app_spec("a", bad, "p")


def _head(method: str, path: str, headers: dict[str, str]) -> dict[str, list[str]]:
    spec = app_spec("a", {"uri": "http://10.0.0.5:3000/base",
                          "rewrite": {"headers": [{"name": "X-Team", "value": "ops"}]}}, "p")
    request = make_mocked_request(method, path, headers=CIMultiDict(headers))
    lines = request_head(request, spec, "the.jwt", "192.0.2.7").decode().split("\r\n")
    assert lines[0] == f"{method} /base{path} HTTP/1.1"
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(": ")
            fields.setdefault(name.lower(), []).append(value)
    return fields


def test_the_request_head_the_app_gets() -> None:
    fields = _head("POST", "/x?y=1", {
        "Host": "a.p:3080", "Limen-Jwt-Assertion": "forged", "limen-anything": "x",
        "X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6", "X-Team": "client's",
        "Connection": "keep-alive, X-Secret", "X-Secret": "hop", "Keep-Alive": "300",
        "Cookie": "limen_app_session=abc; theme=dark", "Content-Length": "5",
        "Accept": "text/html"})
    assert fields == {
        "host": ["10.0.0.5:3000"], "cookie": ["theme=dark"], "accept": ["text/html"],
        "x-forwarded-for": ["192.0.2.7"], "x-forwarded-proto": ["https"],
        "x-forwarded-host": ["a.p:3080"], "limen-jwt-assertion": ["the.jwt"],
        "x-team": ["ops"], "connection": ["close"], "content-length": ["5"]}
    upgrade = _head("GET", "/ws", {"Connection": "Upgrade", "Upgrade": "websocket",
                                   "Sec-WebSocket-Key": "k", "Cookie": "limen_app_session=a"})
    assert upgrade["connection"] == ["Upgrade"]
    assert upgrade["upgrade"] == ["websocket"]
    assert upgrade["sec-websocket-key"] == ["k"]
    assert "cookie" not in upgrade
    assert "content-length" not in upgrade
    with pytest.raises(BadParameter):
        _head("GET", "//evil.example/x", {})
