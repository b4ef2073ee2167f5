"""``/v1/join``'s rules in-process (AuthServer on the memory backend): auth decides the names in
host certificates, a registered host id needs its host's current certificate, tokens are single
use unless made reusable; and the TLS client side's check of the server's Limen role
(``limen.ca.peer_role``) against a tiny HTTPS server. The same attacks against real processes
are in ``tests/security/test_join_*.py``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509

from limen.auth import host_join
from limen.auth.core import AuthServer, HostCerts
from limen.auth.host_proof import make_proof
from limen.auth.host_registry import claim_host_id, register_local_host
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import (
    PrivateKey,
    generate_private_key,
    private_key_to_pem,
    public_key_to_openssh,
)
from limen.ca.peer_role import PeerRoleRefused, require_server_role
from limen.ca.tls import client_context
from limen.config import ClusterSettings
from limen.errors import AccessDenied, ConnectionProblem
from limen.events.emitter import MemoryEmitter
from limen.net.http import ApiClient

WANTED = ["proxy.example.com", "127.0.0.1", "10.66.66.66", "localhost"]


@pytest.fixture
async def auth() -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), MemoryEmitter())
    await server.start()
    server.proxy_names = ("localhost", "127.0.0.1", "proxy.example.com")
    return server


def _joins(auth: AuthServer) -> list[dict[str, Any]]:
    assert isinstance(auth.emitter, MemoryEmitter)
    return [e.to_dict() for e in auth.emitter.events if e.type == "join"]


async def _token(auth: AuthServer, kind: str = "node") -> str:
    secret, _ = await auth.create_token(kind, timedelta(minutes=5), actor="t")
    return secret


def _sans(certs: HostCerts) -> set[str]:
    cert = x509.load_pem_x509_certificate(certs.tls_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n) for n in sans.get_values_for_type(x509.DNSName)} | \
        {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


class Host:
    """A joining host: its key, and its credentials once joined."""

    def __init__(self) -> None:
        self.key: PrivateKey = generate_private_key()
        self.creds: HostCredentials | None = None

    @property
    def public_key(self) -> str:
        return public_key_to_openssh(self.key.public_key())

    async def join(self, auth: AuthServer, token: str, host_id: str = "", *,
                   hostname: str = "box", proof_from: HostCredentials | None = None,
                   role: str = "node") -> HostCerts:
        self.key = generate_private_key()
        proof = (make_proof(proof_from, SystemRole(role), self.public_key, datetime.now(UTC))
                 if proof_from else None)
        certs = await auth.join(token, role, host_id, hostname, self.public_key, WANTED,
                                proof=proof)
        self.creds = HostCredentials(
            cluster=auth.cluster_name, host_id=certs.identity.host_id or "", role=role,
            hostname=hostname, private_key_pem=private_key_to_pem(self.key).encode(),
            tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode(),
            ssh_cert=certs.ssh_cert)
        return certs


# ---------------------------------------------------------------------- names


async def test_a_node_gets_none_of_the_names_it_asks_for(auth: AuthServer) -> None:
    certs = await Host().join(auth, await _token(auth), hostname="evil")
    host_id = certs.identity.host_id
    assert host_id
    assert uuid.UUID(host_id)
    assert _sans(certs) == {host_id, "evil.unit"}
    principals = certs.ssh_cert.decode()
    assert not any(name in principals for name in ("proxy.example.com", "10.66.66.66"))
    [event] = _joins(auth)
    assert event["ignored_addresses"] == WANTED
    assert event["dns_names"] == [host_id, "evil.unit"]


async def test_a_proxy_gets_the_configured_public_names_only(auth: AuthServer) -> None:
    auth.static_proxy_token = "p" * 40
    certs = await Host().join(auth, "p" * 40, role="proxy", hostname="edge")
    assert _sans(certs) == {certs.identity.host_id, "edge.unit", "localhost", "127.0.0.1",
                            "proxy.example.com"}
    assert certs.identity.system_role is SystemRole.PROXY


@pytest.mark.parametrize("hostname", ["proxy.example.com", "10.66.66.66", "localhost", ""])
async def test_a_hostname_that_is_not_one_label_is_refused(auth: AuthServer,
                                                           hostname: str) -> None:
    with pytest.raises(AccessDenied, match=r"join refused: (invalid hostname|hostname)"):
        await auth.join(await _token(auth), "node", "", hostname, Host().public_key, [])


async def test_a_node_named_like_the_proxy_is_refused(auth: AuthServer) -> None:
    auth.proxy_names = (*auth.proxy_names, "proxy.unit", "edge")
    for hostname in ("proxy", "Edge"):
        with pytest.raises(AccessDenied, match="would name the proxy"):
            await Host().join(auth, await _token(auth), hostname=hostname)
    assert [e["success"] for e in _joins(auth)] == [False, False]


# ---------------------------------------------------------------------- host ids


async def test_a_registered_host_id_needs_its_current_certificate(auth: AuthServer) -> None:
    victim = Host()
    host_id = str(uuid.uuid4())
    await victim.join(auth, await _token(auth), host_id, hostname="web1")
    with pytest.raises(AccessDenied, match=f"host id {host_id} is already registered"):
        await Host().join(auth, await _token(auth), host_id, hostname="web1")
    impostor = Host()
    await impostor.join(auth, await _token(auth), hostname="other")
    assert impostor.creds is not None
    forged = HostCredentials(**{**impostor.creds.__dict__, "host_id": host_id})
    with pytest.raises(AccessDenied, match="not the node"):
        await Host().join(auth, await _token(auth), host_id, proof_from=forged)
    failures = [e for e in _joins(auth) if not e["success"]]
    assert [e["host_id"] for e in failures] == [host_id, host_id]
    assert all(e["token_id"] for e in failures)


async def test_the_host_itself_joins_again_with_its_current_certificate(
        auth: AuthServer) -> None:
    host = Host()
    first = await host.join(auth, await _token(auth), str(uuid.uuid4()))
    old = host.creds
    again = await host.join(auth, await _token(auth), first.identity.host_id or "",
                            proof_from=old)
    assert again.identity.host_id == first.identity.host_id
    assert _joins(auth)[-1]["rejoined"] is True
    with pytest.raises(AccessDenied, match="not the current one"):  # the replaced certificate
        await Host().join(auth, await _token(auth), first.identity.host_id or "",
                          proof_from=old)


async def test_the_auth_process_host_id_is_reserved(auth: AuthServer) -> None:
    local = str(uuid.uuid4())
    await register_local_host(auth.backend, local)
    with pytest.raises(AccessDenied, match="already registered"):
        await Host().join(auth, await _token(auth), local)


@pytest.mark.parametrize("host_id", ["h1", "../x", "127.0.0.1",
                                     "71D09766-D8F3-495A-8477-BB6FAE595C89"])
async def test_a_proposed_host_id_is_a_uuid(auth: AuthServer, host_id: str) -> None:
    with pytest.raises(AccessDenied, match="a UUID is expected"):
        await Host().join(auth, await _token(auth), host_id)


# ---------------------------------------------------------------------- tokens


async def test_one_token_two_concurrent_joins_one_success(
        auth: AuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both joins check the token before either uses it (held at the host id step): the one
    backend transaction lets only the first through."""
    token = await _token(auth)
    arrived: list[None] = []
    both = asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:
        arrived.append(None)
        if len(arrived) == 2:
            both.set()
        await both.wait()
        return await claim_host_id(*args, **kwargs)

    monkeypatch.setattr(host_join, "claim_host_id", held)
    results = await asyncio.gather(*(Host().join(auth, token) for _ in range(2)),
                                   return_exceptions=True)
    refused = [r for r in results if isinstance(r, AccessDenied)]
    assert len(refused) == 1
    assert "join token was already used" in str(refused[0])
    assert sorted(e["success"] for e in _joins(auth)) == [False, True]


async def test_a_refused_join_leaves_the_token_unused(auth: AuthServer) -> None:
    token = await _token(auth)
    with pytest.raises(AccessDenied):
        await Host().join(auth, token, "not-a-uuid")
    await Host().join(auth, token)


# ---------------------------------------------------------------------- the client's check


@pytest.fixture
async def tls_server(auth: AuthServer) -> AsyncIterator[tuple[str, list[bytes]]]:
    """An HTTPS server presenting a node's certificate of the cluster CA that names
    127.0.0.1 (issued the way only auth's own process may), recording what it reads."""
    key = generate_private_key()
    certs = auth.issue_host_certs("h", "h", SystemRole.NODE,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    creds = HostCredentials(cluster="unit", host_id="h", role="node",
                            private_key_pem=private_key_to_pem(key).encode(),
                            tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())
    seen: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response({})

    app = web.Application()
    app.add_routes([web.post("/login", handler)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0,
                       ssl_context=creds.server_ssl(client_cas=None, require_client_cert=False))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_a_client_refuses_a_node_certificate_before_sending(
        auth: AuthServer, tls_server: tuple[str, list[bytes]]) -> None:
    address, seen = tls_server
    cas = list(auth.authorities.get(CertAuthorityType.TLS).trusted_certificates())
    plain = client_context(None, None, cas)
    async with ApiClient(f"https://{address}", plain) as api:
        await api.call("POST", "/login", {"password": "first"})  # the CA alone: accepted
    checked = require_server_role(client_context(None, None, cas), SystemRole.PROXY,
                                  {"unit": cas})
    with pytest.raises(ConnectionProblem) as caught:
        async with ApiClient(f"https://{address}", checked) as api:
            await api.call("POST", "/login", {"password": "second"})
    cause = getattr(caught.value.__cause__, "certificate_error", None)
    assert isinstance(cause, PeerRoleRefused)
    assert "a node's" in str(cause)
    assert seen == [b'{"password": "first"}']
