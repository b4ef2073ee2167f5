"""The inventory file of an access review: what a cluster holds, without its secrets.

``lmctl inventory export`` writes it (:func:`inventory_document`); ``lmctl gitops plan
--access --inventory FILE`` reads it back (:func:`read_inventory`), so a pull-request check
needs the repository and this file only, no network access to the cluster. It holds users
(name, labels, roles and traits only), roles, Resources (ssh, db, kube, app), trusted and
remote (leaf) clusters, and the heartbeated nodes with their last labels (dynamic labels
included)::

    kind: Inventory
    version: 1
    objects: [User, Role, Resource, TrustedCluster, RemoteCluster documents]
    nodes: [{hostname, host_id, name, labels}]

Called by ``limen.cli.lmctl_inventory`` and ``limen.cli.lmctl_gitops``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from limen.api.resources import Kind, Resource
from limen.errors import BadParameter
from limen.gitops.access_diff import node_targets
from limen.rbac.access_index import Target

__all__ = ["INVENTORY_KINDS", "inventory_document", "read_inventory"]

INVENTORY_KINDS = (Kind.USER, Kind.ROLE, Kind.RESOURCE, Kind.TRUSTED_CLUSTER,
                   Kind.REMOTE_CLUSTER)
_NODE_FIELDS = ("hostname", "host_id", "name", "labels")


def _public(resource: Resource) -> dict[str, Any]:
    doc = resource.to_document(with_status=False)
    if resource.kind is Kind.USER:  # what access depends on, nothing else
        doc["spec"] = {k: v for k, v in resource.spec.items() if k in ("roles", "traits")}
    meta = doc.get("metadata", {})
    doc["metadata"] = {k: v for k, v in meta.items() if k in ("name", "labels")}
    return doc


def inventory_document(objects: Iterable[Resource],
                       nodes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The inventory of ``objects`` (other kinds are left out) and node rows."""
    kept = sorted((r for r in objects if r.kind in INVENTORY_KINDS),
                  key=lambda r: (r.kind.value, r.name))
    return {
        "kind": "Inventory", "version": 1,
        "objects": [_public(r) for r in kept],
        "nodes": [{k: row.get(k) for k in _NODE_FIELDS}
                  for row in sorted(nodes, key=lambda r: (str(r.get("hostname")),
                                                          str(r.get("host_id"))))],
    }


def _json_or_yaml(text: str) -> Any:
    # JSON (what -o json writes) parses 100 times faster with json than with a YAML parser.
    try:
        return json.loads(text)
    except ValueError:
        return yaml.safe_load(text)


def read_inventory(path: Path) -> tuple[list[Resource], list[Target]]:
    """The objects and the node targets of an inventory file (JSON or YAML)."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = _json_or_yaml(text)
    except (OSError, yaml.YAMLError) as err:
        raise BadParameter(f"cannot read the inventory {path}: {err}") from None
    if not isinstance(raw, Mapping) or raw.get("kind") != "Inventory":
        raise BadParameter(f"{path} is not an inventory (lmctl inventory export writes one)")
    if raw.get("version") != 1:
        raise BadParameter(f"{path}: inventory version {raw.get('version')!r} is not 1")
    try:
        objects = [Resource.from_document(doc) for doc in raw.get("objects") or []]
    except (KeyError, TypeError, ValueError) as err:
        raise BadParameter(f"{path}: an object is malformed: {err}") from None
    rows = raw.get("nodes") or []
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise BadParameter(f"{path}: nodes must be a list of maps")
    return objects, node_targets(rows)
