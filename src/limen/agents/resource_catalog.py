"""Which resources of one kind an agent serves: those in its own config and the cluster's
``Resource`` objects of that ``spec.kind`` matching one of its label selectors (dynamic
registration, as Teleport's ``db_service.resources``: a resource declared in Git is served as
soon as the agent's next refresh sees it, and dropped when it is deleted).

The db agent's :class:`~limen.agents.db.catalog.DatabaseCatalog` and the kube agent's
:class:`~limen.agents.kube.catalog.KubeCatalog` are this with their kind, names and the spec
fields heartbeats leave out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

from limen.api.loader import SourceDocument
from limen.api.resources import API_VERSION, Kind, Resource
from limen.api.validation import validate
from limen.errors import LimenError, NotFound
from limen.rbac.labels import LabelSelector, compile_selector, normalize_label_map

__all__ = ["ResourceCatalog", "ResourceLister", "config_resources"]

log = logging.getLogger(__name__)

ResourceLister = Callable[[], Awaitable[Sequence[Resource]]]
"""The cluster's Resource objects (the store beside auth, or the auth API)."""


def config_resources(entries: Sequence[Mapping[str, Any]], kind: str, source: str,
                     local_fields: Collection[str] = ()) -> list[Resource]:
    """An agent's own config entries (``name``, ``labels`` and a Resource ``spec``) as
    validated Resources of ``spec.kind`` ``kind``, without the ``local_fields`` only the
    agent reads (BadParameter/ValidationFailed naming ``source`` and the entry otherwise)."""
    docs = []
    for index, entry in enumerate(entries):
        spec = {k: v for k, v in entry.items()
                if k not in ("name", "labels") and k not in local_fields}
        spec["kind"] = kind
        doc = {"apiVersion": API_VERSION, "kind": "Resource",
               "metadata": {"name": entry.get("name"), "labels": dict(entry.get("labels") or {})},
               "spec": spec}
        docs.append(SourceDocument(f"<config {source}>", index, 1, doc))
    return validate(docs)


class ResourceCatalog:
    """The served resources of ``spec.kind`` ``kind``, refreshed at most every ``max_age``
    seconds. ``setting`` names the selectors' config key in errors (``db.resources``),
    ``agent`` and ``noun`` the log and NotFound sentences; heartbeats leave the spec fields
    ``unannounced`` out (a reference to credentials)."""

    def __init__(self, kind: str, static: Sequence[Resource],
                 selectors: Sequence[Mapping[str, Any]], lister: ResourceLister | None, *,
                 setting: str, agent: str, noun: str, unannounced: Collection[str] = (),
                 max_age: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self._static = {r.name: r for r in static}
        self._selectors: list[LabelSelector] = [
            compile_selector(list(normalize_label_map(s.get("labels"), setting).items()),
                             setting)
            for s in selectors]
        self._lister = lister
        self._agent, self._noun = agent, noun
        self._unannounced = frozenset(unannounced)
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
            log.warning("%s: cannot read the cluster's %s resources: %s", self._agent,
                        self.kind, err)
            return
        self._fetched = self._clock()
        self._dynamic = {
            r.name: r for r in resources
            if r.kind is Kind.RESOURCE and r.spec.get("kind") == self.kind
            and any(s.matches(r.labels) for s in self._selectors)}

    def served(self) -> list[Resource]:
        """Every served resource, by name (its own config wins over a Resource of the same
        name)."""
        merged = {**self._dynamic, **self._static}
        return [merged[name] for name in sorted(merged)]

    def is_static(self, name: str) -> bool:
        """Is ``name`` served from the agent's own config?"""
        return name in self._static

    async def find(self, name: str) -> Resource:
        await self.refresh()
        found = self._static.get(name) or self._dynamic.get(name)
        if found is None:
            raise NotFound(f"this {self._agent} does not serve {self._noun} named {name!r}")
        return found

    def heartbeats(self) -> list[dict[str, Any]]:
        """The Resource document of each served resource, as heartbeats carry them."""
        return [{"apiVersion": API_VERSION, "kind": "Resource",
                 "metadata": {"name": r.name, "labels": dict(r.labels)},
                 "spec": {k: v for k, v in r.spec.items() if k not in self._unannounced}}
                for r in self.served()]
