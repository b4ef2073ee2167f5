"""Two more clients check the server's Limen role in the TLS handshake
(``limen.ca.peer_role``), not only its CA: every ``AuthClient`` (``HostCredentials.client_ssl``)
wants auth's certificate, and a leaf's proxy asking a root's proxy for its tunnel address
(``LeafLinks._discover``) wants that root's proxy. Against a tiny HTTPS server presenting a
certificate the right CA signed for a node, both refuse before sending anything; with the
expected role's certificate, the same call goes through (the control)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from limen.auth.client import AuthClient
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.peer_role import PeerRoleRefused
from limen.client.webapi import WebApi
from limen.config import ClusterSettings
from limen.errors import AccessDenied, ConnectionProblem, TlsVerificationFailed
from limen.events.emitter import MemoryEmitter
from limen.proxy.trust_leaf_links import LeafLinks
from limen.trust.cache import TrustedRoot

Serve = Callable[[SystemRole], Awaitable[str]]


async def _cluster(name: str) -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name=name), MemoryEmitter())
    await server.start()
    return server


def _credentials(auth: AuthServer, role: SystemRole) -> HostCredentials:
    """Credentials of ``role`` naming 127.0.0.1, signed by ``auth``'s CAs."""
    key = generate_private_key()
    certs = auth.issue_host_certs(f"{role.value}-1", role.value, role,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    return HostCredentials(cluster=auth.cluster_name, host_id=f"{role.value}-1",
                           role=role.value, private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())


@pytest.fixture
async def root() -> AuthServer:
    return await _cluster("root")


@pytest.fixture
async def seen() -> list[str]:
    return []


@pytest.fixture
async def serve(root: AuthServer, seen: list[str]) -> AsyncIterator[Serve]:
    """Start an HTTPS server of the ``root`` cluster presenting a certificate of the given
    role; every request it reads is recorded in ``seen``."""
    runners: list[web.AppRunner] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        answer: dict[str, Any] = {"cluster": root.cluster_name, "tunnel": "127.0.0.1:4024"}
        return web.json_response(answer)

    async def start(role: SystemRole) -> str:
        app = web.Application()
        app.add_routes([web.get("/v1/ping", handler), web.get("/v1/webapi/ping", handler)])
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        context = _credentials(root, role).server_ssl(client_cas=None)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _refused_role(err: ConnectionProblem) -> str:
    assert isinstance(err, TlsVerificationFailed), repr(err)
    assert isinstance(err.certificate_error, PeerRoleRefused), repr(err.certificate_error)
    return str(err.certificate_error)


@pytest.mark.parametrize("blocking", [False, True], ids=["aiohttp", "stdlib-cli"])
async def test_the_auth_client_refuses_a_node_certificate_of_the_cluster_ca(
        root: AuthServer, serve: Serve, seen: list[str], blocking: bool) -> None:
    """Both HTTP clients: aiohttp's (services) and the standard library's (lmctl, lmsh),
    whose blocking TLS sockets get the same check in the handshake."""
    proxy = _credentials(root, SystemRole.PROXY)  # the caller: a proxy of this cluster
    impostor = await serve(SystemRole.NODE)
    async with AuthClient(impostor, proxy, timeout=10.0, blocking=blocking) as client:
        with pytest.raises(ConnectionProblem) as caught:
            await client.ping()
    assert "a node's" in _refused_role(caught.value)
    assert seen == []  # refused in the handshake: no request was written
    genuine = await serve(SystemRole.AUTH)
    async with AuthClient(genuine, proxy, timeout=10.0, blocking=blocking) as client:
        assert (await client.ping())["cluster"] == "root"
    assert seen == ["GET /v1/ping"]


async def test_lmsh_refuses_a_node_certificate_as_the_proxy(
        root: AuthServer, serve: Serve, seen: list[str]) -> None:
    """``lmsh`` (WebApi, with the cluster CA saved at login) will not talk to a node that
    presents its own certificate of the same CA on the proxy's address."""
    impostor = await serve(SystemRole.NODE)
    cas = {"root": root.authorities.get(CertAuthorityType.TLS).pem_bundle().encode()}
    with pytest.raises(AccessDenied, match="is not the cluster's proxy"):
        await WebApi.connect(impostor, known_cas=cas)
    assert seen == []
    genuine = await serve(SystemRole.PROXY)
    api, ping = await WebApi.connect(genuine, known_cas=cas)
    await api.close()
    assert ping["cluster"] == "root"
    assert seen == ["GET /v1/webapi/ping"]


def _trusted(root: AuthServer, proxy_address: str) -> TrustedRoot:
    return TrustedRoot(trusted_cluster="root", root_cluster="root",
                       user_ca=root.authorities.get(CertAuthorityType.USER), role_map=(),
                       host_ca=root.authorities.get(CertAuthorityType.HOST),
                       tls_ca=root.authorities.get(CertAuthorityType.TLS),
                       proxy_address=proxy_address)


async def test_a_leaf_proxy_asks_only_the_roots_proxy_for_its_tunnel(
        root: AuthServer, serve: Serve, seen: list[str]) -> None:
    links = LeafLinks(None, lambda: None, MemoryEmitter())  # type: ignore[arg-type]
    impostor = await serve(SystemRole.NODE)  # a node of the root, by the root's own CA
    with pytest.raises(ConnectionProblem) as caught:
        await links._discover(_trusted(root, impostor))
    assert "not a proxy of root" in _refused_role(caught.value)
    assert seen == []
    genuine = await serve(SystemRole.PROXY)
    assert await links._discover(_trusted(root, genuine)) == "127.0.0.1:4024"
    assert seen == ["GET /v1/webapi/ping"]
