"""Auth's HTTP client of OpenID providers: discovery, signing keys and the token endpoint.

``metadata(issuer)`` reads ``{issuer}/.well-known/openid-configuration`` and checks that the
document names the same issuer (OpenID Connect Discovery 4.3) and that every endpoint is https
(http only on a loopback address, as ``limen.api.oidc_connector`` allows the issuer);
``signing_keys`` reads the JWKS (PyJWT's ``PyJWKSet``), fetched again when a token names a key
id it does not hold (the provider rotated); ``exchange`` posts an authorization code with the
client secret (HTTP basic, RFC 6749 2.3.1) and the PKCE verifier. Discovery and keys are kept
for five minutes. Answers are bounded in size, redirects are not followed, and every failure is
an :class:`~limen.auth.sso.errors.SSOFailure` that says which step failed, never with the
secret or the code in it. Used by :class:`limen.auth.sso.oidc.OIDCLogins`.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import aiohttp
import jwt

from limen.api.oidc_connector import is_loopback_host
from limen.auth.sso.errors import SSOFailure

__all__ = ["OIDCProviderClient", "ProviderMetadata"]

_MAX_ANSWER = 256 << 10
_CACHE_SECONDS = 300.0
_TIMEOUT = aiohttp.ClientTimeout(total=10)


class ProviderMetadata(NamedTuple):
    """What Limen uses of a provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


def _check_endpoint(url: object, what: str) -> str:
    if not isinstance(url, str) or not url:
        raise SSOFailure("bad_discovery", f"the provider's discovery document has no {what}")
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname)):
        return url
    raise SSOFailure("bad_discovery", f"the provider's {what} {url!r} is not https")


class OIDCProviderClient:
    """One HTTP session for every provider auth talks to; close it with :meth:`close`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._metadata: dict[str, tuple[float, ProviderMetadata]] = {}
        self._keys: dict[str, tuple[float, jwt.PyJWKSet]] = {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get_json(self, url: str, what: str) -> Mapping[str, Any]:
        try:
            async with self._http().get(url, allow_redirects=False,
                                        headers={"Accept": "application/json"}) as answer:
                body = await answer.content.read(_MAX_ANSWER + 1)
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise SSOFailure("provider_unreachable",
                             f"cannot read the provider's {what}: {type(err).__name__}") from None
        if status != 200 or len(body) > _MAX_ANSWER:
            raise SSOFailure("provider_error", f"the provider's {what} answered HTTP {status}")
        return _json_object(body, what)

    async def metadata(self, issuer: str) -> ProviderMetadata:
        """The discovery document of ``issuer`` (cached)."""
        cached = self._metadata.get(issuer)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        doc = await self._get_json(f"{issuer}/.well-known/openid-configuration",
                                   "discovery document")
        if doc.get("issuer") != issuer:
            raise SSOFailure("bad_discovery", "the provider's discovery document names another "
                             f"issuer than {issuer!r}")
        meta = ProviderMetadata(
            issuer, _check_endpoint(doc.get("authorization_endpoint"), "authorization_endpoint"),
            _check_endpoint(doc.get("token_endpoint"), "token_endpoint"),
            _check_endpoint(doc.get("jwks_uri"), "jwks_uri"))
        self._metadata[issuer] = (self._clock() + _CACHE_SECONDS, meta)
        return meta

    async def signing_keys(self, meta: ProviderMetadata, *, refresh: bool = False
                           ) -> jwt.PyJWKSet:
        """The provider's JWKS (cached; ``refresh`` reads it again)."""
        cached = self._keys.get(meta.jwks_uri)
        if cached is not None and cached[0] > self._clock() and not refresh:
            return cached[1]
        doc = await self._get_json(meta.jwks_uri, "signing keys (JWKS)")
        try:
            keys = jwt.PyJWKSet.from_dict(dict(doc))
        except jwt.PyJWTError as err:
            raise SSOFailure("bad_jwks", f"the provider's signing keys are unusable: {err}") \
                from None
        self._keys[meta.jwks_uri] = (self._clock() + _CACHE_SECONDS, keys)
        return keys

    async def exchange(self, meta: ProviderMetadata, *, client_id: str, client_secret: str,
                       code: str, redirect_uri: str, code_verifier: str) -> Mapping[str, Any]:
        """The token endpoint's answer for ``code`` (must hold an ``id_token``)."""
        pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"  # RFC 6749 2.3.1
        headers = {"Accept": "application/json",
                   "Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": redirect_uri, "code_verifier": code_verifier}
        try:
            async with self._http().post(meta.token_endpoint, data=form, headers=headers,
                                         allow_redirects=False) as answer:
                body = await answer.content.read(_MAX_ANSWER + 1)
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise SSOFailure("provider_unreachable", "cannot reach the provider's token "
                             f"endpoint: {type(err).__name__}") from None
        if len(body) > _MAX_ANSWER:
            raise SSOFailure("token_exchange_failed", "the token endpoint's answer is too large")
        if status != 200:
            error = _provider_error(body)
            raise SSOFailure("token_exchange_failed",
                             f"the provider refused the code (HTTP {status}{error})")
        answer_doc = _json_object(body, "token endpoint answer")
        if not isinstance(answer_doc.get("id_token"), str):
            raise SSOFailure("no_id_token", "the provider's token answer has no ID token")
        return answer_doc


def _json_object(body: bytes, what: str) -> Mapping[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SSOFailure("provider_error", f"the provider's {what} is not JSON") from None
    if not isinstance(doc, dict):
        raise SSOFailure("provider_error", f"the provider's {what} is not a JSON object")
    return doc


def _provider_error(body: bytes) -> str:
    """``: invalid_grant`` from an OAuth error answer (the error code only, bounded)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    error = doc.get("error") if isinstance(doc, dict) else None
    return f": {error[:64]}" if isinstance(error, str) and error.isprintable() else ""
