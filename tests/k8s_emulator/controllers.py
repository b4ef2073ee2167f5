"""What Kubernetes controllers do around deletions, for the API emulator's object store.

Mixed into ``store.py``'s ObjectStore (and only used there): ownerReference garbage
collection (dependents of a deleted owner are deleted, or lose the dangling reference if another
owner lives; Foreground owners wait for their dependents; Orphan deletion strips the
references), namespaces that go once their contents are gone, and CustomResourceDefinitions
whose objects register (and on deletion remove) their resource types. Real controllers do this
asynchronously; here it happens within the request, in the same order.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import ApiError
from .registry import ResourceType, types_from_crd

__all__ = ["CRDS", "Controllers", "GroupPlural", "NsName", "Obj", "meta_of", "timestamp"]

Obj = dict[str, Any]
GroupPlural = tuple[str, str]
NsName = tuple[str | None, str]
CRDS = "customresourcedefinitions.apiextensions.k8s.io"


def timestamp() -> str:
    """Now, as Kubernetes writes timestamps (RFC 3339, seconds, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


class Controllers:
    """Garbage collection, namespace and CRD lifecycles over the store's live objects."""

    types: dict[tuple[str, str, str], ResourceType]
    _live: dict[GroupPlural, dict[NsName, Obj]]
    _uids: dict[str, tuple[GroupPlural, NsName]]

    if TYPE_CHECKING:  # provided by ObjectStore

        def find_type(self, group: str, version: str, plural: str) -> ResourceType: ...
        def delete(self, rtype: ResourceType, namespace: str | None, name: str) -> Any: ...
        def _commit(
            self, event_type: str, rtype: ResourceType, obj: Obj, old: Obj | None
        ) -> Obj: ...
        def _remove(self, rtype: ResourceType, current: Obj) -> Obj: ...
        def _update(self, rtype: ResourceType, new: Obj, current: Obj) -> Obj: ...
        def _type_of(self, gp: GroupPlural) -> ResourceType: ...
        def _latest(self, rtype: ResourceType, obj: Obj) -> Obj: ...

    def _register_crd(self, crd: Obj) -> None:
        self._unregister_crd(crd, purge=False)
        for rtype in types_from_crd(crd):
            self.types[rtype.group, rtype.version, rtype.plural] = rtype

    def _unregister_crd(self, crd: Obj, *, purge: bool) -> None:
        spec = crd.get("spec") or {}
        group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
        if purge and group and plural:
            for obj in list(self._live.get((group, plural), {}).values()):
                self._drop((group, plural), obj)
        for key in [
            k for k, t in self.types.items() if t.custom and (t.group, t.plural) == (group, plural)
        ]:
            del self.types[key]

    def _drop(self, gp: GroupPlural, obj: Obj) -> None:
        self._remove(self._type_of(gp), obj)

    def _released(self, rtype: ResourceType, obj: Obj) -> bool:
        """Whether a deleting object has nothing left holding it."""
        meta = meta_of(obj)
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return False
        return not (
            rtype.group_resource == "namespaces" and self._namespace_has_contents(meta["name"])
        )

    def _namespace_has_contents(self, namespace: str) -> bool:
        return any(ns == namespace for objs in self._live.values() for (ns, _) in objs)

    def _dependents(self, uid: str) -> list[tuple[GroupPlural, Obj]]:
        return [
            (gp, obj)
            for gp, objs in self._live.items()
            for obj in objs.values()
            if any(ref.get("uid") == uid for ref in meta_of(obj).get("ownerReferences") or [])
        ]

    def _delete_all(self, targets: list[tuple[GroupPlural, Obj]]) -> None:
        for gp, obj in targets:
            meta = meta_of(obj)
            if (meta.get("namespace"), meta["name"]) in self._live.get(gp, {}):
                self.delete(self._type_of(gp), meta.get("namespace"), meta["name"])

    def _drop_owner_ref(self, gp: GroupPlural, obj: Obj, uid: str) -> None:
        rtype = self._type_of(gp)
        obj = self._latest(rtype, obj)
        new = copy.deepcopy(obj)
        refs = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences", None)
        self._commit("MODIFIED", rtype, new, obj)

    def _after_removal(self, rtype: ResourceType, gone: Obj) -> None:
        """What controllers do after an object is gone: garbage collection, foreground
        owners, terminating namespaces, removed CRDs."""
        meta = meta_of(gone)
        uid = meta["uid"]
        for dep_gp, dep in self._dependents(uid):  # background garbage collection
            owners = [r.get("uid") for r in meta_of(dep).get("ownerReferences") or []]
            if any(o in self._uids for o in owners if o != uid):
                self._drop_owner_ref(dep_gp, dep, uid)
            else:
                self._delete_all([(dep_gp, dep)])
        for ref in meta.get("ownerReferences") or []:  # owners waiting in foreground deletion
            where = self._uids.get(ref.get("uid", ""))
            owner = self._live[where[0]][where[1]] if where else None
            if (
                where
                and owner
                and "foregroundDeletion" in (meta_of(owner).get("finalizers") or [])
                and not self._dependents(meta_of(owner)["uid"])
            ):
                otype = self._type_of(where[0])
                released = copy.deepcopy(owner)
                released["metadata"]["finalizers"].remove("foregroundDeletion")
                self._update(otype, released, owner)
        namespace = meta.get("namespace")
        if namespace:  # a terminating namespace goes once empty
            ns = self._live.get(("", "namespaces"), {}).get((None, namespace))
            ns_type = self.find_type("", "v1", "namespaces")
            if ns is not None and self._released(ns_type, ns):
                self._remove(ns_type, ns)
        if rtype.group_resource == CRDS:
            self._unregister_crd(gone, purge=True)

    def _crd_status(self, crd: Obj) -> dict[str, Any]:
        try:
            types = types_from_crd(crd)
        except ValueError as e:
            raise ApiError.invalid(
                "CustomResourceDefinition", meta_of(crd).get("name", ""), str(e)
            ) from e
        conditions = [
            {
                "type": t,
                "status": "True",
                "reason": r,
                "lastTransitionTime": timestamp(),
                "message": m,
            }
            for t, r, m in (
                ("NamesAccepted", "NoConflicts", "no conflicts found"),
                ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            )
        ]
        return {
            "conditions": conditions,
            "acceptedNames": crd["spec"]["names"],
            "storedVersions": [types[0].stored_as] if types else [],
        }
