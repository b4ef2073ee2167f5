"""Attacks: application identities reaching beyond their app at the auth API.

- A compromised app agent (host certificate of role ``app``): auth lets it list Resources (the
  apps its selectors serve), read one Role (RBAC on every connection) and the online apps,
  nothing else: users, tokens, the list of roles, trusted clusters, the nodes online, the audit
  log, the JWT signing and the JWKS (the proxy's) answer 403.
- A stolen app certificate (``usage: [app]``, scoped to one app by ``lmsh apps login``): no
  login for the API, neither presented directly nor forwarded by the proxy, so it cannot list
  apps nor mint a certificate for another app; the user's login certificate can (control).
- The JWT endpoint is the proxy's: a user's login certificate cannot ask for a token.

A real ``AuthService`` on 127.0.0.1 (mutual TLS, memory backend); the statuses are read from
raw HTTPS requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from auth_api_identities import alice_credentials, host_credentials, running_auth, statuses

from limen.auth.auth_service import AuthService
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[AuthService]:
    async with running_auth(tmp_path) as service:
        yield service


def _host(auth: AuthService, host_id: str, role: SystemRole) -> HostCredentials:
    return host_credentials(auth, host_id, role)


def _alice(auth: AuthService, *, app: bool) -> HostCredentials:
    if not app:
        return alice_credentials(auth)
    return alice_credentials(auth, usage=("app",), route_to_app="grafana")


async def _statuses(auth: AuthService, caller: HostCredentials,
                    requests: list[tuple[str, str]], *,
                    forwarded: HostCredentials | None = None) -> dict[str, int]:
    return await statuses(auth, caller, requests, {"app": "staging", "user_cert": "x"},
                          forwarded=forwarded)


async def test_an_app_agent_reads_resources_and_roles_only(auth: AuthService) -> None:
    allowed = [("GET", "/v1/resources/resources"), ("GET", "/v1/resources/roles/access"),
               ("GET", "/v1/presence/apps")]
    refused = [("GET", p) for p in (
        "/v1/resources/users", "/v1/resources/tokens", "/v1/resources/roles",
        "/v1/resources/users/admin", "/v1/resources/trustedclusters", "/v1/presence/nodes",
        "/v1/presence/kubes", "/v1/events", "/v1/apps", "/v1/apps/jwks")] + \
        [("POST", "/v1/apps/jwt")]
    statuses = await _statuses(auth, _host(auth, "app-agent-1", SystemRole.APP),
                               allowed + refused)
    assert statuses == {**{p: 200 for _, p in allowed}, **{p: 403 for _, p in refused}}


USER_CALLS = [("GET", "/v1/apps"), ("GET", "/v1/nodes"), ("POST", "/v1/apps/certs")]


async def test_an_app_certificate_is_no_login_at_the_auth_api(auth: AuthService) -> None:
    app_cert, login = _alice(auth, app=True), _alice(auth, app=False)
    proxy = _host(auth, "proxy-1", SystemRole.PROXY)
    assert await _statuses(auth, app_cert, USER_CALLS) == {p: 403 for _, p in USER_CALLS}
    assert await _statuses(auth, proxy, USER_CALLS, forwarded=app_cert) == \
        {p: 403 for _, p in USER_CALLS}
    # control: the login certificate lists (app certificates are asked through the proxy,
    # which vouches for the key: directly 403; forwarded, staging is not online: 404)
    assert await _statuses(auth, login, USER_CALLS) == {
        "/v1/apps": 200, "/v1/nodes": 200, "/v1/apps/certs": 403}
    assert await _statuses(auth, proxy, USER_CALLS, forwarded=login) == {
        "/v1/apps": 200, "/v1/nodes": 200, "/v1/apps/certs": 404}
    # the identity token is the proxy's to ask for
    assert await _statuses(auth, login, [("POST", "/v1/apps/jwt")]) == {"/v1/apps/jwt": 403}
    assert await _statuses(auth, proxy, [("GET", "/v1/apps/jwks")]) == {"/v1/apps/jwks": 200}
