"""Apply a plan to the store in one backend transaction: everything or nothing.

Each write is conditioned on the revision the plan saw, so a concurrent change between plan
and apply makes the whole apply fail (``CompareFailed``) instead of overwriting it. The caller
may add conditions of its own (the Git sync: its leader lease, so a replica that lost the
lease cannot apply a plan the new leader did not make). The audit
events of the change ride in the same transaction as outbox records
(``limen.services.audit_in_transaction``): committed together with the change, or not at all.
Called by ``lmctl apply`` (offline), the auth API's apply endpoint, and the Git sync.
"""

from __future__ import annotations

from collections.abc import Sequence

from limen.backend.base import Condition, Delete, Put
from limen.errors import AlreadyExists, CompareFailed
from limen.services.audit_in_transaction import OutboxRecords
from limen.services.plan import Action, Plan
from limen.services.resource_store import ResourceStore, encode, resource_key

__all__ = ["apply_plan"]


async def apply_plan(store: ResourceStore, plan: Plan,
                     records: OutboxRecords | None = None,
                     fence: Sequence[Condition] = ()) -> int:
    """Write every change of ``plan`` and the outbox ``records`` atomically, on condition
    that ``fence`` holds too; returns the new revision (0 if nothing was written)."""
    if plan.conflicts:
        raise AlreadyExists("; ".join(plan.conflicts))
    conditions: list[Condition] = list(fence)
    ops: list[Put | Delete] = []
    for entry in plan.changes:
        key = resource_key(entry.kind, entry.name)
        if entry.action is Action.CREATE:
            conditions.append(Condition(key, 0))
        else:
            assert entry.current is not None
            conditions.append(Condition(key, entry.current.revision))
        if entry.action is Action.DELETE:
            ops.append(Delete(key))
        else:
            assert entry.desired is not None
            ops.append(Put(key, encode(entry.desired)))
    if records is not None:
        ops.extend(records.puts)
    if not ops:
        return 0
    try:
        return await store.backend.atomic(conditions, ops)
    except CompareFailed:
        raise CompareFailed("the stored objects changed while this apply was being planned "
                            "(another writer); nothing was applied: run it again") from None
