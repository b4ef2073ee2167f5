"""The object store behind the Kubernetes API emulator: what the API server does to objects.

Used by ``apiserver.py`` (HTTP requests) and, through it, by the test helpers in
``fixtures.py``. Every method is synchronous and runs on the emulator's event loop,
so each operation is atomic without locks.

Semantics kept from kube-apiserver: a global ``resourceVersion`` counter; ``uid``,
``creationTimestamp``, ``generation`` (1 on create, +1 on each change outside metadata and the
status subresource); optimistic concurrency on PUT and PATCH; the ``status`` subresource; dry
runs; finalizers and ``deletionTimestamp``; namespaces that must exist; Secrets'
``stringData``; and every change recorded for watches (``history.py``). What controllers do
after a deletion (garbage collection, namespaces, CRDs) is in ``controllers.py``. CRD schemas
are neither defaulted nor validated.
"""

from __future__ import annotations

import base64
import copy
import random
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import kmock

from .controllers import CRDS, Controllers, GroupPlural, NsName, Obj, meta_of, timestamp
from .errors import ApiError
from .history import WatchEvent, WatchHistory
from .patches import PatchError, json_patch, merge_patch
from .registry import BUILTIN_TYPES, ResourceType

__all__ = ["DEFAULT_NAMESPACES", "ObjectStore"]

Predicate = Callable[[Mapping[str, Any]], bool]

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as kube-apiserver's generateName
_NAMESPACE_MISMATCH = (
    "the namespace of the provided object does not match the namespace sent on the request"
)
_SYSTEM_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
    "managedFields",
)


def _convert_string_data(rtype: ResourceType, obj: Obj) -> None:
    """Secrets: ``stringData`` is write-only and lands base64-encoded in ``data``."""
    if rtype.group_resource == "secrets" and isinstance(obj.get("stringData"), dict):
        data = dict(obj.get("data") or {})
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def _valid_name(rtype: ResourceType, name: Any) -> bool:
    """DNS subdomains; RBAC objects take any path segment (``system:discovery``)."""
    if not isinstance(name, str) or not name or len(name) > 253:
        return False
    if rtype.group == "rbac.authorization.k8s.io":
        return name not in (".", "..") and "/" not in name and "%" not in name
    return _NAME_RE.fullmatch(name) is not None


def _spec_part(obj: Mapping[str, Any], rtype: ResourceType) -> dict[str, Any]:
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if rtype.status_subresource else set())
    return {k: v for k, v in obj.items() if k not in skip}


class ObjectStore(Controllers):
    """Live objects, resource types and watch history of one emulated cluster."""

    def __init__(self, history: kmock.ObjectsArray | None = None) -> None:
        # kmock's array keeps every version of every object (for assertions in tests);
        # the live index below is the source of truth for reads.
        self.history = history if history is not None else kmock.ObjectsArray()
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.resource_version = 0
        self._live: dict[GroupPlural, dict[NsName, Obj]] = {}
        self._uids: dict[str, tuple[GroupPlural, NsName]] = {}
        self.watch_history = WatchHistory()
        self.listeners: list[Callable[[], None]] = []  # called after every change
        for rtype in BUILTIN_TYPES:
            self.types[rtype.group, rtype.version, rtype.plural] = rtype
        namespaces = self.find_type("", "v1", "namespaces")
        for ns in DEFAULT_NAMESPACES:
            self.create(namespaces, None, {"metadata": {"name": ns}})

    # ---- types --------------------------------------------------------------------------

    def find_type(self, group: str, version: str, plural: str) -> ResourceType:
        """The served type, or 404 as kube-apiserver answers for an unknown resource."""
        rtype = self.types.get((group, version, plural))
        if rtype is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rtype

    def resolve(self, name: str) -> ResourceType:
        """A type by a kubectl-style name: plural, singular, kind or short name, optionally
        ``.group``-qualified (``roles.limen.dev``); the storage version is preferred. A name
        both a built-in group and one CRD use (``roles``: RBAC's and ``roles.limen.dev``)
        means the CRD's (qualify it for the other: ``roles.rbac.authorization.k8s.io``)."""
        name = name.lower()
        found = [
            t
            for t in self.types.values()
            if name in t.names() or any(name == f"{n}.{t.group}" for n in t.names())
        ]
        found.sort(key=lambda t: (t.group != "", not t.custom, t.version != t.stored_as))
        groups = {t.group for t in found}
        custom_groups = {t.group for t in found if t.custom}
        if not found or (len(groups) > 1 and "" not in groups and len(custom_groups) != 1):
            raise KeyError(f"no single resource type named {name!r}: {sorted(groups)}")
        return found[0]

    # ---- reads --------------------------------------------------------------------------

    def present(self, obj: Obj, rtype: ResourceType) -> Obj:
        """The object as served under ``rtype``'s version (no conversion beyond apiVersion)."""
        if obj.get("apiVersion") == rtype.api_version:
            return obj
        return {**obj, "apiVersion": rtype.api_version}

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._live.get((rtype.group, rtype.plural), {}).get(
            (self._ns(rtype, namespace), name)
        )
        if obj is None:
            raise ApiError.not_found(rtype.group_resource, name)
        return obj

    def list(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: Predicate | None = None,
        fields: Predicate | None = None,
    ) -> list[Obj]:
        """Matching objects sorted by namespace and name (as etcd returns them)."""
        objs = self._live.get((rtype.group, rtype.plural), {})
        return [
            obj
            for (ns, _), obj in sorted(objs.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
            if (namespace is None or ns == namespace)
            and (labels is None or labels(obj))
            and (fields is None or fields(obj))
        ]

    # ---- writes -------------------------------------------------------------------------

    def create(
        self, rtype: ResourceType, namespace: str | None, body: Any, *, dry_run: bool = False
    ) -> Obj:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        self._check_type_fields(obj, rtype)
        _convert_string_data(rtype, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError.bad_request("metadata must be an object")
        if rtype.namespaced:
            namespace = namespace or meta.get("namespace")
            if meta.get("namespace", namespace) != namespace:
                raise ApiError.bad_request(_NAMESPACE_MISMATCH)
            if not namespace:
                raise ApiError.bad_request("a namespace is required for a namespaced resource")
            meta["namespace"] = namespace
            self._check_namespace_open(namespace)
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise ApiError(
                500, "InternalError", "resourceVersion should not be set on objects to be created"
            )
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError.invalid(
                    rtype.kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                )
            for _ in range(10):
                suffix = "".join(random.choice(_SUFFIX_ALPHABET) for _ in range(5))
                meta["name"] = meta["generateName"][:58] + suffix
                if (namespace, meta["name"]) not in self._live.get((rtype.group, rtype.plural), {}):
                    break
        name = meta["name"]
        if not _valid_name(rtype, name):
            raise ApiError.invalid(
                rtype.kind,
                str(name),
                f'metadata.name: Invalid value: "{name}": '
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.'",
            )
        if (self._ns(rtype, namespace), name) in self._live.get((rtype.group, rtype.plural), {}):
            raise ApiError.already_exists(rtype.group_resource, name)
        for field in _SYSTEM_META:
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=timestamp())
        if rtype.tracks_generation:
            meta["generation"] = 1
        if rtype.status_subresource:
            obj.pop("status", None)
        if rtype.group_resource == "namespaces":
            obj["status"] = {"phase": "Active"}
        if rtype.group_resource == "pods":
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        if rtype.group_resource == CRDS:
            obj["status"] = self._crd_status(obj)
        if dry_run:
            return obj
        return self._commit("ADDED", rtype, obj, None)

    def update(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """PUT: replace the object (or only its status) with optimistic concurrency."""
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        new = copy.deepcopy(body)
        self._check_type_fields(new, rtype)
        meta = meta_of(new)
        if meta.get("name", name) != name:
            raise ApiError.bad_request(
                f"the name of the object ({meta.get('name')}) does not match "
                f"the name on the URL ({name})"
            )
        if rtype.namespaced and meta.get("namespace", namespace) != namespace:
            raise ApiError.bad_request(_NAMESPACE_MISMATCH)
        current = self.get(rtype, namespace, name)
        if not meta.get("resourceVersion") and rtype.custom:
            raise ApiError.invalid(
                rtype.kind,
                name,
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            )
        return self._replace(rtype, current, new, subresource=subresource, dry_run=dry_run)

    def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        patch: Any,
        patch_type: str,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """PATCH with ``merge`` (also used for strategic merge) or ``json`` patches."""
        current = self.get(rtype, namespace, name)
        try:
            if patch_type == "json":
                new = json_patch(current, patch)
            else:
                if not isinstance(patch, dict):
                    raise ApiError.bad_request("a merge patch must be a JSON object")
                new = merge_patch(copy.deepcopy(current), patch)
        except PatchError as e:
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {e}",
            ) from e
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patched object is not a JSON object")
        meta, cmeta = meta_of(new), meta_of(current)
        for field in ("name", "namespace"):
            if meta.get(field) != cmeta.get(field):
                raise ApiError.invalid(rtype.kind, name, f"metadata.{field}: field is immutable")
        return self._replace(rtype, current, new, subresource=subresource, dry_run=dry_run)

    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        preconditions: Mapping[str, Any] | None = None,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """DELETE: returns the object and whether it is gone (False while finalizers hold it)."""
        current = self.get(rtype, namespace, name)
        meta = meta_of(current)
        for field in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(field)
            if wanted and wanted != meta.get(field):
                raise ApiError.conflict(
                    rtype.group_resource,
                    name,
                    f"Precondition failed: {field} in precondition: {wanted}, "
                    f"{field} in object meta: {meta.get(field)}",
                )
        if propagation not in (None, "Background", "Foreground", "Orphan"):
            raise ApiError.bad_request(f"unsupported propagationPolicy: {propagation}")
        if meta.get("deletionTimestamp"):
            return current, False
        finalizers = list(meta.get("finalizers") or [])
        dependents = (
            self._dependents(meta["uid"]) if propagation in ("Foreground", "Orphan") else []
        )
        if propagation == "Foreground" and dependents:
            finalizers.append("foregroundDeletion")
        contents = rtype.group_resource == "namespaces" and self._namespace_has_contents(name)
        if dry_run:
            return current, not (finalizers or contents)
        if propagation == "Orphan":
            for dep_gp, dep in dependents:
                self._drop_owner_ref(dep_gp, dep, meta["uid"])
        if not finalizers and not contents:
            return self._remove(rtype, current), True
        marked = copy.deepcopy(current)
        marked["metadata"].update(deletionTimestamp=timestamp(), deletionGracePeriodSeconds=0)
        if finalizers:
            marked["metadata"]["finalizers"] = finalizers
        if rtype.group_resource == "namespaces":
            marked["status"] = {"phase": "Terminating"}
        committed = self._commit("MODIFIED", rtype, marked, current)
        if propagation == "Foreground":
            self._delete_all(dependents)
        if contents:
            self._delete_all(
                [
                    (gp, o)
                    for gp, objs in self._live.items()
                    for (ns, _), o in objs.items()
                    if ns == name
                ]
            )
        latest = self._latest(rtype, committed)
        return latest, latest is not self._live.get((rtype.group, rtype.plural), {}).get(
            (meta.get("namespace"), name)
        )

    def delete_collection(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: Predicate | None = None,
        fields: Predicate | None = None,
        *,
        propagation: str | None = None,
        dry_run: bool = False,
    ) -> list[Obj]:
        result = []
        for obj in self.list(rtype, namespace, labels, fields):
            meta = meta_of(obj)
            if self._live.get((rtype.group, rtype.plural), {}).get(
                (meta.get("namespace"), meta["name"])
            ):
                result.append(
                    self.delete(
                        rtype,
                        meta.get("namespace"),
                        meta["name"],
                        propagation=propagation,
                        dry_run=dry_run,
                    )[0]
                )
        return result

    # ---- internals ----------------------------------------------------------------------

    def _ns(self, rtype: ResourceType, namespace: str | None) -> str | None:
        return namespace if rtype.namespaced else None

    def _check_type_fields(self, obj: Obj, rtype: ResourceType) -> None:
        for field, expected in (("apiVersion", rtype.api_version), ("kind", rtype.kind)):
            if obj.get(field) not in (None, expected):
                raise ApiError.bad_request(
                    f"the {field} in the data ({obj.get(field)}) does not match "
                    f"the expected {field} ({expected})"
                )
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind

    def _check_namespace_open(self, namespace: str) -> None:
        ns = self._live.get(("", "namespaces"), {}).get((None, namespace))
        if ns is None:
            raise ApiError.not_found("namespaces", namespace)
        if meta_of(ns).get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} "
                "because it is being terminated",
            )

    def _replace(
        self, rtype: ResourceType, current: Obj, new: Obj, *, subresource: str | None, dry_run: bool
    ) -> Obj:
        cmeta, name = meta_of(current), meta_of(current)["name"]
        wanted_rv = meta_of(new).get("resourceVersion")
        if wanted_rv and wanted_rv != cmeta["resourceVersion"]:
            raise ApiError.conflict(rtype.group_resource, name)
        if subresource == "status":
            result = copy.deepcopy(current)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = new
            result["apiVersion"], result["kind"] = current["apiVersion"], current["kind"]
            _convert_string_data(rtype, result)
            meta = result.setdefault("metadata", {})
            for field in (*_SYSTEM_META, "name", "namespace"):
                if field in cmeta:
                    meta[field] = cmeta[field]
                else:
                    meta.pop(field, None)
            if rtype.status_subresource:
                if "status" in current:
                    result["status"] = current["status"]
                else:
                    result.pop("status", None)
            added = set(meta.get("finalizers") or []) - set(cmeta.get("finalizers") or [])
            if cmeta.get("deletionTimestamp") and added:
                raise ApiError.invalid(
                    rtype.kind,
                    name,
                    "metadata.finalizers: Forbidden: "
                    "no new finalizers can be added if the object is being deleted",
                )
            if rtype.tracks_generation and _spec_part(result, rtype) != _spec_part(current, rtype):
                meta["generation"] = cmeta.get("generation", 0) + 1
        if result == current or dry_run:
            return current if result == current else result
        if rtype.group_resource == CRDS:
            self._crd_status(result)  # validates before anything is stored
        committed = self._update(rtype, result, current)
        if rtype.group_resource == CRDS and committed is result:
            self._register_crd(committed)
        return committed

    def _update(self, rtype: ResourceType, new: Obj, current: Obj) -> Obj:
        """Store an update; one that empties the finalizers of a deleting object deletes it
        instead (as kube-apiserver does: a DELETED event, no MODIFIED one)."""
        if self._released(rtype, new):
            return self._remove(rtype, current)
        return self._commit("MODIFIED", rtype, new, current)

    def _commit(self, event_type: str, rtype: ResourceType, obj: Obj, old: Obj | None) -> Obj:
        """Store a new version of ``obj`` (or its deletion) under the next resourceVersion."""
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        gp = (rtype.group, rtype.plural)
        meta = obj["metadata"]
        key = (
            kmock.resource(rtype.group, rtype.stored_as, rtype.plural),
            meta.get("namespace"),
            meta["name"],
        )
        live = self._live.setdefault(gp, {})
        if event_type == "DELETED":
            live.pop((meta.get("namespace"), meta["name"]), None)
            self._uids.pop(meta["uid"], None)
            self.history[key].delete()
        else:
            live[meta.get("namespace"), meta["name"]] = obj
            self._uids[meta["uid"]] = (gp, (meta.get("namespace"), meta["name"]))
            if key in self.history:
                self.history[key].create(obj)
            else:
                self.history[key] = obj
        self.watch_history.append(WatchEvent(self.resource_version, event_type, gp, obj, old))
        if event_type == "ADDED" and rtype.group_resource == CRDS:
            self._register_crd(obj)
        for listener in self.listeners:
            listener()
        return obj

    def _type_of(self, gp: GroupPlural) -> ResourceType:
        return next(
            t for t in self.types.values() if (t.group, t.plural) == gp and t.version == t.stored_as
        )

    def _latest(self, rtype: ResourceType, obj: Obj) -> Obj:
        meta = meta_of(obj)
        return self._live.get((rtype.group, rtype.plural), {}).get(
            (meta.get("namespace"), meta["name"]), obj
        )

    def _remove(self, rtype: ResourceType, current: Obj) -> Obj:
        gone = copy.deepcopy(current)
        gone = self._commit("DELETED", rtype, gone, current)
        self._after_removal(rtype, gone)
        return gone
