"""Which Kubernetes clusters a kube agent serves: those in its own config (``kube.clusters``)
and the cluster's ``Resource`` objects of ``spec.kind: kube`` that match one of its
``kube.resources`` label selectors (:mod:`limen.agents.resource_catalog`).

A cluster from the agent's own config may name its kubeconfig by path (``kubeconfig``: the
admin of this machine wrote it); a Resource only by a bounded reference (``kubeconfig_ref``,
see :mod:`limen.agents.kube.upstream`), which heartbeats leave out. Called by
:mod:`limen.agents.kube.kube_service`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from limen.agents.resource_catalog import ResourceCatalog, ResourceLister, config_resources
from limen.api.resources import Resource

__all__ = ["KubeCatalog", "ResourceLister", "static_clusters"]


def static_clusters(entries: Sequence[Mapping[str, Any]]
                    ) -> tuple[list[Resource], dict[str, str]]:
    """``kube.clusters`` entries as validated Resources, and each one's ``kubeconfig`` path
    (BadParameter/ValidationFailed naming the entry otherwise)."""
    paths = {str(entry.get("name")): str(entry["kubeconfig"])
             for entry in entries if entry.get("kubeconfig")}
    return config_resources(entries, "kube", "kube.clusters", ("kubeconfig",)), paths


class KubeCatalog(ResourceCatalog):
    """The served kube clusters, refreshed at most every ``max_age`` seconds."""

    def __init__(self, static: Sequence[Resource], selectors: Sequence[Mapping[str, Any]],
                 lister: ResourceLister | None, *, max_age: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("kube", static, selectors, lister, setting="kube.resources",
                         agent="kube agent", noun="a kube cluster",
                         unannounced=("kubeconfig_ref",), max_age=max_age, clock=clock)

    def clusters(self) -> list[Resource]:
        """Every served cluster (its own config wins over a Resource of the same name)."""
        return self.served()
