"""Resource types the Kubernetes API emulator serves, and its discovery documents.

Used by ``apiserver.py`` (the emulator) and ``fixtures.py`` (resolving
names such as ``"lmrole"`` or ``"roles.limen.dev"`` in the test helpers).

A :class:`ResourceType` is one served group/version/plural. The built-in types are the ones
Limen's operator, kopf and kubectl touch (Namespaces, Secrets, ConfigMaps, Services,
ServiceAccounts, Pods with their ``exec``, ``attach``, ``log`` and ``portforward``
subresources, Events in ``v1`` and ``events.k8s.io/v1``, Deployments, Leases,
PodDisruptionBudgets, CustomResourceDefinitions, RBAC's Roles, ClusterRoles and their
bindings) and the self reviews (``selfsubjectreviews``, ``selfsubjectaccessreviews``: create
only, never stored); custom types come from
CustomResourceDefinition objects, exactly as in a real cluster: creating a CRD object registers
its served versions.

Discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>``, ``/apis/<group>/<version>``) is
the legacy, non-aggregated format; kubectl falls back to it when the answer is plain JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ALL_VERBS",
    "BUILTIN_TYPES",
    "ResourceType",
    "Subresource",
    "api_group",
    "api_group_list",
    "api_resource_list",
    "types_from_crd",
]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_STATUS_VERBS = ("get", "patch", "update")

# Field selectors every type supports; built-in types add a few of their own.
_META_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
_EVENT_FIELDS = frozenset(
    {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    }
)


@dataclasses.dataclass(frozen=True)
class Subresource:
    """A subresource other than ``status`` (served by its own handler): ``pods/exec``."""

    name: str
    kind: str
    verbs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ResourceType:
    """One served ``group/version/plural`` with what discovery and the handlers need."""

    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    custom: bool = False  # served from a CustomResourceDefinition
    storage_version: str = ""  # the version objects are stored under ("" = this one)
    tracks_generation: bool = False  # metadata.generation bumps on spec changes
    verbs: tuple[str, ...] = ALL_VERBS
    field_labels: frozenset[str] = _META_FIELDS
    printer_columns: tuple[Mapping[str, Any], ...] = ()
    subresources: tuple[Subresource, ...] = ()

    @property
    def subresource_names(self) -> frozenset[str]:
        """Every subresource served under this type (``status`` when it has one)."""
        names = {s.name for s in self.subresources}
        return frozenset(names | {"status"} if self.status_subresource else names)

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``plural.group`` (or just ``plural`` for the core group), as in API error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def stored_as(self) -> str:
        """The version under which objects of this type are stored."""
        return self.storage_version or self.version

    def names(self) -> set[str]:
        """Every lower-case name kubectl would accept for this type (without the group)."""
        return {self.plural, self.singular, self.kind.lower(), *self.short_names}

    def discovery_entries(self) -> list[dict[str, Any]]:
        """The APIResource entries for this type (and its ``/status`` subresource)."""
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": list(_STATUS_VERBS),
                }
            )
        entries.extend(
            {
                "name": f"{self.plural}/{sub.name}",
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": sub.kind,
                "verbs": list(sub.verbs),
            }
            for sub in self.subresources
        )
        return entries


def _builtin(
    api_version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    **extra: Any,
) -> ResourceType:
    group, _, version = api_version.rpartition("/")
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        singular=kind.lower(),
        namespaced=namespaced,
        **extra,
    )


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _builtin(
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        status_subresource=True,
        verbs=tuple(v for v in ALL_VERBS if v != "deletecollection"),
        field_labels=_META_FIELDS | {"status.phase"},
    ),
    _builtin("v1", "secrets", "Secret", field_labels=_META_FIELDS | {"type"}),
    _builtin("v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _builtin(
        "v1",
        "services",
        "Service",
        short_names=("svc",),
        categories=("all",),
        status_subresource=True,
    ),
    _builtin("v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _builtin(
        "v1",
        "pods",
        "Pod",
        short_names=("po",),
        categories=("all",),
        status_subresource=True,
        field_labels=_META_FIELDS
        | {"spec.nodeName", "spec.restartPolicy", "spec.serviceAccountName", "status.phase"},
        subresources=(
            Subresource("attach", "PodAttachOptions", ("create", "get")),
            Subresource("exec", "PodExecOptions", ("create", "get")),
            Subresource("log", "Pod", ("get",)),
            Subresource("portforward", "PodPortForwardOptions", ("create", "get")),
        ),
    ),
    _builtin(
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        short_names=("pvc",),
        status_subresource=True,
    ),
    _builtin(
        "v1", "events", "Event", short_names=("ev",), field_labels=_META_FIELDS | _EVENT_FIELDS
    ),
    _builtin("events.k8s.io/v1", "events", "Event", short_names=("ev",)),
    _builtin(
        "apps/v1",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        status_subresource=True,
        tracks_generation=True,
    ),
    _builtin("coordination.k8s.io/v1", "leases", "Lease"),
    _builtin(
        "policy/v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        short_names=("pdb",),
        status_subresource=True,
        tracks_generation=True,
    ),
    _builtin("rbac.authorization.k8s.io/v1", "roles", "Role"),
    _builtin("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
    _builtin("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", namespaced=False),
    _builtin(
        "rbac.authorization.k8s.io/v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        namespaced=False,
    ),
    _builtin(
        "authentication.k8s.io/v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
        namespaced=False,
        verbs=("create",),
    ),
    _builtin(
        "authorization.k8s.io/v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        namespaced=False,
        verbs=("create",),
    ),
    _builtin(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        status_subresource=True,
        tracks_generation=True,
    ),
)


def types_from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition object, one type each.

    Raises ``ValueError`` when the CRD misses what a real API server requires (group, names,
    versions, a name equal to ``<plural>.<group>``, exactly one storage version).
    """
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    if not group or not plural or not kind:
        raise ValueError("spec.group, spec.names.plural and spec.names.kind are required")
    if (crd.get("metadata") or {}).get("name") != f"{plural}.{group}":
        raise ValueError(
            f'metadata.name must be spec.names.plural+"."+spec.group: {plural}.{group}'
        )
    versions = spec.get("versions") or []
    storage = [v["name"] for v in versions if v.get("storage")]
    if len(storage) != 1:
        raise ValueError("spec.versions must have exactly one storage version")
    return [
        ResourceType(
            group=group,
            version=v["name"],
            plural=plural,
            kind=kind,
            singular=names.get("singular") or kind.lower(),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            status_subresource=(v.get("subresources") or {}).get("status") is not None,
            custom=True,
            storage_version=storage[0],
            tracks_generation=True,
            printer_columns=tuple(v.get("additionalPrinterColumns") or ()),
        )
        for v in versions
        if v.get("served", True)
    ]


def _preferred(types: list[ResourceType]) -> str:
    stored = [t.version for t in types if t.version == t.stored_as]
    return stored[0] if stored else types[0].version


def _group_doc(group: str, types: list[ResourceType]) -> dict[str, Any]:
    versions = sorted({t.version for t in types}, reverse=True)
    preferred = _preferred(types)
    return {
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{group}/{preferred}", "version": preferred},
    }


def api_group_list(types: Iterable[ResourceType]) -> dict[str, Any]:
    """``GET /apis``: every non-core group with its served versions."""
    by_group: dict[str, list[ResourceType]] = {}
    for t in types:
        if t.group:
            by_group.setdefault(t.group, []).append(t)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_doc(g, ts) for g, ts in sorted(by_group.items())],
    }


def api_group(types: Iterable[ResourceType], group: str) -> dict[str, Any] | None:
    """``GET /apis/<group>``, or None when no type of that group is served."""
    matching = [t for t in types if t.group == group]
    if not group or not matching:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, matching)}


def api_resource_list(
    types: Iterable[ResourceType],
    group: str,
    version: str,
) -> dict[str, Any] | None:
    """``GET /api/v1`` or ``GET /apis/<group>/<version>``, or None when nothing is served there."""
    matching = sorted(
        (t for t in types if t.group == group and t.version == version),
        key=lambda t: t.plural,
    )
    if not matching:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [entry for t in matching for entry in t.discovery_entries()],
    }
