"""The GitHub login at auth: start (GitHub's authorization URL) and finish (certificates).

    lmsh ──start {connector, public_key, port}──▶ proxy ──▶ auth: state + PKCE verifier,
         ◀── authorization URL ─────────────────────────────  stored 5 min (``pending``)
    browser ──▶ GitHub (login, authorize the app) ──redirect──▶ 127.0.0.1:PORT/callback?code&state
    lmsh ──finish {state, code}──▶ proxy ──▶ auth: take the state (once, GitHub kind only),
                                                exchange the code (client secret + PKCE
                                                verifier), GET /user and /user/teams
         ◀── SSH + X.509 certificates for the public key bound to the state ◀──

GitHub's OAuth has no ID token and no nonce: the ``state`` (single use, 5 minutes, bound to the
client's key and redirect) and PKCE S256 carry the login. The user is the GitHub login
(``limen.auth.sso.github_identity``), refused when a local user has that name; the roles are the
connector's ``teams_to_roles`` (none: refused). The access token is used for the two reads of
one login and then dropped: never logged, stored or audited. Every outcome is audited as
``user.login`` with ``method: github`` and the connector (``limen.auth.sso.issue``). Called by
the auth API (``limen.auth.http.sso``).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from limen.api.github_connector import GitHubConnector
from limen.api.resources import Kind
from limen.auth.core import AuthServer, LoginResult
from limen.auth.sso.errors import SSOFailure
from limen.auth.sso.github_api import GitHubClient, GitHubTeam, GitHubUser
from limen.auth.sso.github_identity import github_roles, github_traits, github_username
from limen.auth.sso.issue import (
    audit_refusal,
    check_web_key,
    issue_sso_login,
    redirect_uri_for,
)
from limen.auth.sso.oidc import SecretResolver
from limen.auth.sso.pending import PendingLogin, PendingLogins, pkce_challenge
from limen.ca.keys import load_public_key
from limen.errors import LimenError

__all__ = ["GitHubLogins"]

log = logging.getLogger(__name__)
KIND = "github"


class GitHubLogins:
    """Single sign-on logins through the cluster's ``GitHubConnector`` objects."""

    def __init__(self, auth: AuthServer, secrets: SecretResolver | None,
                 client: GitHubClient | None = None) -> None:
        self.auth = auth
        self.secrets = secrets
        self.client = client or GitHubClient()
        self.pending = PendingLogins(auth.backend)

    async def close(self) -> None:
        await self.client.close()

    async def _connector(self, name: str) -> GitHubConnector:
        found = await self.auth.store.find(Kind.GITHUB_CONNECTOR, name)
        if found is None:
            raise SSOFailure("unknown_connector", f"no GitHub connector {name!r}")
        return GitHubConnector.from_resource(found)

    async def start(self, name: str, *, public_key: str, port: int = 0,
                    ttl_seconds: int | None = None, remote_addr: str = "",
                    web: bool = False) -> dict[str, Any]:
        """GitHub's authorization URL for a new login of lmsh (its loopback listener at
        ``port``) or of the web UI (``web``), audited when refused."""
        try:
            load_public_key(public_key)
            connector = await self._connector(name)
            redirect_uri = redirect_uri_for(connector.name, connector.redirect_url,
                                            connector.web_redirect_url, web=web, port=port)
            state, login = await self.pending.begin(
                connector=connector.name, redirect_uri=redirect_uri, public_key=public_key,
                ttl_seconds=ttl_seconds, now=self.auth.clock(), remote_addr=remote_addr,
                kind=KIND, web=web)
        except LimenError as err:
            await audit_refusal(self.auth, KIND, name, err, remote_addr=remote_addr,
                                stage="start")
            raise
        query = urlencode({
            "client_id": connector.client_id, "redirect_uri": redirect_uri,
            "scope": "read:org", "state": state, "allow_signup": "false",
            "code_challenge": pkce_challenge(login.code_verifier),
            "code_challenge_method": "S256",
        })
        return {"auth_url": f"{connector.endpoint_url}/login/oauth/authorize?{query}",
                "redirect_uri": redirect_uri, "connector": connector.name,
                "display": connector.display}

    async def finish(self, state: str, *, code: str = "", error: str = "",
                     remote_addr: str = "", web: bool = False,
                     public_key: str = "") -> LoginResult:
        """Certificates for the login ``state`` started, once GitHub gave ``code``; ``web``:
        at the proxy's web callback, which holds ``public_key``. Every outcome audited."""
        connector_name = ""
        user = ""
        try:
            login = await self.pending.take(state, self.auth.clock(), kind=KIND, web=web)
            connector_name = login.connector
            check_web_key(login, public_key)
            remote_addr = remote_addr or login.remote_addr
            if error or not code:
                raise SSOFailure("provider_error", "GitHub did not authorize the login"
                                 + (f" ({error[:64]})" if error.isprintable() and error else ""))
            connector = await self._connector(login.connector)
            person, teams = await self._person(connector, login, code)
            user = github_username(person)
            result = await issue_sso_login(
                self.auth, login, connector=connector.name,
                max_session_ttl=connector.max_session_ttl, user=user,
                roles=github_roles(connector.teams_to_roles, teams),
                traits=github_traits(person, teams),
                unmapped=f"connector {connector.name!r} maps none of your GitHub teams to a "
                         "role")
        except LimenError as err:
            await audit_refusal(self.auth, KIND, connector_name, err, remote_addr=remote_addr,
                                stage="finish", user=user)
            raise
        ident = result.certs.identity
        await self.auth.emit("user.login", user=user, method=KIND, connector=connector_name,
                             remote_addr=remote_addr, roles=list(ident.roles),
                             ttl_seconds=int(result.certs.ttl.total_seconds()))
        return result

    async def _person(self, connector: GitHubConnector, login: PendingLogin,
                      code: str) -> tuple[GitHubUser, list[GitHubTeam]]:
        if self.secrets is None:
            raise SSOFailure("no_secret", "this auth server reads no client secrets")
        try:
            secret = self.secrets(connector.client_secret_ref)
        except LimenError as err:
            log.warning("GitHub connector %s: cannot read its client secret: %s",
                        connector.name, err)
            raise SSOFailure("no_secret", f"the client secret of connector {connector.name!r} "
                             "cannot be read (see auth's log)") from None
        token = await self.client.exchange(
            connector.endpoint_url, client_id=connector.client_id, client_secret=secret,
            code=code, redirect_uri=login.redirect_uri, code_verifier=login.code_verifier)
        person = await self.client.user(connector.api_endpoint_url, token)
        teams = await self.client.teams(connector.api_endpoint_url, token)
        return person, teams
