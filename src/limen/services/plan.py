"""Apply plans: what a source (Git, Kubernetes, ``lmctl apply``) would create, update or delete.

Pure code. ``compute_plan`` compares the desired objects of one source with what the store
holds and enforces ownership: every stored object records its origin in the
``limen.dev/origin`` label, and a source only changes or deletes what it owns, unless the object
is explicitly adopted (annotation ``limen.dev/adopt: <origin>`` on the stored object or on the
declared document). ``lmctl gitops plan`` prints the same plan the Git sync applies.
Called by ``limen.services.apply`` and the Git sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from limen.api.resources import ADOPT_ANNOTATION, ORIGIN_LABEL, Kind, Origin, Resource
from limen.services.ownership import owner_allows

__all__ = ["Action", "FieldChange", "Plan", "PlanEntry", "compute_plan", "diff_fields"]


class Action(StrEnum):
    CREATE = "created"
    UPDATE = "updated"
    DELETE = "deleted"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class PlanEntry:
    action: Action
    kind: Kind
    name: str
    desired: Resource | None
    """The object to write (None for deletes)."""
    current: Resource | None
    """What the store holds now (None for creates)."""
    changes: tuple[FieldChange, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind.value}/{self.name}"


@dataclass(frozen=True)
class Plan:
    origin: Origin
    entries: tuple[PlanEntry, ...]
    conflicts: tuple[str, ...] = field(default=())
    """Objects the source declares but another origin owns (the plan must not be applied)."""

    @property
    def changes(self) -> tuple[PlanEntry, ...]:
        return tuple(e for e in self.entries if e.action is not Action.UNCHANGED)

    def count(self, action: Action) -> int:
        return sum(1 for e in self.entries if e.action is action)

    def summary(self) -> str:
        parts = [f"{self.count(a)} {a.value}" for a in Action]
        return ", ".join(parts)


def compute_plan(
    desired: Iterable[Resource],
    current: Iterable[Resource],
    origin: Origin,
    *,
    prune: bool,
    kinds: Sequence[Kind] | None = None,
) -> Plan:
    """Plan the changes that make the store hold ``desired`` for ``origin``.

    ``current`` is what the store holds for the kinds concerned (any origin). With ``prune``,
    objects owned by ``origin`` that are no longer declared are deleted (the Git sync);
    ``lmctl apply`` does not prune. ``kinds`` limits pruning to those kinds.
    """
    by_key = {r.key: r for r in current}
    entries: list[PlanEntry] = []
    conflicts: list[str] = []
    declared: set[str] = set()
    for want in desired:
        want = want.with_origin(origin).replace(status={}, revision=0)
        declared.add(want.key)
        have = by_key.get(want.key)
        if have is None:
            entries.append(PlanEntry(Action.CREATE, want.kind, want.name, want, None))
            continue
        if not owner_allows(have, want, origin):
            conflicts.append(
                f"{want.key} is owned by origin {have.origin}; annotate it with "
                f"{ADOPT_ANNOTATION}: {origin.value} to hand it over"
            )
            continue
        if have.same_declaration(want):
            entries.append(PlanEntry(Action.UNCHANGED, want.kind, want.name, have, have))
            continue
        changes = tuple(diff_fields(_declared(have), _declared(want)))
        entries.append(
            PlanEntry(
                Action.UPDATE, want.kind, want.name,
                want.replace(status=have.status, revision=have.revision), have, changes,
            )
        )
    if prune:
        for have in by_key.values():
            if have.key in declared or have.origin is not origin:
                continue
            if kinds is not None and have.kind not in kinds:
                continue
            entries.append(PlanEntry(Action.DELETE, have.kind, have.name, None, have))
    entries.sort(key=lambda e: (e.kind.value, e.name))
    return Plan(origin, tuple(entries), tuple(conflicts))


def _declared(resource: Resource) -> dict[str, Any]:
    labels = {k: v for k, v in resource.labels.items() if k != ORIGIN_LABEL}
    return {
        "metadata": {"labels": labels, "annotations": dict(resource.annotations)},
        "spec": dict(resource.spec),
    }


def diff_fields(old: Any, new: Any, path: str = "") -> Iterable[FieldChange]:
    """Leaf-level differences between two documents, as dotted paths (``spec.allow.logins``)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                yield FieldChange(sub, None, new[key])
            elif key not in new:
                yield FieldChange(sub, old[key], None)
            else:
                yield from diff_fields(old[key], new[key], sub)
    elif old != new:
        yield FieldChange(path, old, new)
