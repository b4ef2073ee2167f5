"""Attack: a kube certificate used after it expired.

Alice's real kube certificate (``issue_kube_cert`` of the demo cluster, for ``dev-k8s``
heartbeated by a kube agent), presented once the clock has passed its expiry: the proxy's
:meth:`KubeRouter.identify` refuses it naming the expiry; the kube agent's
:func:`open_session` (which verifies the certificate again) refuses it and audits a failed
``kube.request``; and on a connection opened before the expiry and kept alive, the next
request after it is refused by :meth:`KubeSession.decide`. One second before the expiry all
accept it (control). In-process: no TLS, the certificates are the real ones.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from limen.agents.kube.session import open_session
from limen.api.resources import Kind, Resource
from limen.auth import presence
from limen.auth.core import AuthServer
from limen.auth.kube_access import issue_kube_cert
from limen.ca.authority import CertAuthorityType, tls_trust_map
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.x509_certs import verify_client_cert
from limen.errors import AccessDenied
from limen.events.emitter import MemoryEmitter
from limen.proxy.kube.kube_route import KubeRouter
from limen.proxy.routing import ClusterView
from limen.rbac.kube_request import request_info
from limen.tunnel.kube_wire import KubeConnect
from limen.tunnel.server import TunnelServer

CLUSTER = "dev-k8s"


def _trust(auth: AuthServer) -> dict[str, Any]:
    return tls_trust_map([auth.authorities.get(CertAuthorityType.TLS)])


def _credentials(auth: AuthServer, host_id: str, role: SystemRole) -> HostCredentials:
    key = generate_private_key()
    certs = auth.issue_host_certs(host_id, host_id, role,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    return HostCredentials(cluster=auth.cluster_name, host_id=host_id, role=role.value,
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())


async def _kube_cert(auth: AuthServer) -> tuple[Resource, x509.Certificate]:
    resource = await auth.store.get(Kind.RESOURCE, CLUSTER)
    await presence.heartbeat(auth, resource.to_document(with_status=False), "kube-agent-1",
                             "proxy-1", auth.cluster_name, role="kube")
    key = generate_private_key()
    login = await auth.issue_for_user(await auth.store.get(Kind.USER, "alice"),
                                      public_key_to_openssh(key.public_key()),
                                      timedelta(hours=1))
    identity = verify_client_cert(login.tls_cert, _trust(auth), auth.now())
    pem, _expires = await issue_kube_cert(auth, identity, key.public_key(), CLUSTER)
    return resource, x509.load_pem_x509_certificate(pem)


def _router(auth: AuthServer, now: datetime) -> KubeRouter:
    # identify() reads neither the tunnel nor the cluster view
    return KubeRouter(_credentials(auth, "proxy-1", SystemRole.PROXY),
                      cast(TunnelServer, None), cast(ClusterView, None), MemoryEmitter(),
                      now=lambda: now)


def _expired(expiry: datetime) -> str:
    return re.escape(f"expired at {expiry.isoformat()}")


async def test_the_proxy_refuses_an_expired_kube_certificate(auth: AuthServer) -> None:
    _resource, cert = await _kube_cert(auth)
    der = cert.public_bytes(Encoding.DER)
    expiry = cert.not_valid_after_utc
    identity = _router(auth, expiry - timedelta(seconds=1)).identify(der)
    assert (identity.username, identity.route_to_kube) == ("alice", CLUSTER)
    with pytest.raises(AccessDenied, match=_expired(expiry)):
        _router(auth, expiry + timedelta(seconds=1)).identify(der)


async def test_the_kube_agent_refuses_it_too_and_audits_it(auth: AuthServer) -> None:
    resource, cert = await _kube_cert(auth)
    expiry = cert.not_valid_after_utc
    connect = KubeConnect(CLUSTER, cert.public_bytes(Encoding.PEM).decode(), "192.0.2.7:1",
                          "s-expired")
    emitter = MemoryEmitter()
    clock = [expiry - timedelta(seconds=1)]
    session = await open_session(connect, resource, _trust(auth), auth, emitter,
                                 "kube-agent-1", lambda: clock[0],
                                 cluster_name=auth.cluster_name)
    info = request_info("GET", "/api/v1/namespaces/default/pods")
    who = await session.decide(info)
    assert (who.user, who.groups) == ("alice", ("developers",))
    clock[0] = expiry + timedelta(seconds=1)  # the same kept-alive connection, later
    with pytest.raises(AccessDenied, match=_expired(expiry)):
        await session.decide(info)
    with pytest.raises(AccessDenied, match=_expired(expiry)):
        await open_session(connect, resource, _trust(auth), auth, emitter, "kube-agent-1",
                           lambda: clock[0], cluster_name=auth.cluster_name)
    [event] = [e.to_dict() for e in emitter.events]
    assert (event["event"], event["success"]) == ("kube.request", False)
    assert (event["session_id"], event["kube_cluster"]) == ("s-expired", CLUSTER)
    assert event["cluster"] == auth.cluster_name  # the agent's, even with no user verified
    assert event["reason"] == f"certificate refused: certificate expired at " \
                              f"{expiry.isoformat()}"
