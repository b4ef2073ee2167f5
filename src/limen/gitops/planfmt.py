"""Render a plan as the human diff a reviewer reads: one block per object that changes.

::

    + Role/auditor created
    ~ Role/dev updated
        spec.allow.logins: ["{{internal.logins}}"] → ["{{internal.logins}}", "ubuntu"]
        spec.options.max_session_ttl: "8h" → (none)
    - User/bob deleted
    ! Role/ops is owned by origin api; annotate it with limen.dev/adopt: git to hand it over
    Plan: 1 created, 1 updated, 1 deleted, 4 unchanged; 1 conflict

Pure code. Called by ``lmctl gitops plan`` and by the Git sync's log lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from limen.api.resources import ORIGIN_LABEL
from limen.services.plan import Action, Plan, PlanEntry

__all__ = ["MAX_VALUE_CHARS", "format_value", "render_entry", "render_plan", "summary_line"]

MAX_VALUE_CHARS = 160
"""Longer values are cut (with ``…``) so one changed field stays one line."""
_MARKS = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-"}
_NONE = "(none)"


def format_value(value: Any) -> str:
    """A field value as compact JSON (``(none)`` for an absent field), at most one line."""
    if value is None:
        return _NONE
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def render_entry(entry: PlanEntry, *, created_fields: bool = False,
                 indent: str = "    ") -> Iterator[str]:
    """The lines of one changed object (nothing for an unchanged one)."""
    mark = _MARKS.get(entry.action)
    if mark is None:
        return
    yield f"{mark} {entry.key} {entry.action.value}"
    if entry.action is Action.UPDATE:
        for change in entry.changes:
            yield (f"{indent}{change.path}: {format_value(change.old)} → "
                   f"{format_value(change.new)}")
    elif entry.action is Action.CREATE and created_fields and entry.desired is not None:
        labels = {k: v for k, v in entry.desired.labels.items() if k != ORIGIN_LABEL}
        declared: Mapping[str, Any] = {
            "metadata": {"labels": labels, "annotations": dict(entry.desired.annotations)},
            "spec": dict(entry.desired.spec),
        }
        for path, value in _leaves(declared, ""):
            yield f"{indent}{path}: {format_value(value)}"


def _leaves(tree: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    """Dotted paths and values of the non-mapping leaves (lists are leaves), sorted."""
    for key in sorted(tree, key=str):
        path = f"{prefix}.{key}" if prefix else str(key)
        value = tree[key]
        if isinstance(value, Mapping):
            yield from _leaves(value, path)
        else:
            yield path, value


def summary_line(plan: Plan) -> str:
    text = f"Plan: {plan.summary()}"
    if plan.conflicts:
        count = len(plan.conflicts)
        text += f"; {count} conflict{'s' if count != 1 else ''}"
    return text


def render_plan(plan: Plan, *, created_fields: bool = False,
                max_objects: int | None = None) -> list[str]:
    """Every changed object, the conflicts, and the summary line.

    ``max_objects`` caps the objects shown (the sync logs at most that many), with a line
    saying how many were left out.
    """
    lines: list[str] = []
    changes = plan.changes
    shown = changes if max_objects is None else changes[:max_objects]
    for entry in shown:
        lines.extend(render_entry(entry, created_fields=created_fields))
    if len(shown) < len(changes):
        lines.append(f"… and {len(changes) - len(shown)} more changed objects")
    lines.extend(f"! {conflict}" for conflict in plan.conflicts)
    lines.append(summary_line(plan))
    return lines
