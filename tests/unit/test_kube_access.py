"""Kubernetes access at auth (``limen.auth.kube_access``), on the demo cluster in-process:
kube agents' heartbeats (``/presence/kubes/<name>/<host_id>``; another agent's role may not
announce a kube cluster), the RBAC-filtered listing with the groups granted there, and the
kube certificate (``usage: kube``, ``route_to_kube``, the granted groups) — refused and
audited for a cluster the roles do not admit.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from limen.api.resources import Kind
from limen.auth import presence
from limen.auth.core import AuthServer
from limen.auth.kube_access import issue_kube_cert, online_kube_clusters, visible_kube_clusters
from limen.ca.authority import CertAuthorityType, tls_trust_map
from limen.ca.identity import Identity
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.ca.x509_certs import load_certificate, verify_client_cert
from limen.errors import AccessDenied, BadParameter, NotFound


def _kube(name: str, env: str) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
            "metadata": {"name": name, "labels": {"env": env}}, "spec": {"kind": "kube"}}


async def _alice(auth: AuthServer) -> tuple[Identity, Any]:
    key = generate_private_key()
    login = await auth.issue_for_user(await auth.store.get(Kind.USER, "alice"),
                                      public_key_to_openssh(key.public_key()),
                                      timedelta(hours=1))
    trust = tls_trust_map([auth.authorities.get(CertAuthorityType.TLS)])
    return verify_client_cert(login.tls_cert, trust, auth.now()), key


async def test_kube_agents_announce_kube_clusters_only(auth: AuthServer) -> None:
    await presence.heartbeat(auth, _kube("dev-k8s", "dev"), "kube-1", "proxy-1", "unit",
                             role="kube")
    await presence.heartbeat(auth, _kube("dev-k8s", "dev"), "kube-2", "proxy-1", "unit",
                             role="kube")
    keys = [k.key for k in await auth.backend.list(presence.KUBE_PRESENCE_PREFIX)]
    assert keys == ["/presence/kubes/dev-k8s/kube-1", "/presence/kubes/dev-k8s/kube-2"]
    assert sorted((await online_kube_clusters(auth))["dev-k8s"].host_ids) == ["kube-1", "kube-2"]
    for role in ("node", "db"):
        with pytest.raises(BadParameter, match=f"a {role} agent's heartbeat"):
            await presence.heartbeat(auth, _kube("x", "dev"), "a-1", "proxy-1", "unit",
                                     role=role)


async def test_listing_and_certificate(auth: AuthServer) -> None:
    for name, env in (("dev-k8s", "dev"), ("prod-k8s", "prod")):
        await presence.heartbeat(auth, _kube(name, env), "kube-1", "proxy-1", "unit",
                                 role="kube")
    alice, key = await _alice(auth)
    listed = visible_kube_clusters(await online_kube_clusters(auth),
                                   await auth.role_set(alice))
    assert [(i["name"], i["kubernetes_groups"]) for i in listed] == \
        [("dev-k8s", ["developers"])]
    pem, expires = await issue_kube_cert(auth, alice, key.public_key(), "dev-k8s")
    cert = load_certificate(pem)
    trust = tls_trust_map([auth.authorities.get(CertAuthorityType.TLS)])
    scoped = verify_client_cert(cert, trust, auth.now())
    assert (scoped.username, scoped.usage, scoped.route_to_kube, scoped.kubernetes_groups) == \
        ("alice", ("kube",), "dev-k8s", ("developers",))
    assert scoped.not_after is not None
    assert scoped.not_after <= alice.not_after
    assert expires <= alice.not_after  # type: ignore[operator]
    assert cert.public_key() == key.public_key()


async def test_a_cluster_the_roles_do_not_admit_is_refused_and_audited(
        auth: AuthServer) -> None:
    await presence.heartbeat(auth, _kube("prod-k8s", "prod"), "kube-1", "proxy-1", "unit",
                             role="kube")
    alice, key = await _alice(auth)
    with pytest.raises(AccessDenied, match="alice may not use kube cluster prod-k8s"):
        await issue_kube_cert(auth, alice, key.public_key(), "prod-k8s")
    [event] = [e for e in auth.emitter.events if e.type == "access.denied"]  # type: ignore[attr-defined]
    assert event.fields["kube_cluster"] == "prod-k8s"
    assert event.fields["rule"] == "allow.kubernetes_labels"
    with pytest.raises(NotFound, match="not online"):
        await issue_kube_cert(auth, alice, key.public_key(), "gone")
