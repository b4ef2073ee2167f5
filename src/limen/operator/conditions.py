"""``status.conditions`` in the exact ``metav1.Condition`` shape, kstatus-compatible.

Every Limen custom resource carries five conditions, all always present::

    Ready        True when Limen holds what the object declares (normal-true)
    Reconciling  True while the operator is still working on it, e.g. auth unreachable
    Stalled      True when it cannot progress without a change: invalid, not owned, conflict
    Valid        the object passed Limen's validation (the CRD schemas and semantic checks)
    Owned        this object, and this operator, own the Limen object of its name

That is what kstatus (Flux ``wait``, ``kubectl wait --for=condition=Ready``, cli-utils) reads:
with ``status.observedGeneration == metadata.generation``, Ready=True, Reconciling and Stalled
False, the object is *Current*; Stalled=True is *Failed*; anything else *InProgress*.

Each condition is ``{type, status, observedGeneration, lastTransitionTime, reason, message}``;
``lastTransitionTime`` changes only when ``status`` flips (a new reason or message keeps it).
Conditions of other types found in the status (other writers) are kept.

Pure code; called by ``limen.operator.resource_handlers`` and ``limen.operator.cluster``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CONDITION_TYPES",
    "Check",
    "Observation",
    "build_conditions",
    "build_status",
    "condition",
    "find",
    "format_time",
    "merge_conditions",
    "status_changes",
]

CONDITION_TYPES = ("Ready", "Reconciling", "Stalled", "Valid", "Owned")
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
_MAX_MESSAGE = 32768


@dataclass(frozen=True)
class Check:
    """One finding: ``status`` True / False / None (Unknown), a CamelCase reason, a message."""

    status: bool | None
    reason: str
    message: str = ""

    def __post_init__(self) -> None:
        if not _REASON.fullmatch(self.reason):
            raise ValueError(f"condition reason {self.reason!r} is not CamelCase")


@dataclass(frozen=True)
class Observation:
    """What one reconcile found; :func:`build_conditions` turns it into the five conditions.

    ``ready`` describes the outcome; when the object is not ready, ``reconciling`` (the
    operator retries on its own) or ``stalled`` (a person must change something) says why.
    """

    ready: Check
    valid: Check
    owned: Check
    reconciling: bool = False
    stalled: bool = False

    def __post_init__(self) -> None:
        if self.reconciling and self.stalled:
            raise ValueError("an object is either reconciling or stalled, not both")
        if self.ready.status and (self.reconciling or self.stalled):
            raise ValueError("a ready object is neither reconciling nor stalled")


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes ``metav1.Time``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_text(value: bool | None) -> str:
    return "Unknown" if value is None else ("True" if value else "False")


def condition(type_: str, status: bool | None, reason: str, message: str, generation: int,
              now: datetime) -> dict[str, Any]:
    """One ``metav1.Condition`` (lastTransitionTime = ``now``; :func:`merge_conditions` keeps
    the previous one when the status did not flip)."""
    Check(status, reason)  # validates the reason
    return {
        "type": type_,
        "status": _status_text(status),
        "observedGeneration": int(generation),
        "lastTransitionTime": format_time(now),
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
    }


def build_conditions(observation: Observation, generation: int,
                     now: datetime) -> list[dict[str, Any]]:
    """The five conditions for ``observation``, in :data:`CONDITION_TYPES` order."""
    ready = observation.ready
    settled = "Reconciled" if ready.status else ready.reason
    reconciling = (ready.reason, ready.message) if observation.reconciling else (settled, "")
    stalled = (ready.reason, ready.message) if observation.stalled else (
        "Progressing" if observation.reconciling else settled, "")
    return [
        condition("Ready", ready.status, ready.reason, ready.message, generation, now),
        condition("Reconciling", observation.reconciling, *reconciling, generation, now),
        condition("Stalled", observation.stalled, *stalled, generation, now),
        condition("Valid", observation.valid.status, observation.valid.reason,
                  observation.valid.message, generation, now),
        condition("Owned", observation.owned.status, observation.owned.reason,
                  observation.owned.message, generation, now),
    ]


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of ``type_`` in a status' list, if any."""
    for item in conditions or ():
        if isinstance(item, Mapping) and item.get("type") == type_:
            return item
    return None


def merge_conditions(previous: Sequence[Mapping[str, Any]] | None,
                     desired: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``desired`` with each ``lastTransitionTime`` taken from ``previous`` when the status of
    that type did not change; conditions of other types in ``previous`` follow, unchanged."""
    merged: list[dict[str, Any]] = []
    for item in desired:
        new = dict(item)
        old = find(previous, str(new["type"]))
        if old is not None and old.get("status") == new["status"] and old.get(
                "lastTransitionTime"):
            new["lastTransitionTime"] = old["lastTransitionTime"]
        merged.append(new)
    types = {str(item["type"]) for item in desired}
    merged.extend(copy.deepcopy(dict(item)) for item in previous or ()
                  if isinstance(item, Mapping) and item.get("type") not in types)
    return merged


def build_status(previous: Mapping[str, Any] | None, observation: Observation,
                 generation: int, now: datetime,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole status the operator writes: ``observedGeneration``, the merged conditions
    and ``extra`` fields (e.g. ``limenName``); other fields of ``previous`` are kept."""
    previous = previous or {}
    status = {k: copy.deepcopy(v) for k, v in previous.items()
              if k not in ("conditions", "observedGeneration")}
    status.update(copy.deepcopy(dict(extra or {})))
    status["observedGeneration"] = int(generation)
    status["conditions"] = merge_conditions(
        previous.get("conditions") if isinstance(previous.get("conditions"), list) else None,
        build_conditions(observation, generation, now))
    return status


def status_changes(previous: Mapping[str, Any] | None,
                   new: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level status fields that differ (a merge patch; empty when nothing changed, so
    an unchanged status is not written again)."""
    previous = previous or {}
    return {key: value for key, value in new.items() if previous.get(key) != value}
