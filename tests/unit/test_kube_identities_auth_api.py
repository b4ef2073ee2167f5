"""Attacks: Kubernetes identities reaching beyond Kubernetes at the auth API.

- A compromised kube agent (host certificate of role ``kube``): auth lets it list Resources
  (the kube clusters its selectors serve), read one Role (RBAC on every request) and the
  online kube clusters, nothing else: users, tokens, the list of roles, a user, trusted
  clusters, the nodes and databases online and the audit log answer 403.
- A stolen kube certificate (``usage: [kube]``, scoped to one cluster by ``lmsh kube login``):
  no login for the API, neither presented directly nor forwarded by the proxy for its user,
  so it cannot list nodes or kube clusters, nor mint a certificate for another cluster; the
  user's login certificate can (control).

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


def _alice(auth: AuthService, *, kube: bool) -> HostCredentials:
    if not kube:
        return alice_credentials(auth)
    return alice_credentials(auth, usage=("kube",), route_to_kube="prod",
                             kubernetes_groups=("developers",))


async def _statuses(auth: AuthService, caller: HostCredentials,
                    requests: list[tuple[str, str]], *,
                    forwarded: HostCredentials | None = None) -> dict[str, int]:
    return await statuses(auth, caller, requests, {"kube_cluster": "staging"},
                          forwarded=forwarded)


async def test_a_kube_agent_reads_resources_and_roles_only(auth: AuthService) -> None:
    allowed = ["/v1/resources/resources", "/v1/resources/roles/access", "/v1/presence/kubes"]
    refused = ["/v1/resources/users", "/v1/resources/tokens", "/v1/resources/roles",
               "/v1/resources/users/admin", "/v1/resources/trustedclusters",
               "/v1/presence/nodes", "/v1/presence/dbs", "/v1/events", "/v1/kube/clusters"]
    statuses = await _statuses(auth, _host(auth, "kube-agent-1", SystemRole.KUBE),
                               [("GET", p) for p in allowed + refused])
    assert statuses == {**{p: 200 for p in allowed}, **{p: 403 for p in refused}}


USER_CALLS = [("GET", "/v1/kube/clusters"), ("GET", "/v1/nodes"), ("POST", "/v1/kube/certs")]


async def test_a_kube_certificate_is_no_login_at_the_auth_api(auth: AuthService) -> None:
    kube_cert, login = _alice(auth, kube=True), _alice(auth, kube=False)
    proxy = _host(auth, "proxy-1", SystemRole.PROXY)
    assert await _statuses(auth, kube_cert, USER_CALLS) == {p: 403 for _, p in USER_CALLS}
    assert await _statuses(auth, proxy, USER_CALLS, forwarded=kube_cert) == \
        {p: 403 for _, p in USER_CALLS}
    # control: the login certificate lists (kube certificates are asked through the proxy,
    # which vouches for the key: directly 403; forwarded, staging is not online: 404)
    assert await _statuses(auth, login, USER_CALLS) == {
        "/v1/kube/clusters": 200, "/v1/nodes": 200, "/v1/kube/certs": 403}
    assert await _statuses(auth, proxy, USER_CALLS, forwarded=login) == {
        "/v1/kube/clusters": 200, "/v1/nodes": 200, "/v1/kube/certs": 404}
