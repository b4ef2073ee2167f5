"""What the operator writes for a Cluster, read back from the Kubernetes API emulator, for the
tests that run those pods with the tests' kubelet (``test_operator_pods_run``,
``test_operator_pods_ha``, ``test_operator_kube_agent_pods``).

``Rendered(api, body)`` reconciles ``body`` once with the real ``ClusterReconciler`` (no kopf
loop), keeps its Secrets, ConfigMaps, Deployments and Services by ``(kind, name)`` and the
Services' DNS names (plus ``extra_hosts``) for the pods' /etc/hosts; ``ctx`` is the operator
context, with what the operator derived for its own calls to the Cluster's auth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kopf

from k8s_emulator.fixtures import KubeAPI
from limen.operator.cluster import ClusterReconciler
from limen.operator.context import OperatorContext
from limen.operator.kube import KubeApi
from limen.operator.settings import OperatorConfig

from .kubelet import Pod, PodNetwork, service_names

__all__ = ["Rendered"]

LOG = logging.getLogger("test")
Objects = dict[tuple[str, str], dict[str, Any]]


class Rendered:
    """The operator's objects for the Cluster ``body`` (its namespace created if missing)."""

    def __init__(self, api: KubeAPI, body: dict[str, Any], *,
                 extra_hosts: Sequence[str] = ()) -> None:
        meta = body["metadata"]
        self.name, self.namespace = str(meta["name"]), str(meta["namespace"])
        if api.get("namespaces", self.namespace, None) is None:
            api.create_namespace(self.namespace)
        self.ctx = OperatorContext(config=OperatorConfig(image="limen:test"),
                                   post_event=lambda *_: None)
        asyncio.run(self._reconcile(api, body))
        self.objects: Objects = {}
        for kind, resource in (("Secret", "secrets"), ("ConfigMap", "configmaps"),
                               ("Deployment", "deployments"), ("Service", "services")):
            for obj in api.list(resource, self.namespace):
                self.objects[kind, obj["metadata"]["name"]] = obj
        self.hosts = [name for (kind, _), obj in self.objects.items() if kind == "Service"
                      for name in service_names(obj)] + list(extra_hosts)

    async def _reconcile(self, api: KubeAPI, body: dict[str, Any]) -> None:
        self.ctx.kube = KubeApi(api.api_client())
        try:
            await ClusterReconciler(self.ctx).reconcile(body, kopf.Patch(), LOG, retry=False)
        finally:
            await self.ctx.kube.close()

    def pod(self, network: PodNetwork, component: str, workdir: Path,
            deployment: dict[str, Any] | None = None, objects: Objects | None = None) -> Pod:
        """The pod of ``<name>-<component>`` (or of ``deployment``, its volumes from
        ``objects``), as the kubelet would run it."""
        return Pod(network, deployment or self.objects["Deployment", f"{self.name}-{component}"],
                   objects or self.objects, workdir, hosts=self.hosts)
