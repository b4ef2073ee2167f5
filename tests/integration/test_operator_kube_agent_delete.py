"""The kube agent's cluster-scoped RBAC goes with its Cluster: kopf running the operator's
registry in a thread against the Kubernetes API emulator (``kube_api``).

A ClusterRole and ClusterRoleBinding cannot carry an owner reference to a namespaced Cluster,
so the garbage collector never deletes them; the operator does: the Cluster carries kopf's
finalizer (its resync timer asks for one anyway), and deleting a Cluster with
``spec.kube.enabled`` runs the handler that deletes both before the Cluster goes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from k8s_emulator.fixtures import KubeAPI
from limen.operator.settings import OperatorConfig

from .cluster import wait_for
from .test_operator_e2e import OperatorThread

NAMESPACE = "team-k"
RBAC_NAME = f"limen-{NAMESPACE}-home-kube-agent"


@pytest.fixture
def operator(kube_api: KubeAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeAPI]:
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig_path))
    kube_api.create_namespace(NAMESPACE)
    running = OperatorThread(OperatorConfig(image="limen:test", resync_seconds=1.0,
                                            retry_seconds=0.5)).start()
    try:
        yield kube_api
    finally:
        running.stop()


def cluster(name: str, kube: bool) -> dict[str, object]:
    spec: dict[str, object] = {"public_address": "limen.example.com:443",
                               "kube": {"enabled": kube}}
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def test_deleting_the_cluster_deletes_its_cluster_role_and_binding(operator: KubeAPI) -> None:
    api = operator
    api.create(cluster("home", kube=True))
    api.wait_for(lambda: api.get("clusterrolebindings", RBAC_NAME, None), timeout=15)
    assert api.get("clusterroles", RBAC_NAME, None) is not None
    assert api.wait_for(lambda: (api.get("clusters", "home", NAMESPACE) or {}).get(
        "metadata", {}).get("finalizers"), timeout=15)

    api.delete("clusters", "home", NAMESPACE)
    wait_for(lambda: api.get("clusters", "home", NAMESPACE) is None, 15,
             "the Cluster to go once its handler ran")
    assert api.get("clusterroles", RBAC_NAME, None) is None
    assert api.get("clusterrolebindings", RBAC_NAME, None) is None
