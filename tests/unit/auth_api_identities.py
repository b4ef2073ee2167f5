"""Shared by the identity attack tests at the auth API (``test_db_identities_auth_api``,
``test_kube_identities_auth_api``, ``test_app_identities_auth_api``): a real ``AuthService``
on 127.0.0.1 (mutual TLS, memory backend), credentials of an agent or of alice, and the HTTP
status of each raw HTTPS call made with them.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
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

__all__ = ["alice_credentials", "host_credentials", "running_auth", "statuses"]


@asynccontextmanager
async def running_auth(tmp_path: Path) -> AsyncIterator[AuthService]:
    """An auth service of cluster ``unit`` on 127.0.0.1 for the block."""
    settings = Settings(data_dir=tmp_path / "data", cluster=ClusterSettings(name="unit"),
                        listeners=Listeners(auth="127.0.0.1:0"))
    settings.data_dir.mkdir(mode=0o700)
    service = AuthService(settings, MemoryBackend(), MemoryEmitter())
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def host_credentials(auth: AuthService, host_id: str, role: SystemRole) -> HostCredentials:
    """An agent's credentials of ``role``, issued by ``auth``."""
    key = generate_private_key()
    certs = auth.server.issue_host_certs(host_id, host_id, role,
                                         public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    return HostCredentials(cluster="unit", host_id=host_id, role=role.value,
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())


def alice_credentials(auth: AuthService, **scoped: Any) -> HostCredentials:
    """Alice's login certificate (role ``access``), or with ``scoped`` identity fields (e.g.
    ``usage=("app",), route_to_app="grafana"``) a certificate for one resource."""
    key = generate_private_key()
    tls_ca = auth.server.authorities.get(CertAuthorityType.TLS)
    identity = replace(Identity(username="alice", cluster="unit", roles=("access",)), **scoped)
    cert = sign_client_cert(tls_ca, key.public_key(), identity, timedelta(hours=1))
    return HostCredentials(cluster="unit", host_id="alice", role="user",
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=cert.public_bytes(Encoding.PEM),
                           tls_ca_pem=tls_ca.pem_bundle().encode())


async def statuses(auth: AuthService, caller: HostCredentials,
                   requests: list[tuple[str, str]], post_body: Mapping[str, Any], *,
                   forwarded: HostCredentials | None = None) -> dict[str, int]:
    """The status of each (method, path) called with ``caller``'s certificate (a POST sends
    ``post_body``; and, as the proxy does for a user, ``forwarded``'s certificate in the user
    certificate header)."""
    headers: Mapping[str, str] = {}
    if forwarded is not None:
        der = x509.load_pem_x509_certificate(forwarded.tls_cert_pem).public_bytes(
            Encoding.DER)
        headers = {USER_CERT_HEADER: base64.b64encode(der).decode()}
    connector = aiohttp.TCPConnector(ssl=caller.client_ssl())
    async with aiohttp.ClientSession(connector=connector) as session:
        found = {}
        for method, path in requests:
            body = dict(post_body) if method == "POST" else None
            async with session.request(method, f"https://{auth.address}{path}", json=body,
                                       headers=headers) as response:
                found[path] = response.status
        return found
