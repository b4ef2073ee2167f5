"""A kube certificate that names no kube cluster (``lmsh kube login --all``) and the path
prefix at the kube agent, on the demo cluster in-process (the certificates are real):

* auth issues it (``any_cluster``: ``usage: kube``, no ``route_to_kube``, no groups),
  audited; refused when the roles admit no online kube cluster (audited), with a kube
  cluster or a leaf named;
* the kube agent's :func:`open_session` accepts it for the cluster the proxy chose, and the
  roles decide there as for any certificate;
* :meth:`KubeSession.routed`: a prefix naming this agent's cluster and the connection's kube
  cluster is removed; one naming another kube cluster or Limen cluster is refused
  (AccessDenied), a malformed one too (BadParameter); a path without one is left alone.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509

from limen.agents.kube.http1 import parse_request_head
from limen.agents.kube.session import KubeSession, open_session
from limen.api.resources import Kind
from limen.auth import presence
from limen.auth.core import AuthServer
from limen.auth.kube_access import issue_kube_cert
from limen.ca.authority import CertAuthorityType, tls_trust_map
from limen.ca.identity import Identity
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.ca.x509_certs import verify_client_cert
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter
from limen.net.kube_path import route_path
from limen.rbac.kube_request import request_info
from limen.tunnel.kube_wire import KubeConnect

CLUSTER = "dev-k8s"


def _trust(auth: AuthServer) -> dict[str, Any]:
    return tls_trust_map([auth.authorities.get(CertAuthorityType.TLS)])


async def _alice(auth: AuthServer) -> tuple[Identity, Any]:
    key = generate_private_key()
    login = await auth.issue_for_user(await auth.store.get(Kind.USER, "alice"),
                                      public_key_to_openssh(key.public_key()),
                                      timedelta(hours=1))
    return verify_client_cert(login.tls_cert, _trust(auth), auth.now()), key


async def _online(auth: AuthServer, name: str = CLUSTER) -> None:
    resource = await auth.store.get(Kind.RESOURCE, name)
    await presence.heartbeat(auth, resource.to_document(with_status=False), "kube-agent-1",
                             "proxy-1", auth.cluster_name, role="kube")


async def _session(auth: AuthServer) -> KubeSession:
    await _online(auth)
    alice, key = await _alice(auth)
    pem, _expires = await issue_kube_cert(auth, alice, key.public_key(), "", any_cluster=True)
    connect = KubeConnect(CLUSTER, pem.decode(), "192.0.2.7:1", "s-any")
    resource = await auth.store.get(Kind.RESOURCE, CLUSTER)
    return await open_session(connect, resource, _trust(auth), auth, MemoryEmitter(),
                              "kube-agent-1", auth.now, cluster_name=auth.cluster_name)


async def test_auth_issues_a_certificate_naming_no_kube_cluster(auth: AuthServer) -> None:
    await _online(auth)
    alice, key = await _alice(auth)
    pem, expires = await issue_kube_cert(auth, alice, key.public_key(), "", any_cluster=True)
    scoped = verify_client_cert(x509.load_pem_x509_certificate(pem), _trust(auth), auth.now())
    assert (scoped.username, scoped.usage, scoped.route_to_kube, scoped.route_to_cluster,
            scoped.kubernetes_groups) == ("alice", ("kube",), None, None, ())
    assert expires <= alice.not_after  # type: ignore[operator]
    [event] = [e for e in auth.emitter.events  # type: ignore[attr-defined]
               if e.type == "cert.create" and e.fields.get("cert_type") == "kube"]
    assert event.fields["kube_clusters"] == "any"


async def test_it_is_refused_when_the_roles_admit_no_online_kube_cluster(
        auth: AuthServer) -> None:
    alice, key = await _alice(auth)  # no kube agent heartbeats dev-k8s
    with pytest.raises(AccessDenied, match="alice may use no online kube cluster"):
        await issue_kube_cert(auth, alice, key.public_key(), "", any_cluster=True)
    [event] = [e for e in auth.emitter.events  # type: ignore[attr-defined]
               if e.type == "access.denied"]
    assert (event.fields["action"], event.fields["kube_clusters"]) == ("kube.login", "any")
    await _online(auth)
    for kube, leaf in ((CLUSTER, ""), ("", "leaf")):
        with pytest.raises(BadParameter, match="is for this cluster's only"):
            await issue_kube_cert(auth, alice, key.public_key(), kube, leaf,
                                  any_cluster=True)


async def test_the_agent_accepts_it_and_the_roles_decide(auth: AuthServer) -> None:
    session = await _session(auth)
    assert session.identity.route_to_kube is None
    who = await session.decide(request_info("GET", "/api/v1/namespaces/default/pods"))
    assert (who.user, who.groups) == ("alice", ("developers",))


async def test_the_agent_removes_a_prefix_naming_it_and_refuses_any_other(
        auth: AuthServer) -> None:
    session = await _session(auth)
    own = route_path(auth.cluster_name, CLUSTER)

    def head(target: str) -> Any:
        return parse_request_head(f"GET {target} HTTP/1.1\r\nHost: k".encode())

    routed = session.routed(head(own + "/api/v1/pods?watch=1"))
    assert (routed.target, routed.path) == ("/api/v1/pods?watch=1", "/api/v1/pods")
    plain = head("/api/v1/pods")
    assert session.routed(plain) is plain
    for other in (route_path(auth.cluster_name, "prod-k8s"), route_path("leaf", CLUSTER)):
        with pytest.raises(AccessDenied, match="open another connection"):
            session.routed(head(other + "/api/v1/pods"))
    with pytest.raises(BadParameter, match="not base64url"):
        session.routed(head("/v1/limen/*/x/api/v1/pods"))
