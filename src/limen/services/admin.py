"""Administrative operations on resources, shared by the auth API and offline ``lmctl``.

``AdminOps`` validates nothing itself (callers pass already validated ``Resource`` objects
from ``limen.api.validation``); it plans, applies atomically and reports per-object results.
Called by ``limen.auth`` (API handlers) and ``limen.cli.lmctl`` (``--data-dir`` with no running
cluster).
"""

from __future__ import annotations

from collections.abc import Sequence

from limen.api.resources import Kind, Origin, Resource
from limen.services.apply import apply_plan
from limen.services.ownership import check_owner
from limen.services.plan import Plan, compute_plan
from limen.services.resource_store import ResourceStore

__all__ = ["AdminOps"]


class AdminOps:
    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    async def plan(
        self, resources: Sequence[Resource], origin: Origin, *, prune: bool = False,
        kinds: Sequence[Kind] | None = None,
    ) -> Plan:
        wanted_kinds = set(kinds or ()) | {r.kind for r in resources}
        current: list[Resource] = []
        for kind in sorted(wanted_kinds):
            current.extend(await self.store.list(kind))
        return compute_plan(resources, current, origin, prune=prune, kinds=kinds)

    async def apply(
        self, resources: Sequence[Resource], origin: Origin, *, prune: bool = False,
        kinds: Sequence[Kind] | None = None,
    ) -> Plan:
        """Plan and apply all or nothing; returns the plan that was applied."""
        plan = await self.plan(resources, origin, prune=prune, kinds=kinds)
        await apply_plan(self.store, plan)
        return plan

    async def remove(self, kind: Kind, name: str, origin: Origin) -> Resource:
        """Delete an object; a source may delete only what it owns (or what is unowned)."""
        current = await self.store.get(kind, name)
        check_owner(current, origin, "delete")
        await self.store.delete(kind, name)
        return current
