"""Which Kubernetes clusters a kube agent serves: those in its own config (``kube.clusters``)
and the cluster's ``Resource`` objects of ``spec.kind: kube`` that match one of its
``kube.resources`` label selectors (dynamic registration: a cluster declared in Git is served
as soon as the agent's next refresh sees it, and dropped when it is deleted).

A cluster from the agent's own config may name its kubeconfig by path (``kubeconfig``: the
admin of this machine wrote it); a Resource only by a bounded reference (``kubeconfig_ref``,
see :mod:`limen.agents.kube.upstream`). Called by :mod:`limen.agents.kube.kube_service`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from limen.api.loader import SourceDocument
from limen.api.resources import API_VERSION, Kind, Resource
from limen.api.validation import validate
from limen.errors import LimenError, NotFound
from limen.rbac.labels import LabelSelector, compile_selector, normalize_label_map

__all__ = ["KubeCatalog", "ResourceLister", "static_clusters"]

log = logging.getLogger(__name__)

ResourceLister = Callable[[], Awaitable[Sequence[Resource]]]
"""The cluster's Resource objects (the store beside auth, or the auth API)."""


def static_clusters(entries: Sequence[Mapping[str, Any]]
                    ) -> tuple[list[Resource], dict[str, str]]:
    """``kube.clusters`` entries as validated Resources, and each one's ``kubeconfig`` path
    (BadParameter/ValidationFailed naming the entry otherwise)."""
    docs = []
    paths: dict[str, str] = {}
    for index, entry in enumerate(entries):
        spec = {k: v for k, v in entry.items() if k not in ("name", "labels", "kubeconfig")}
        spec["kind"] = "kube"
        if entry.get("kubeconfig"):
            paths[str(entry.get("name"))] = str(entry["kubeconfig"])
        doc = {"apiVersion": API_VERSION, "kind": "Resource",
               "metadata": {"name": entry.get("name"), "labels": dict(entry.get("labels") or {})},
               "spec": spec}
        docs.append(SourceDocument("<config kube.clusters>", index, 1, doc))
    return validate(docs), paths


class KubeCatalog:
    """The served kube clusters, refreshed at most every ``max_age`` seconds."""

    def __init__(self, static: Sequence[Resource], selectors: Sequence[Mapping[str, Any]],
                 lister: ResourceLister | None, *, max_age: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._static = {r.name: r for r in static}
        self._selectors: list[LabelSelector] = [
            compile_selector(list(normalize_label_map(s.get("labels"), "kube.resources")
                                  .items()), "kube.resources")
            for s in selectors]
        self._lister = lister
        self._max_age = max_age
        self._clock = clock
        self._dynamic: dict[str, Resource] = {}
        self._fetched = -1e9

    async def refresh(self, *, force: bool = False) -> None:
        if self._lister is None or not self._selectors:
            return
        if not force and self._clock() - self._fetched < self._max_age:
            return
        try:
            resources = await self._lister()
        except (LimenError, OSError) as err:
            log.warning("kube agent: cannot read the cluster's kube resources: %s", err)
            return
        self._fetched = self._clock()
        self._dynamic = {
            r.name: r for r in resources
            if r.kind is Kind.RESOURCE and r.spec.get("kind") == "kube"
            and any(s.matches(r.labels) for s in self._selectors)}

    def clusters(self) -> list[Resource]:
        """Every served cluster (its own config wins over a Resource of the same name)."""
        merged = {**self._dynamic, **self._static}
        return [merged[name] for name in sorted(merged)]

    def is_static(self, name: str) -> bool:
        return name in self._static

    async def find(self, name: str) -> Resource:
        await self.refresh()
        found = self._static.get(name) or self._dynamic.get(name)
        if found is None:
            raise NotFound(f"this kube agent does not serve a kube cluster named {name!r}")
        return found

    def heartbeats(self) -> list[dict[str, Any]]:
        """The Resource document of each served cluster, as heartbeats carry them (without
        the reference to its credentials)."""
        return [{"apiVersion": API_VERSION, "kind": "Resource",
                 "metadata": {"name": r.name, "labels": dict(r.labels)},
                 "spec": {k: v for k, v in r.spec.items() if k != "kubeconfig_ref"}}
                for r in self.clusters()]
