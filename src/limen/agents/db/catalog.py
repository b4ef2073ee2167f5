"""Which databases a db agent serves: those in its own config (``db.databases``) and the
cluster's ``Resource`` objects of ``spec.kind: db`` that match one of its ``db.resources``
label selectors (:mod:`limen.agents.resource_catalog`).

Called by :mod:`limen.agents.db.db_service` (heartbeats and session lookups).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from limen.agents.resource_catalog import ResourceCatalog, ResourceLister, config_resources
from limen.api.resources import Resource

__all__ = ["DatabaseCatalog", "ResourceLister", "static_databases"]


def static_databases(entries: Sequence[Mapping[str, Any]]) -> list[Resource]:
    """``db.databases`` entries as validated Resources (BadParameter/ValidationFailed naming
    the entry otherwise)."""
    return config_resources(entries, "db", "db.databases")


class DatabaseCatalog(ResourceCatalog):
    """The served databases, refreshed at most every ``max_age`` seconds."""

    def __init__(self, static: Sequence[Resource], selectors: Sequence[Mapping[str, Any]],
                 lister: ResourceLister | None, *, max_age: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("db", static, selectors, lister, setting="db.resources",
                         agent="db agent", noun="a database", max_age=max_age, clock=clock)

    def databases(self) -> list[Resource]:
        """Every served database (its own config wins over a Resource of the same name)."""
        return self.served()
