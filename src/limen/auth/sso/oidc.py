"""The OpenID Connect login at auth: start (an authorization URL) and finish (certificates).

    lmsh ──start {connector, public_key, port}──▶ proxy ──▶ auth: state, nonce, PKCE verifier
         ◀── authorization URL ─────────────────────────────  stored 5 min (``pending``)
    browser ──▶ provider (login, consent) ──redirect──▶ http://127.0.0.1:PORT/callback?code&state
    lmsh ──finish {state, code}──▶ proxy ──▶ auth: take the state (once), exchange the code
                                                (client secret + PKCE verifier), verify the ID
                                                token (JWKS signature, iss, aud, exp, nonce),
                                                claims → name, roles, external traits
         ◀── SSH + X.509 certificates for the public key bound to the state ◀──

The web UI's login is the same flow with the proxy as the client: the provider returns to the
proxy's ``web_redirect_url``, the proxy holds the key (``limen.proxy.webui.sso_web``), and a
state is finished only by the client that started it (``pending``). The certificates are
issued for the key the client sent at the start, so a code or state that leaks to someone else
gives them nothing. The user is ``username_claim``'s value (default the
e-mail address, as Teleport names SSO users), refused when a local user has that name; the
user's roles are the connector's ``claims_to_roles`` (none: refused), traits the claims. The
lifetime is the smallest of the request, the connector's ``max_session_ttl`` and the roles'.
Every outcome is audited as ``user.login`` with ``method: oidc`` and the connector; a failure
names its ``reason`` (``limen.auth.sso.errors``); no token, code, state or secret is ever in an
event or a log. The client secret is read at each exchange through ``secrets`` (the
``client_secret_ref`` resolver ``limen.cli.compose`` gives auth: the secrets directory or
``LIMEN_SECRET_*`` variables). Called by the auth API (``limen.auth.http.sso``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from limen.api.oidc_connector import OIDCConnector
from limen.api.resources import Kind
from limen.auth.core import AuthServer, LoginResult
from limen.auth.sso.claims import mapped_roles, traits_of, username_of
from limen.auth.sso.errors import SSOFailure
from limen.auth.sso.id_token import key_id, verify_id_token
from limen.auth.sso.issue import (
    audit_refusal,
    check_web_key,
    issue_sso_login,
    redirect_uri_for,
)
from limen.auth.sso.pending import PendingLogin, PendingLogins, pkce_challenge
from limen.auth.sso.provider import OIDCProviderClient
from limen.ca.keys import load_public_key
from limen.errors import LimenError

__all__ = ["OIDCLogins", "SecretResolver"]

log = logging.getLogger(__name__)

SecretResolver = Callable[[Any], str]
"""Reads the secret a ``*_secret_ref`` names (``limen.trust.secrets.SecretSource.resolve``)."""


class OIDCLogins:
    """Single sign-on logins through the cluster's ``OIDCConnector`` objects."""

    def __init__(self, auth: AuthServer, secrets: SecretResolver | None,
                 provider: OIDCProviderClient | None = None) -> None:
        self.auth = auth
        self.secrets = secrets
        self.provider = provider or OIDCProviderClient()
        self.pending = PendingLogins(auth.backend)

    async def close(self) -> None:
        await self.provider.close()

    async def _connector(self, name: str) -> OIDCConnector:
        found = await self.auth.store.find(Kind.OIDC_CONNECTOR, name)
        if found is None:
            raise SSOFailure("unknown_connector", f"no single sign-on connector {name!r}")
        return OIDCConnector.from_resource(found)

    async def start(self, name: str, *, public_key: str, port: int = 0,
                    ttl_seconds: int | None = None, remote_addr: str = "",
                    web: bool = False) -> dict[str, Any]:
        """The provider's authorization URL for a new login of lmsh (its loopback listener
        at ``port``) or of the web UI (``web``), audited when refused."""
        try:
            load_public_key(public_key)
            connector = await self._connector(name)
            redirect_uri = redirect_uri_for(connector.name, connector.redirect_url,
                                            connector.web_redirect_url, web=web, port=port)
            meta = await self.provider.metadata(connector.issuer_url)
            state, login = await self.pending.begin(
                connector=connector.name, redirect_uri=redirect_uri, public_key=public_key,
                ttl_seconds=ttl_seconds, now=self.auth.clock(), remote_addr=remote_addr,
                web=web)
        except LimenError as err:
            await self._refused(name, err, remote_addr=remote_addr, stage="start")
            raise
        query = urlencode({
            "response_type": "code", "client_id": connector.client_id,
            "redirect_uri": redirect_uri, "scope": " ".join(("openid", *connector.scopes)),
            "state": state, "nonce": login.nonce,
            "code_challenge": pkce_challenge(login.code_verifier),
            "code_challenge_method": "S256",
        })
        separator = "&" if "?" in meta.authorization_endpoint else "?"
        return {"auth_url": f"{meta.authorization_endpoint}{separator}{query}",
                "redirect_uri": redirect_uri, "connector": connector.name,
                "display": connector.display}

    async def finish(self, state: str, *, code: str = "", error: str = "",
                     remote_addr: str = "", web: bool = False,
                     public_key: str = "") -> LoginResult:
        """Certificates for the login ``state`` started, once the provider gave ``code``;
        ``web``: at the proxy's web callback, which holds ``public_key``. Every outcome
        audited."""
        connector_name = ""
        user = ""
        try:
            login = await self.pending.take(state, self.auth.clock(), kind="oidc", web=web)
            connector_name = login.connector
            check_web_key(login, public_key)
            remote_addr = remote_addr or login.remote_addr
            if error or not code:
                raise SSOFailure("provider_error", "the provider did not authorize the login"
                                 + (f" ({error[:64]})" if error.isprintable() and error else ""))
            connector = await self._connector(login.connector)
            claims = await self._verified_claims(connector, login, code)
            user = username_of(claims, connector.username_claim)
            result = await self._issue(connector, login, user, claims)
        except LimenError as err:
            await self._refused(connector_name, err, remote_addr=remote_addr, user=user,
                                stage="finish")
            raise
        ident = result.certs.identity
        await self.auth.emit("user.login", user=user, method="oidc", connector=connector_name,
                             remote_addr=remote_addr, roles=list(ident.roles),
                             ttl_seconds=int(result.certs.ttl.total_seconds()))
        return result

    async def _verified_claims(self, connector: OIDCConnector, login: PendingLogin,
                               code: str) -> Mapping[str, Any]:
        if self.secrets is None:
            raise SSOFailure("no_secret", "this auth server reads no client secrets")
        try:
            secret = self.secrets(connector.client_secret_ref)
        except LimenError as err:
            log.warning("OIDC connector %s: cannot read its client secret: %s",
                        connector.name, err)
            raise SSOFailure("no_secret", f"the client secret of connector {connector.name!r} "
                             "cannot be read (see auth's log)") from None
        meta = await self.provider.metadata(connector.issuer_url)
        tokens = await self.provider.exchange(
            meta, client_id=connector.client_id, client_secret=secret, code=code,
            redirect_uri=login.redirect_uri, code_verifier=login.code_verifier)
        raw = str(tokens["id_token"])
        keys = await self.provider.signing_keys(meta)
        kid = key_id(raw)
        if kid is not None and all(k.key_id != kid for k in keys.keys):
            keys = await self.provider.signing_keys(meta, refresh=True)  # a rotated key
        return verify_id_token(raw, keys, issuer=meta.issuer, client_id=connector.client_id,
                               nonce=login.nonce, now=self.auth.clock())

    async def _issue(self, connector: OIDCConnector, login: PendingLogin, user: str,
                     claims: Mapping[str, Any]) -> LoginResult:
        return await issue_sso_login(
            self.auth, login, connector=connector.name, max_session_ttl=connector.max_session_ttl,
            user=user, roles=mapped_roles(connector.claims_to_roles, claims),
            traits=traits_of(claims),
            unmapped=f"connector {connector.name!r} maps none of your claims to a role")

    async def _refused(self, connector: str, err: LimenError, *, remote_addr: str,
                       stage: str, user: str = "") -> None:
        await audit_refusal(self.auth, "oidc", connector, err, remote_addr=remote_addr,
                            stage=stage, user=user)
