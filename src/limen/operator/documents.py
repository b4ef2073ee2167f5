"""From a custom resource to the Limen document the operator pushes, and the checks on it.

::

    CR {metadata: {namespace, name, labels, annotations}, spec}
      ──▶ Limen name (naming.limen_name)
      ──▶ {apiVersion, kind, metadata: {name, labels, annotations: {kubernetes-object[, adopt]}},
           spec}
      ──▶ limen.api.validation.validate: the same schemas and checks as Git and lmctl

The labels are carried over as they are (Resources are matched by their labels); of the
annotations only ``limen.dev/adopt`` is, plus ``limen.dev/kubernetes-object`` naming the source.
:func:`ownership` decides, from the object Limen holds, whether this CR may write it (the rule
of ``limen.services.plan``: another origin's object only with the adopt annotation), and
:func:`drift` lists what differs between Limen's copy and the CR.

Pure code; called by ``limen.operator.resource_handlers``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from limen.api.loader import SourceDocument
from limen.api.resources import ADOPT_ANNOTATION, API_VERSION, ORIGIN_LABEL, Kind, Origin, Resource
from limen.api.validation import validate
from limen.errors import ValidationFailed
from limen.operator.conditions import Check
from limen.operator.naming import REF_ANNOTATION, limen_name, name_problem, object_ref
from limen.services.plan import diff_fields

__all__ = [
    "MANAGED_KINDS",
    "Declared",
    "InvalidObject",
    "declare",
    "declared_by",
    "drift",
    "ownership",
    "taking_over",
]

MANAGED_KINDS: tuple[Kind, ...] = (Kind.USER, Kind.ROLE, Kind.TRUSTED_CLUSTER, Kind.RESOURCE,
                                   Kind.LOCK, Kind.OIDC_CONNECTOR,
                                   Kind.GITHUB_CONNECTOR)
"""The kinds the operator pushes into Limen (Cluster is deployed, not pushed)."""


class InvalidObject(Exception):
    """The CR cannot become a Limen object; the message lists every problem."""


@dataclass(frozen=True)
class Declared:
    """What one CR declares in Limen."""

    kind: Kind
    name: str
    """The Limen name."""
    ref: str
    """``<plural>/<namespace>/<name>`` of the CR."""
    document: dict[str, Any]
    """The document sent to auth's apply."""
    resource: Resource
    """The same, validated."""

    @property
    def adopts(self) -> bool:
        return self.resource.annotations.get(ADOPT_ANNOTATION) == Origin.KUBERNETES.value


def declare(kind: Kind, body: Mapping[str, Any]) -> Declared:
    """The Limen document of a CR; :class:`InvalidObject` when it is not valid."""
    meta = body.get("metadata") or {}
    namespace, cr_name = meta.get("namespace"), str(meta.get("name") or "")
    spec = copy.deepcopy(dict(body.get("spec") or {}))
    name = limen_name(namespace, cr_name, spec)
    ref = object_ref(kind.plural, namespace, cr_name)
    problem = name_problem(name) if "name" not in spec else None
    if problem:
        raise InvalidObject(f"metadata.name: {problem}")
    annotations = {REF_ANNOTATION: ref}
    adopt = (meta.get("annotations") or {}).get(ADOPT_ANNOTATION)
    if adopt is not None:
        annotations[ADOPT_ANNOTATION] = adopt
    metadata: dict[str, Any] = {"name": name, "annotations": annotations}
    if meta.get("labels"):
        metadata["labels"] = dict(meta["labels"])
    document = {"apiVersion": API_VERSION, "kind": kind.value, "metadata": metadata,
                "spec": spec}
    try:
        [resource] = validate([SourceDocument(ref, 0, 1, document)])
    except ValidationFailed as err:
        raise InvalidObject("; ".join(f"{e.path}: {e.reason}" for e in err.errors)) from None
    return Declared(kind, resource.name, ref, document, resource)


def ownership(current: Mapping[str, Any] | None, declared: Declared) -> Check:
    """May ``declared`` write the Limen object ``current`` (None: there is none)?

    The rule of ``limen.services.plan``: a preset (origin ``preset``) is anyone's; an object
    of origin ``kubernetes`` (or none) is the operator's, unless it names another CR in
    ``limen.dev/kubernetes-object`` (a conflict); an object of another origin only with
    ``limen.dev/adopt: kubernetes``, on Limen's copy or, when Limen's copy has no adopt
    annotation, on the CR. The object this CR pushed is taken back
    that way too, unless it was explicitly handed to another origin inside Limen (``lmctl
    apply`` with ``limen.dev/adopt: api``): that is reported as ``TakenOver``."""
    if current is None:
        return Check(True, "Owned", "")
    meta = current.get("metadata") or {}
    origin = (meta.get("labels") or {}).get(ORIGIN_LABEL)
    annotations = meta.get("annotations") or {}
    stored_ref, adopt = annotations.get(REF_ANNOTATION), annotations.get(ADOPT_ANNOTATION)
    key = f"{declared.kind.value}/{declared.name}"
    kubernetes = Origin.KUBERNETES.value
    if origin == Origin.PRESET.value:  # auth's preset roles are anyone's to take over
        return Check(True, "Owned", "")
    if origin in (None, kubernetes):
        if stored_ref and stored_ref != declared.ref:
            return Check(False, "NameConflict",
                         f"{key} in Limen is declared by the Kubernetes object {stored_ref}")
        return Check(True, "Owned", "")
    if adopt == kubernetes or (adopt is None and (declared.adopts
                                                  or stored_ref == declared.ref)):
        return Check(True, "Adopted", f"{key} (origin {origin}) is adopted by annotation")
    if stored_ref == declared.ref:
        return Check(False, "TakenOver",
                     f"{key} was handed to origin {origin} inside Limen ({ADOPT_ANNOTATION}: "
                     f"{adopt}); delete this object, or remove that annotation in Limen to "
                     "give it back")
    return Check(False, "OwnedElsewhere",
                 f"{key} exists in Limen with origin {origin}; annotate this object with "
                 f"{ADOPT_ANNOTATION}: {kubernetes} to take it over")


def taking_over(current: Mapping[str, Any] | None, declared: Declared) -> dict[str, Any]:
    """The document to apply: ``declared.document``, plus ``limen.dev/adopt: kubernetes`` when
    Limen's copy has another origin (the plan only lets a source write another's object with
    it; :func:`ownership` decided it may)."""
    origin = ((current or {}).get("metadata") or {}).get("labels", {}).get(ORIGIN_LABEL)
    if current is None or origin in (None, Origin.KUBERNETES.value, Origin.PRESET.value):
        return declared.document
    document = copy.deepcopy(declared.document)
    document["metadata"]["annotations"][ADOPT_ANNOTATION] = Origin.KUBERNETES.value
    return document


def declared_by(current: Mapping[str, Any], ref: str) -> bool:
    """Is the Limen object ``current`` the one the CR ``ref`` pushed (so its deletion may
    delete it)? Objects of another origin, or declared by another CR, are not."""
    meta = current.get("metadata") or {}
    origin = (meta.get("labels") or {}).get(ORIGIN_LABEL)
    stored_ref = (meta.get("annotations") or {}).get(REF_ANNOTATION)
    return origin == Origin.KUBERNETES.value and stored_ref in (None, ref)


def drift(current: Mapping[str, Any], declared: Declared) -> list[str]:
    """The fields (``spec.allow.logins``, ``metadata.labels.env``) in which Limen's copy differs
    from what the CR declares; empty when they agree."""
    want = declared.resource.with_origin(Origin.KUBERNETES)
    have = Resource.from_document(current)
    # the adopt annotation a takeover left on Limen's copy is not drift
    return [change.path for change in diff_fields(_declared(have), _declared(want))]


def _declared(resource: Resource) -> dict[str, Any]:
    return {"metadata": {"labels": dict(resource.labels),
                         "annotations": _without_adopt(resource.annotations)},
            "spec": dict(resource.spec)}


def _without_adopt(annotations: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k != ADOPT_ANNOTATION}
