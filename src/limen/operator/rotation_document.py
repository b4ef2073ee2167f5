"""A Cluster CR's phased CA rotation (``spec.rotation``) as the Cluster document the operator
applies to that cluster's auth, and the CR's status from auth's answer. Pure code.

::

    Cluster CR {metadata: {namespace, name}, spec: {cluster_name?, public_address, rotation}}
      ──▶ mixed_problem: spec.ca_rotation rotates a type spec.rotation names too ──▶ refused
      ──▶ forwarded(body) ──▶ Declared: kind Cluster, metadata.name = the cluster's name
            (spec.cluster_name, else metadata.name: the name auth knows), annotation
            limen.dev/kubernetes-object = clusters/<ns>/<name>, spec = {public_address,
            rotation} (public_address because the Cluster schema requires it; never the
            deployment fields: auth acts on spec.rotation only)
    auth's answer: the stored document's status.rotation / rotationError and /v1/status
    ca_rotation ──▶ outcome(...) ──▶ status.rotation {<type>: {id, mode, phase, state,
            message, caPhase}}, status.caPhases {<type>: phase} and the condition
            RotationRequest (True: applied or reached; False: refused, not applied, mixed,
            auth unreachable; Unknown: auth has not answered this request yet, or it waits)

:func:`pending` says whether the operator should look at auth again soon (a request auth has
not settled yet). Called by ``limen.operator.rotation_forward``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from limen.api.loader import SourceDocument
from limen.api.resources import API_VERSION, Kind
from limen.api.rotation_request import TYPES
from limen.api.validation import validate
from limen.errors import ValidationFailed
from limen.operator.conditions import Check, find
from limen.operator.documents import Declared, InvalidObject
from limen.operator.naming import REF_ANNOTATION, object_ref

__all__ = [
    "CONDITION",
    "Outcome",
    "forwarded",
    "mixed_problem",
    "outcome",
    "pending",
    "removed",
    "requested",
]

CONDITION = "RotationRequest"
"""The condition type on the Cluster CR saying what became of its ``spec.rotation``."""
_SETTLED = ("Reached", "Done", "Refused")
"""Entry states auth will not change by itself (a manual request's; auto ones move on)."""


@dataclass(frozen=True)
class Outcome:
    """What the CR's status says about its rotation requests."""

    fields: dict[str, Any] = field(default_factory=dict)
    """Status fields: ``rotation`` and ``caPhases`` (None: removed, a merge patch)."""
    check: Check | None = None
    """The :data:`CONDITION` condition (None: the CR never declared a rotation)."""


def requested(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The CR's ``spec.rotation`` entries (empty when absent)."""
    entries = (body.get("spec") or {}).get("rotation") or []
    return [dict(e) for e in entries if isinstance(e, Mapping)]


def _cluster_name(body: Mapping[str, Any]) -> str:
    return str((body.get("spec") or {}).get("cluster_name") or body["metadata"]["name"])


def mixed_problem(body: Mapping[str, Any]) -> str | None:
    """Why ``spec.rotation`` cannot be forwarded because ``spec.ca_rotation`` rotates one of its
    CA types too (the two do not mix), or None."""
    legacy = (body.get("spec") or {}).get("ca_rotation") or {}
    which = legacy.get("type") if isinstance(legacy, Mapping) else None
    if not which:
        return None
    legacy_types = set(TYPES) if which == "all" else {str(which)}
    both = sorted(legacy_types & {str(e.get("type")) for e in requested(body)})
    if not both:
        return None
    return (f"spec.rotation and spec.ca_rotation both rotate the {', '.join(both)} CA: the two "
            "do not mix; remove spec.ca_rotation (once its rotation is over) or the request "
            "from spec.rotation")


def forwarded(body: Mapping[str, Any]) -> Declared:
    """The Cluster document carrying the CR's ``spec.rotation`` (see the module doc);
    :class:`InvalidObject` when auth's validation would refuse it."""
    meta = body["metadata"]
    name = _cluster_name(body)
    ref = object_ref(Kind.CLUSTER.plural, meta.get("namespace"), str(meta["name"]))
    spec = {"public_address": (body.get("spec") or {}).get("public_address"),
            "rotation": requested(body)}
    document = {"apiVersion": API_VERSION, "kind": Kind.CLUSTER.value,
                "metadata": {"name": name, "annotations": {REF_ANNOTATION: ref}},
                "spec": spec}
    try:
        [resource] = validate([SourceDocument(ref, 0, 1, document)])
    except ValidationFailed as err:
        raise InvalidObject("; ".join(f"{e.path}: {e.reason}" for e in err.errors)) from None
    return Declared(Kind.CLUSTER, resource.name, ref, document, resource)


def outcome(body: Mapping[str, Any], shown: Mapping[str, Any], error: str,
            ca_rotation: Mapping[str, Any]) -> Outcome:
    """The CR's status from auth's answer: ``shown`` the stored document's ``status.rotation``
    (per CA type), ``error`` its ``rotationError``, ``ca_rotation`` ``/v1/status``'s
    ``ca_rotation`` (per CA type, its ``phase``)."""
    phases = {t: str((ca_rotation.get(t) or {}).get("phase") or "") for t in TYPES
              if isinstance(ca_rotation.get(t), Mapping)}
    entries: dict[str, Any] = {}
    for request in requested(body):
        ca_type = str(request.get("type"))
        answer = shown.get(ca_type) if isinstance(shown.get(ca_type), Mapping) else None
        entry = {"id": request.get("id"), "mode": request.get("mode", "manual"),
                 "phase": request.get("phase") or "", "state": "Pending",
                 "message": "auth has not answered this request yet",
                 "caPhase": phases.get(ca_type, "")}
        if answer is not None and not error and (answer.get("id"), answer.get("phase")) == (
                entry["id"], entry["phase"]):
            entry["state"] = str(answer.get("state") or "Pending")
            entry["message"] = str(answer.get("message") or "")
        entries[ca_type] = entry
    fields: dict[str, Any] = {"rotation": entries, "caPhases": phases}
    if error:
        return Outcome(fields, Check(False, "NotApplied", f"auth applies none of the requests: "
                                                         f"{error}"))
    return Outcome(fields, _check(entries))


def _check(entries: Mapping[str, Mapping[str, Any]]) -> Check:
    refused = [f"{t}: {e['message']}" for t, e in sorted(entries.items())
               if e["state"] == "Refused"]
    if refused:
        return Check(False, "Refused", "; ".join(refused))
    waiting = [f"{t}: {e['message']}" for t, e in sorted(entries.items())
               if e["state"] in ("Pending", "Waiting")]
    if waiting:
        return Check(None, "Pending", "; ".join(waiting))
    done = "; ".join(f"{t}: {e['message']}" for t, e in sorted(entries.items()))
    return Check(True, "Applied", done or "no requests")


def removed(ca_rotation: Mapping[str, Any]) -> Outcome:
    """The CR dropped its requests and auth no longer holds them."""
    del ca_rotation  # the phases are shown only while a request is declared
    return Outcome({"rotation": None, "caPhases": None}, Check(
        True, "Removed", "no rotation requested (removing a request stops no rotation under "
                         "way: lmctl auth rotate does)"))


def pending(body: Mapping[str, Any]) -> bool:
    """Should the operator look at auth again soon? A request not answered, waiting, or
    moving by itself (auto); a removal not done; auth unreachable."""
    status = body.get("status") or {}
    shown = status.get("rotation") or {}
    wanted = requested(body)
    found = find(status.get("conditions"), CONDITION)
    if not wanted:
        return bool(shown)
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    if found is None or found.get("observedGeneration") != generation:
        return True
    if found.get("reason") in ("AuthUnreachable", "NotApplied"):
        return True
    if found.get("reason") == "MixedRotation":
        return False
    for request in wanted:
        entry = shown.get(str(request.get("type"))) or {}
        if (entry.get("id"), entry.get("phase")) != (request.get("id"), request.get("phase") or ""):
            return True
        state = entry.get("state")
        if state not in _SETTLED or (state == "Reached" and request.get("mode") == "auto"):
            return True
    return False
