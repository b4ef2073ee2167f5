"""Attack: a user's certificate used on the TLS-routed SSH proxy after it expired (one second
before as the control), a node's certificate, and one of another CA of the same name.

The proxy's :meth:`SSHTLSRoute.identify` is the check behind OpenSSL's (which refuses an
expired or foreign certificate in the handshake first): alice's real login certificate from
the demo cluster's auth, with the route's clock set past its expiry, is refused naming the
expiry. In-process: no TLS, the certificates are the real ones.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import cast

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from limen.api.resources import Kind
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.x509_certs import load_certificate
from limen.config import ClusterSettings
from limen.errors import AccessDenied
from limen.events.emitter import MemoryEmitter
from limen.proxy.routing import ClusterView
from limen.proxy.ssh_tls_route import SSHTLSRoute
from limen.proxy.sshproxy import SSHConnector
from limen.tunnel.server import TunnelServer


def _credentials(auth: AuthServer, host_id: str, role: SystemRole) -> HostCredentials:
    key = generate_private_key()
    certs = auth.issue_host_certs(host_id, host_id, role,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    return HostCredentials(cluster=auth.cluster_name, host_id=host_id, role=role.value,
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())


def _route(auth: AuthServer, at: float) -> SSHTLSRoute:
    # identify() reads neither the tunnel nor the cluster view
    connector = SSHConnector(_credentials(auth, "proxy-1", SystemRole.PROXY),
                             cast(TunnelServer, None), cast(ClusterView, None), MemoryEmitter(),
                             clock=lambda: at)
    return SSHTLSRoute(connector)


async def _alice_der(auth: AuthServer) -> tuple[bytes, float]:
    key = generate_private_key()
    login = await auth.issue_for_user(await auth.store.get(Kind.USER, "alice"),
                                      public_key_to_openssh(key.public_key()),
                                      timedelta(hours=1))
    cert = load_certificate(login.tls_cert)
    return cert.public_bytes(Encoding.DER), cert.not_valid_after_utc.timestamp()


async def test_an_expired_user_certificate_is_refused(auth: AuthServer) -> None:
    der, expiry = await _alice_der(auth)
    assert _route(auth, expiry - 1).identify(der).username == "alice"  # control
    with pytest.raises(AccessDenied, match=re.escape("expired")):
        _route(auth, expiry + 1).identify(der)


async def test_a_node_certificate_is_refused(auth: AuthServer) -> None:
    node = _credentials(auth, "node-1", SystemRole.NODE)
    der = load_certificate(node.tls_cert_pem)
    with pytest.raises(AccessDenied, match="a host or system certificate cannot log in"):
        _route(auth, auth.now().timestamp()).identify(der.public_bytes(Encoding.DER))


async def test_a_certificate_of_another_ca_of_the_same_name_is_refused(auth: AuthServer
                                                                      ) -> None:
    der, _expiry = await _alice_der(auth)
    impostor = AuthServer(MemoryBackend(), ClusterSettings(name=auth.cluster_name),
                          MemoryEmitter())
    await impostor.start()
    with pytest.raises(AccessDenied):
        _route(impostor, auth.now().timestamp()).identify(der)
