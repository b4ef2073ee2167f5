"""Attacks: database identities reaching beyond databases at the auth API.

- A compromised db agent (host certificate of role ``db``): auth lets it list Resources (the
  databases its selectors serve), read one Role (RBAC on every session) and the online
  databases, nothing else: users, tokens, the list of roles, a user, trusted clusters, the
  nodes online and the audit log answer 403.
- A stolen database certificate (``usage: [db]``, scoped to one database by ``lmsh db
  login``): no login for the API, neither presented directly nor forwarded by the proxy for
  its user (what the proxy's web API does), so it cannot list nodes or databases, nor mint a
  certificate for another database; the user's login certificate can (control).

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
from limen.ca.identity import RouteToDatabase, SystemRole


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[AuthService]:
    async with running_auth(tmp_path) as service:
        yield service


def _host(auth: AuthService, host_id: str, role: SystemRole) -> HostCredentials:
    return host_credentials(auth, host_id, role)


def _alice(auth: AuthService, *, database: bool) -> HostCredentials:
    if not database:
        return alice_credentials(auth)
    return alice_credentials(auth, usage=("db",),
                             route_to_db=RouteToDatabase("orders", "alice"))


async def _statuses(auth: AuthService, caller: HostCredentials,
                    requests: list[tuple[str, str]], *,
                    forwarded: HostCredentials | None = None) -> dict[str, int]:
    return await statuses(auth, caller, requests, {"service": "orders", "db_user": "alice"},
                          forwarded=forwarded)


async def test_a_db_agent_reads_resources_and_roles_only(auth: AuthService) -> None:
    allowed = ["/v1/resources/resources", "/v1/resources/roles/access", "/v1/presence/dbs"]
    refused = ["/v1/resources/users", "/v1/resources/tokens", "/v1/resources/roles",
               "/v1/resources/users/admin", "/v1/resources/trustedclusters",
               "/v1/presence/nodes", "/v1/events"]
    statuses = await _statuses(auth, _host(auth, "db-agent-1", SystemRole.DB),
                               [("GET", p) for p in allowed + refused])
    assert statuses == {**{p: 200 for p in allowed}, **{p: 403 for p in refused}}


USER_CALLS = [("GET", "/v1/db/databases"), ("GET", "/v1/nodes"), ("POST", "/v1/db/certs")]


async def test_a_database_certificate_is_no_login_at_the_auth_api(auth: AuthService) -> None:
    db_cert, login = _alice(auth, database=True), _alice(auth, database=False)
    proxy = _host(auth, "proxy-1", SystemRole.PROXY)
    assert await _statuses(auth, db_cert, USER_CALLS) == {p: 403 for _, p in USER_CALLS}
    assert await _statuses(auth, proxy, USER_CALLS, forwarded=db_cert) == \
        {p: 403 for _, p in USER_CALLS}
    # control: the login certificate lists (database certificates are asked through the
    # proxy, which vouches for the key: directly 403; forwarded, orders is not online: 404)
    assert await _statuses(auth, login, USER_CALLS) == {
        "/v1/db/databases": 200, "/v1/nodes": 200, "/v1/db/certs": 403}
    assert await _statuses(auth, proxy, USER_CALLS, forwarded=login) == {
        "/v1/db/databases": 200, "/v1/nodes": 200, "/v1/db/certs": 404}
