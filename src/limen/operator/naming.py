"""How a custom resource is named in Limen, and which object wins when several claim a name.

Limen names are global per kind; Kubernetes names are per namespace. The Limen name of a
User, Role, TrustedCluster or Resource object is::

    spec.name                  when set (e-mail user names: Kubernetes names cannot hold '@')
    <namespace>.<metadata.name> otherwise

The derived form never collides: a namespace is a DNS label (no dots), so the first dot
separates the two parts and different objects give different names. ``spec.name`` is chosen by
people and can collide, with another ``spec.name`` or a derived name: then the oldest object
(creationTimestamp, then namespace/name) keeps the name and the others report ``Owned=False``
with reason ``NameConflict``. Across operators and after restarts, the Limen object itself
records which Kubernetes object declared it (annotation ``limen.dev/kubernetes-object``).

Pure code; called by ``limen.operator.documents`` and ``limen.operator.resource_handlers``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from limen.api.resources import API_GROUP, NAME_PATTERN

__all__ = ["REF_ANNOTATION", "Claim", "limen_name", "name_problem", "object_ref", "winner"]

REF_ANNOTATION = f"{API_GROUP}/kubernetes-object"
"""On a Limen object pushed by the operator: ``<plural>/<namespace>/<name>`` of its source."""


def limen_name(namespace: str | None, name: str, spec: Mapping[str, Any] | None) -> str:
    """The object's name in Limen (see the module docstring)."""
    chosen = (spec or {}).get("name")
    if isinstance(chosen, str) and chosen:
        return chosen
    return f"{namespace}.{name}" if namespace else name


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Limen name, or None when it can."""
    if len(name) > 253:
        return (f"the Limen name {name[:40]}... is {len(name)} characters long (at most 253): "
                "set a shorter spec.name")
    if not NAME_PATTERN.fullmatch(name):
        return (f"{name!r} is not a valid Limen name (lowercase letters, digits, '.', '-', '_' "
                "and '@', starting and ending with a letter or digit)")
    return None


def object_ref(plural: str, namespace: str | None, name: str) -> str:
    """The value of :data:`REF_ANNOTATION` for a Kubernetes object."""
    return f"{plural}/{namespace or ''}/{name}"


@dataclass(frozen=True, order=True)
class Claim:
    """One Kubernetes object claiming a Limen name; ordering = precedence (oldest first)."""

    created: str
    """metadata.creationTimestamp (RFC 3339, UTC: sorts as text)."""
    namespace: str
    name: str
    uid: str = ""

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Claim:
        meta = body.get("metadata") or {}
        return cls(str(meta.get("creationTimestamp") or ""), str(meta.get("namespace") or ""),
                   str(meta.get("name") or ""), str(meta.get("uid") or ""))

    def describe(self) -> str:
        return f"{self.namespace}/{self.name}"


def winner(claims: Iterable[Claim]) -> Claim | None:
    """The claim that keeps the name: the oldest object (ties broken by namespace/name)."""
    return min(claims, default=None)
