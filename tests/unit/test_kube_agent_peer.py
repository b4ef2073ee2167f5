"""Attack: a data connection to the kube agent from something that is not a proxy.

A compromised node (its host certificate, of the cluster's CA) or a user (her own kube
certificate) that reaches a kube agent's dial handler speaks TLS to it and sends a
well-formed connection request carrying alice's real kube certificate, then an HTTP request.
The agent completes the handshake (the CA is right) but checks the peer's Limen identity
before reading a byte: it is not the proxy's, so the connection is closed with nothing
answered and nothing reaches the API server. The same from the proxy's certificate (control)
is served: the list comes back from the API server (the Kubernetes API emulator).

In-process: the demo cluster's auth signs every certificate; a connected socket pair stands
for the tunnel's data connection (``KubeService._serve`` is the handler the tunnel agent hands
each dial to).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from datetime import timedelta

import pytest

from k8s_emulator.fixtures import KubeAPI
from limen.agents.kube.catalog import KubeCatalog, static_clusters
from limen.agents.kube.kube_service import KubeService
from limen.agents.kube.upstream import Upstreams
from limen.api.resources import Kind
from limen.auth import presence
from limen.auth.core import AuthServer
from limen.auth.kube_access import issue_kube_cert
from limen.ca.authority import CertAuthorityType, tls_trust_map
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.x509_certs import verify_client_cert
from limen.events.emitter import MemoryEmitter
from limen.tunnel.kube_wire import KubeConnect, encode_connect
from limen.tunnel.protocol import KIND_KUBE, MODE_TLS, DialRequest

TIMEOUT = 10.0
REQUEST = b"GET /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: k\r\n\r\n"


def _credentials(auth: AuthServer, host_id: str, role: SystemRole) -> HostCredentials:
    key = generate_private_key()
    certs = auth.issue_host_certs(host_id, host_id, role,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    return HostCredentials(cluster=auth.cluster_name, host_id=host_id, role=role.value,
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())


async def _alice(auth: AuthServer) -> HostCredentials:
    """Alice's kube certificate for dev-k8s (lmsh kube login) with its key."""
    resource = await auth.store.get(Kind.RESOURCE, "dev-k8s")
    await presence.heartbeat(auth, resource.to_document(with_status=False), "kube-1",
                             "proxy-1", auth.cluster_name, role="kube")
    key = generate_private_key()
    login = await auth.issue_for_user(await auth.store.get(Kind.USER, "alice"),
                                      public_key_to_openssh(key.public_key()),
                                      timedelta(hours=1))
    tls_ca = auth.authorities.get(CertAuthorityType.TLS)
    identity = verify_client_cert(login.tls_cert, tls_trust_map([tls_ca]), auth.now())
    cert, _ = await issue_kube_cert(auth, identity, key.public_key(), "dev-k8s")
    return HostCredentials(cluster=auth.cluster_name, host_id="alice", role="user",
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=cert, tls_ca_pem=tls_ca.pem_bundle().encode())


async def _dial(service: KubeService, peer: HostCredentials, alice: HostCredentials) -> bytes:
    """What the agent answers ``peer`` dialling it with alice's certificate and a request."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    served = asyncio.create_task(service._serve(theirs, DialRequest(
        kind=KIND_KUBE, target="dev-k8s", mode=MODE_TLS)))
    context = peer.client_ssl(check_hostname=False, server_role=SystemRole.KUBE)
    reader, writer = await asyncio.open_connection(sock=ours, ssl=context,
                                                   server_hostname="kube")
    try:
        writer.write(encode_connect(KubeConnect("dev-k8s", alice.tls_cert_pem.decode(),
                                                "192.0.2.7:1", "s-peer")) + REQUEST)
        await writer.drain()
        async with asyncio.timeout(TIMEOUT):
            answer = await reader.read(65536)
    except (ssl.SSLError, ConnectionResetError):
        answer = b""
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    await asyncio.wait_for(served, TIMEOUT)
    return answer


@pytest.mark.parametrize("peer", ["node", "alice"])
async def test_a_peer_that_is_not_the_proxy_gets_nothing(auth: AuthServer, kube_api: KubeAPI,
                                                          peer: str) -> None:
    static, paths = static_clusters([{"name": "dev-k8s", "labels": {"env": "dev"},
                                      "kubeconfig": str(kube_api.kubeconfig_path)}])
    emitter = MemoryEmitter()
    service = KubeService(_credentials(auth, "kube-1", SystemRole.KUBE),
                          KubeCatalog(static, [], None), Upstreams(kube_api.workdir, paths),
                          auth, emitter, lambda: "127.0.0.1:1")
    alice = await _alice(auth)
    dialler = alice if peer == "alice" else _credentials(auth, "node-1", SystemRole.NODE)
    before = len(kube_api.audit_events())
    try:
        assert await _dial(service, dialler, alice) == b""
        assert kube_api.audit_events()[before:] == []
        assert [e for e in emitter.events if e.type == "kube.request"] == []
        # control: the proxy's certificate is served
        proxy = _credentials(auth, "proxy-1", SystemRole.PROXY)
        answer = await _dial(service, proxy, alice)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    finally:
        await service.stop()
