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
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from limen.api.resources import Kind
from limen.auth.core import AuthServer
from limen.ca.authority import CertAuthorityType, tls_trust_map
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import (
    generate_private_key,
    private_key_to_openssh,
    private_key_to_pem,
    public_key_to_openssh,
)
from limen.ca.peer_role import require_server_role
from limen.ca.tls import client_context
from limen.client.proxyssh_fast_tls import (
    Unsupported,
    check_proxy_cert,
    ed25519_pkcs8_pem,
    fast_context,
)
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


# ---------------------------------------------------------------- without cryptography


def _fast(auth: AuthServer, tmp_path: Path, key: Any, tls_cert: bytes) -> ssl.SSLContext:
    (tmp_path / "ca.pem").write_text(_ca_pem(auth))
    return fast_context(tls_cert, private_key_to_openssh(key).encode(),
                        str(tmp_path / "ca.pem"))


def _ca_pem(auth: AuthServer) -> str:
    trusted = tls_trust_map([auth.authorities.get(CertAuthorityType.TLS)])
    return "".join(c.public_bytes(Encoding.PEM).decode() for cs in trusted.values() for c in cs)


async def _alice(auth: AuthServer) -> tuple[Any, bytes]:
    key = generate_private_key()
    login = await auth.issue_for_user(await auth.store.get(Kind.USER, "alice"),
                                      public_key_to_openssh(key.public_key()),
                                      timedelta(hours=1))
    return key, login.tls_cert


def test_the_openssh_ed25519_key_becomes_the_same_pkcs8_key() -> None:
    key = generate_private_key()
    pem = ed25519_pkcs8_pem(private_key_to_openssh(key).encode())
    again = load_pem_private_key(pem, password=None)
    assert again.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == \
        key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    with pytest.raises(Unsupported, match="key type"):
        ed25519_pkcs8_pem(private_key_to_openssh(generate_private_key("ecdsa-p256")).encode())


async def test_the_fast_context_reaches_the_proxy(auth: AuthServer, tmp_path: Path) -> None:
    context = _fast(auth, tmp_path, *(await _alice(auth)))
    with _server(_credentials(auth, SystemRole.PROXY), [ALPN_SSH], b"OK\n") as port:
        opened = open_route("127.0.0.1", port, context, REQUEST,
                            check=lambda der: check_proxy_cert(der, "unit"))
        assert opened is not None
        opened[0].close()


async def test_the_fast_check_refuses_a_node_in_the_proxys_place(auth: AuthServer,
                                                                 tmp_path: Path) -> None:
    context = _fast(auth, tmp_path, *(await _alice(auth)))
    with _server(_credentials(auth, SystemRole.NODE), [ALPN_SSH], b"OK\n") as port, \
            pytest.raises(AccessDenied, match="not trusted: the server is not a proxy of "
                                              "unit: the certificate is a node's"):
        open_route("127.0.0.1", port, context, REQUEST,
                   check=lambda der: check_proxy_cert(der, "unit"))


async def test_the_fast_check_refuses_a_proxy_of_another_cluster_name(auth: AuthServer) -> None:
    proxy = _credentials(auth, SystemRole.PROXY)
    der = x509.load_pem_x509_certificate(proxy.tls_cert_pem).public_bytes(Encoding.DER)
    check_proxy_cert(der, "unit")
    with pytest.raises(AccessDenied, match="not a proxy of other"):
        check_proxy_cert(der, "other")


def test_the_route_request_is_an_immutable_value_that_survives_the_wire() -> None:
    request = SSHRouteRequest(login="alice", host="web1", port=3022, cluster="unit",
                              ssh_cert="ssh-ed25519-cert-v01@openssh.com AAAA")
    line = request.encode()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    again = SSHRouteRequest.parse(line[:-1])
    assert again == request
    assert hash(again) == hash(request)
    assert again != REQUEST
    with pytest.raises(AttributeError, match="immutable"):
        request.host = "db1"
    assert "AAAA" not in repr(request)
