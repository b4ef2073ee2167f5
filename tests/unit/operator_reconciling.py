"""Shared by the unit tests of the Cluster reconciler against the Kubernetes API emulator
(``test_operator_db_agent``, ``test_operator_kube_agent``, ``test_operator_ha``): the reconciler
with a real ``KubeApi`` (no kopf loop; the ``operator_kube`` fixture of ``conftest.py``), a
Cluster's condition, and what the Deployment controller and the kubelet would report for a
Deployment.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from k8s_emulator.fixtures import KubeAPI
from limen.operator.cluster import ClusterReconciler
from limen.operator.conditions import find
from limen.operator.context import OperatorContext
from limen.operator.kube import KubeApi
from limen.operator.settings import OperatorConfig

__all__ = ["NS", "Reconciling", "condition", "make_ready"]

LOG = logging.getLogger("test")
NS = "limen"


class Reconciling:
    """The Cluster reconciler with a real KubeApi on the emulator (no kopf loop needed)."""

    def __init__(self, kube: KubeApi) -> None:
        self.ctx = OperatorContext(config=OperatorConfig(image="limen:test"), kube=kube,
                                   post_event=lambda *_: None)
        self.reconciler = ClusterReconciler(self.ctx)

    async def run(self, body: dict[str, Any]) -> dict[str, Any]:
        patch = kopf.Patch()
        await self.reconciler.reconcile(body, patch, LOG, retry=False)
        body.setdefault("status", {}).update(dict(patch.get("status") or {}))
        return body


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    found = find(body["status"]["conditions"], type_)
    assert found is not None
    return dict(found)


def make_ready(kube_api: KubeAPI, name: str, replicas: int) -> None:
    """What the Deployment controller and the kubelet would report."""
    deployment = kube_api.get("deployments", name, NS)
    assert deployment is not None
    kube_api.patch("deployments", name, {"status": {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas}},
        NS, subresource="status")
