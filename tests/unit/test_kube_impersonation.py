"""Whom the kube agent tells the API server to act as (``KubeSession.decide``): the Limen
user with the granted ``kubernetes_groups``; the one granted ``kubernetes_users`` value
instead of the name; several values refused (the client cannot choose); no group or user
granted refused; roles re-read for every request (a role changed on a kept-alive connection
applies to its next request). In-process with real certificates and compiled roles."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from limen.agents.kube.session import open_session
from limen.api.resources import Kind, Resource
from limen.auth import presence
from limen.auth.core import AuthServer
from limen.auth.kube_access import issue_kube_cert
from limen.ca.authority import CertAuthorityType, tls_trust_map
from limen.ca.identity import Identity
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.ca.x509_certs import load_certificate, verify_client_cert
from limen.errors import AccessDenied
from limen.events.emitter import MemoryEmitter
from limen.rbac import RoleSet
from limen.rbac.kube_request import request_info
from limen.tunnel.kube_wire import KubeConnect

LIST = request_info("GET", "/api/v1/namespaces/default/pods")


class Roles:
    """The roles the agent reads, changeable between requests."""

    def __init__(self, *specs: dict[str, Any]) -> None:
        self.specs = list(specs)

    async def role_set(self, identity: Identity) -> RoleSet:
        roles = [Resource.from_document({"apiVersion": "limen.dev/v1alpha1", "kind": "Role",
                                         "metadata": {"name": f"r{i}"}, "spec": spec})
                 for i, spec in enumerate(self.specs)]
        return RoleSet.from_roles(roles, identity.traits)


async def _session(auth: AuthServer, roles: Roles) -> Any:
    resource = await auth.store.get(Kind.RESOURCE, "dev-k8s")
    await presence.heartbeat(auth, resource.to_document(with_status=False), "kube-1",
                             "proxy-1", auth.cluster_name, role="kube")
    key = generate_private_key()
    login = await auth.issue_for_user(await auth.store.get(Kind.USER, "alice"),
                                      public_key_to_openssh(key.public_key()),
                                      timedelta(hours=1))
    trust = tls_trust_map([auth.authorities.get(CertAuthorityType.TLS)])
    identity = verify_client_cert(login.tls_cert, trust, auth.now())
    pem, _ = await issue_kube_cert(auth, identity, key.public_key(), "dev-k8s")
    cert = load_certificate(pem).public_bytes(Encoding.PEM).decode()
    return await open_session(KubeConnect("dev-k8s", cert), resource, trust, roles,
                              MemoryEmitter(), "kube-1", auth.now,
                              cluster_name=auth.cluster_name)


def _allow(**fields: Any) -> dict[str, Any]:
    return {"allow": {"kubernetes_labels": {"env": "dev"}, **fields}}


async def test_the_user_and_granted_groups(auth: AuthServer) -> None:
    session = await _session(auth, Roles(_allow(kubernetes_groups=["developers", "viewers"])))
    who = await session.decide(LIST)
    assert (who.user, who.groups) == ("alice", ("developers", "viewers"))


async def test_one_kubernetes_user_replaces_the_name_several_are_refused(
        auth: AuthServer) -> None:
    roles = Roles(_allow(kubernetes_users=["svc-alice"]))
    session = await _session(auth, roles)
    assert (await session.decide(LIST)).user == "svc-alice"
    roles.specs.append(_allow(kubernetes_users=["root"]))
    with pytest.raises(AccessDenied, match="several kubernetes_users"):
        await session.decide(LIST)


async def test_nothing_granted_or_a_role_changed_on_the_connection(auth: AuthServer) -> None:
    roles = Roles(_allow(kubernetes_groups=["developers"]))
    session = await _session(auth, roles)
    assert (await session.decide(LIST)).groups == ("developers",)
    roles.specs = [_allow()]  # the same connection, the next request
    with pytest.raises(AccessDenied, match="grant no kubernetes groups or users"):
        await session.decide(LIST)
    roles.specs = [_allow(kubernetes_groups=["developers"]),
                   {"deny": {"kubernetes_labels": {"env": "dev"}}}]
    with pytest.raises(AccessDenied, match="denies clusters labelled"):
        await session.decide(LIST)
