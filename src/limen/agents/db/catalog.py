"""Which databases a db agent serves: those in its own config (``db.databases``) and the
cluster's ``Resource`` objects of ``spec.kind: db`` that match one of its ``db.resources``
label selectors (dynamic registration: a database declared in Git is served as soon as the
agent's next refresh sees it, and dropped when it is deleted).

Called by :mod:`limen.agents.db.db_service` (heartbeats and session lookups).
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

__all__ = ["DatabaseCatalog", "ResourceLister", "static_databases"]

log = logging.getLogger(__name__)

ResourceLister = Callable[[], Awaitable[Sequence[Resource]]]
"""The cluster's Resource objects (the store beside auth, or the auth API)."""


def static_databases(entries: Sequence[Mapping[str, Any]]) -> list[Resource]:
    """``db.databases`` entries as validated Resources (BadParameter/ValidationFailed naming
    the entry otherwise)."""
    docs = []
    for index, entry in enumerate(entries):
        spec = {k: v for k, v in entry.items() if k not in ("name", "labels")}
        spec["kind"] = "db"
        doc = {"apiVersion": API_VERSION, "kind": "Resource",
               "metadata": {"name": entry.get("name"), "labels": dict(entry.get("labels") or {})},
               "spec": spec}
        docs.append(SourceDocument("<config db.databases>", index, 1, doc))
    return validate(docs)


class DatabaseCatalog:
    """The served databases, refreshed at most every ``max_age`` seconds."""

    def __init__(self, static: Sequence[Resource], selectors: Sequence[Mapping[str, Any]],
                 lister: ResourceLister | None, *, max_age: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._static = {r.name: r for r in static}
        self._selectors: list[LabelSelector] = [
            compile_selector(list(normalize_label_map(s.get("labels"), "db.resources")
                                  .items()), "db.resources")
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
            log.warning("db agent: cannot read the cluster's db resources: %s", err)
            return
        self._fetched = self._clock()
        self._dynamic = {
            r.name: r for r in resources
            if r.kind is Kind.RESOURCE and r.spec.get("kind") == "db"
            and any(s.matches(r.labels) for s in self._selectors)}

    def databases(self) -> list[Resource]:
        """Every served database (its own config wins over a Resource of the same name)."""
        merged = {**self._dynamic, **self._static}
        return [merged[name] for name in sorted(merged)]

    async def find(self, name: str) -> Resource:
        await self.refresh()
        found = self._static.get(name) or self._dynamic.get(name)
        if found is None:
            raise NotFound(f"this db agent does not serve a database named {name!r}")
        return found

    def heartbeats(self) -> list[dict[str, Any]]:
        """The Resource document of each served database, as heartbeats carry them."""
        return [{"apiVersion": API_VERSION, "kind": "Resource",
                 "metadata": {"name": r.name, "labels": dict(r.labels)}, "spec": dict(r.spec)}
                for r in self.databases()]
