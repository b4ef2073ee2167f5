"""``lmsh proxy ssh``'s TLS client (limen.client.proxyssh_tls) against TLS servers holding the
demo cluster's real certificates: a proxy that does not serve the ALPN ``limen-ssh-proxy`` (an
older proxy) makes :func:`open_route` answer ``None`` so the command falls back to the SSH
subsystem path; a node's certificate served in the proxy's place is refused in the handshake
(the CVE-2021-41393 class: a compromised agent impersonating the proxy); a proxy's refusal is
a :class:`RouteRefused` with its reason; ``OK`` returns the socket and the bytes that followed.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from cryptography import x509

from limen.api.resources import Kind
from limen.auth.core import AuthServer
from limen.ca.authority import CertAuthorityType, tls_trust_map
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.peer_role import require_server_role
from limen.ca.tls import client_context
from limen.client.proxyssh_tls import RouteRefused, open_route
from limen.errors import AccessDenied
from limen.net.ssh_tls_wire import ALPN_SSH, SSHRouteRequest

REQUEST = SSHRouteRequest(login="alice", host="web1", port=3022, cluster="unit")


def _credentials(auth: AuthServer, role: SystemRole) -> HostCredentials:
    key = generate_private_key()
    certs = auth.issue_host_certs(role.value, role.value, role,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    return HostCredentials(cluster=auth.cluster_name, host_id=role.value, role=role.value,
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())


async def _client(auth: AuthServer) -> ssl.SSLContext:
    key = generate_private_key()
    login = await auth.issue_for_user(await auth.store.get(Kind.USER, "alice"),
                                      public_key_to_openssh(key.public_key()),
                                      timedelta(hours=1))
    trusted = tls_trust_map([auth.authorities.get(CertAuthorityType.TLS)])
    cas = [c for certs in trusted.values() for c in certs]
    return require_server_role(client_context(x509.load_pem_x509_certificate(login.tls_cert),
                                              key, cas), SystemRole.PROXY, trusted)


@contextmanager
def _server(creds: HostCredentials, alpn: list[str], answer: bytes) -> Iterator[int]:
    """One TLS connection served in a thread: reads the request line, writes ``answer``."""
    context = creds.server_ssl(client_cas=creds.tls_cas())
    if alpn:
        context.set_alpn_protocols(alpn)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    data = b""
                    while b"\n" not in data:
                        chunk = tls.recv(4096)
                        if not chunk:
                            return
                        data += chunk
                    tls.sendall(answer)
            except (ssl.SSLError, OSError):
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        thread.join(10)
        listener.close()


async def test_a_proxy_without_the_route_means_fall_back(auth: AuthServer) -> None:
    context = await _client(auth)
    with _server(_credentials(auth, SystemRole.PROXY), ["http/1.1"], b"") as port:
        assert open_route("127.0.0.1", port, context, REQUEST) is None


async def test_the_answer_ok_then_the_nodes_bytes(auth: AuthServer) -> None:
    context = await _client(auth)
    with _server(_credentials(auth, SystemRole.PROXY), ["http/1.1", ALPN_SSH],
                 b"OK\nSSH-2.0-node\r\n") as port:
        opened = open_route("127.0.0.1", port, context, REQUEST)
        assert opened is not None
        tls, rest = opened
        with tls:
            while not rest.endswith(b"\r\n"):
                rest += tls.recv(4096)
        assert rest == b"SSH-2.0-node\r\n"


async def test_a_refusal_carries_the_proxys_reason(auth: AuthServer) -> None:
    context = await _client(auth)
    with _server(_credentials(auth, SystemRole.PROXY), [ALPN_SSH],
                 b"ERR unknown node 'web1'\n") as port, \
            pytest.raises(RouteRefused, match=r"^unknown node 'web1'$"):
        open_route("127.0.0.1", port, context, REQUEST)


async def test_a_node_certificate_in_the_proxys_place_is_refused(auth: AuthServer) -> None:
    context = await _client(auth)
    with _server(_credentials(auth, SystemRole.NODE), [ALPN_SSH], b"OK\n") as port, \
            pytest.raises(AccessDenied, match="not trusted: the server is not a proxy"):
        open_route("127.0.0.1", port, context, REQUEST)
