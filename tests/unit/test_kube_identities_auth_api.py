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

import base64
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from limen.auth.auth_service import AuthService
from limen.auth.client import USER_CERT_HEADER
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.x509_certs import sign_client_cert
from limen.config import ClusterSettings, Listeners, Settings
from limen.events.emitter import MemoryEmitter


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[AuthService]:
    settings = Settings(data_dir=tmp_path / "data", cluster=ClusterSettings(name="unit"),
                        listeners=Listeners(auth="127.0.0.1:0"))
    settings.data_dir.mkdir(mode=0o700)
    service = AuthService(settings, MemoryBackend(), MemoryEmitter())
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def _host(auth: AuthService, host_id: str, role: SystemRole) -> HostCredentials:
    key = generate_private_key()
    certs = auth.server.issue_host_certs(host_id, host_id, role,
                                         public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    return HostCredentials(cluster="unit", host_id=host_id, role=role.value,
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())


def _alice(auth: AuthService, *, kube: bool) -> HostCredentials:
    """Alice's login certificate, or (``kube``) her certificate for kube cluster prod."""
    key = generate_private_key()
    tls_ca = auth.server.authorities.get(CertAuthorityType.TLS)
    identity = Identity(username="alice", cluster="unit", roles=("access",))
    if kube:
        identity = replace(identity, usage=("kube",), route_to_kube="prod",
                           kubernetes_groups=("developers",))
    cert = sign_client_cert(tls_ca, key.public_key(), identity, timedelta(hours=1))
    return HostCredentials(cluster="unit", host_id="alice", role="user",
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=cert.public_bytes(Encoding.PEM),
                           tls_ca_pem=tls_ca.pem_bundle().encode())


async def _statuses(auth: AuthService, caller: HostCredentials,
                    requests: list[tuple[str, str]], *,
                    forwarded: HostCredentials | None = None) -> dict[str, int]:
    headers: Mapping[str, str] = {}
    if forwarded is not None:
        der = x509.load_pem_x509_certificate(forwarded.tls_cert_pem).public_bytes(
            Encoding.DER)
        headers = {USER_CERT_HEADER: base64.b64encode(der).decode()}
    connector = aiohttp.TCPConnector(ssl=caller.client_ssl())
    async with aiohttp.ClientSession(connector=connector) as session:
        statuses = {}
        for method, path in requests:
            body: Any = {"kube_cluster": "staging"} if method == "POST" else None
            async with session.request(method, f"https://{auth.address}{path}", json=body,
                                       headers=headers) as response:
                statuses[path] = response.status
        return statuses


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
