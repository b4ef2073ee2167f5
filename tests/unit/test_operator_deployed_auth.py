"""Where an operator with no auth address configured pushes the Limen kinds: the auth of the
Cluster it deployed, at ``<name>-auth.<namespace>.svc:3025`` (whatever the Cluster's name),
with an admin identity signed by that Cluster's TLS CA (``limen.operator.deployed_auth``).
The call itself, against a deployed auth pod: tests/integration/test_operator_pods_run.py."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest
from cryptography import x509

from k8s_emulator.fixtures import KubeAPI
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import SystemRole
from limen.ca.x509_certs import verify_client_cert
from limen.errors import ConnectionProblem
from limen.operator.cluster import ClusterReconciler
from limen.operator.context import OperatorContext
from limen.operator.deployed_auth import DeployedCluster, DeployedClusters
from limen.operator.kube import KubeApi
from limen.operator.main import build_context
from limen.operator.settings import OperatorConfig

LOG = logging.getLogger("test")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def deployed(name: str, ca: CertAuthority | None = None) -> DeployedCluster:
    namespace, short = name.split("/")
    return DeployedCluster(name, f"{short}-auth.{namespace}.svc:3025",
                           ca or CertAuthority.generate(short, CertAuthorityType.TLS, now=T0))


def test_no_cluster_no_auth() -> None:
    with pytest.raises(ConnectionProblem, match="deployed no Cluster yet"):
        DeployedClusters().endpoint()


def test_the_one_cluster_and_an_identity_its_tls_ca_signed() -> None:
    clusters, cluster = DeployedClusters(Clock()), deployed("team-a/edge")
    clusters.record("uid-1", cluster)
    endpoint = clusters.endpoint()
    assert endpoint.address == "edge-auth.team-a.svc:3025"
    cert = x509.load_pem_x509_certificate(endpoint.credentials.tls_cert_pem)
    identity = verify_client_cert(cert, {"edge": list(cluster.tls_ca.trusted_certificates())},
                                  now=T0 + timedelta(minutes=1))
    assert (identity.username, identity.system_role) == ("limen-operator", SystemRole.ADMIN)


def test_the_identity_is_kept_then_renewed_at_half_its_life() -> None:
    clock = Clock()
    clusters = DeployedClusters(clock)
    clusters.record("uid-1", deployed("team-a/edge"))
    first = clusters.endpoint().credentials
    clock.now = T0 + timedelta(hours=11)
    assert clusters.endpoint().credentials is first
    clock.now = T0 + timedelta(hours=13)
    assert clusters.endpoint().credentials is not first


def test_a_new_tls_ca_gets_a_new_identity() -> None:
    clusters = DeployedClusters(Clock())
    clusters.record("uid-1", deployed("team-a/edge"))
    first = clusters.endpoint().credentials
    clusters.record("uid-1", deployed("team-a/edge"))  # a rotated TLS CA: another key
    assert clusters.endpoint().credentials is not first


def test_several_clusters_need_a_choice() -> None:
    clusters = DeployedClusters(Clock())
    clusters.record("uid-1", deployed("team-a/edge"))
    clusters.record("uid-2", deployed("team-b/core"))
    with pytest.raises(ConnectionProblem, match=r"several Clusters \(team-a/edge, team-b/core\)"):
        clusters.endpoint()
    clusters.forget("uid-2")
    assert clusters.endpoint().address == "edge-auth.team-a.svc:3025"


def edge() -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "edge", "namespace": "team-a", "uid": "uid-edge",
                         "generation": 1},
            "spec": {"public_address": "limen.example.com:443"}}


def reconcile(kube_api: KubeAPI, ctx: OperatorContext) -> None:
    async def run() -> None:
        ctx.kube = KubeApi(kube_api.api_client())
        try:
            await ClusterReconciler(ctx).reconcile(edge(), kopf.Patch(), LOG, retry=False)
        finally:
            await ctx.kube.close()

    asyncio.run(run())


def test_a_deployed_cluster_becomes_the_operators_auth(kube_api: KubeAPI) -> None:
    kube_api.create_namespace("team-a")
    ctx = build_context(OperatorConfig(image="img:1"))
    ctx.post_event = lambda *_: None
    before = ctx.auth
    reconcile(kube_api, ctx)
    assert before is None  # none configured
    assert ctx.auth is not None
    assert ctx.deployed.endpoint().address == "edge-auth.team-a.svc:3025"


def test_a_configured_auth_address_is_kept(kube_api: KubeAPI, tmp_path: Path) -> None:
    kube_api.create_namespace("team-a")
    ctx = build_context(OperatorConfig(image="img:1", auth_address="auth.elsewhere:3025",
                                       identity_dir=tmp_path))
    ctx.post_event = lambda *_: None
    configured = ctx.auth
    reconcile(kube_api, ctx)
    assert ctx.auth is configured
