"""Server-side printing (``meta.k8s.io/v1`` Table) for ``kubectl get`` against the emulator.

Used by ``apiserver.py`` when a GET asks for ``as=Table`` in its Accept header, as
kubectl does. Columns are NAME, the CRD's ``additionalPrinterColumns`` (a JSONPath subset:
``.a.b``, ``[n]``, ``[*]`` and ``[?(@.key=="value")]``; ``date`` columns become ages) and, for
types without printer columns, AGE. Pods print NAME, READY, STATUS, RESTARTS and AGE as from
a real server; other built-in types print NAME and AGE only.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

from .registry import ResourceType

__all__ = ["jsonpath", "table"]

_STEP = re.compile(
    r'\.([A-Za-z0-9_-]+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*["\']([^"\']*)["\']\)\]'
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Every value at ``path`` (the subset kubectl printer columns use)."""
    nodes, position = [obj], 0
    while position < len(path):
        m = _STEP.match(path, position)
        if m is None:
            raise ValueError(f"unsupported JSONPath: {path!r}")
        position = m.end()
        key, index, filter_key, filter_value = m.groups()
        found: list[Any] = []
        for node in nodes:
            if key is not None and isinstance(node, Mapping) and key in node:
                found.append(node[key])
            elif index == "*" and isinstance(node, list):
                found.extend(node)
            elif (
                index is not None
                and index != "*"
                and isinstance(node, list)
                and int(index) < len(node)
            ):
                found.append(node[int(index)])
            elif filter_key is not None and isinstance(node, list):
                found.extend(
                    item
                    for item in node
                    if [str(v) for v in jsonpath(item, "." + filter_key)[:1]] == [filter_value]
                )
        nodes = found
    return nodes


def _age(timestamp: Any) -> str:
    try:
        then = datetime.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    seconds = max(0, int((datetime.datetime.now(datetime.UTC) - then).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{days}d"


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
# Pods print as kubectl shows them from a real server; "computed" cells come from _pod_cell
_POD_COLUMNS = (
    {"name": "Ready", "type": "string", "computed": "ready"},
    {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Restarts", "type": "string", "computed": "restarts"},
    _AGE,
)


def _pod_cell(obj: Mapping[str, Any], what: str) -> str:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    if what == "restarts":
        return str(sum(int(s.get("restartCount") or 0) for s in statuses))
    containers = (obj.get("spec") or {}).get("containers") or []
    return f"{sum(1 for s in statuses if s.get('ready'))}/{len(containers)}"


def table(
    rtype: ResourceType, objs: list[dict[str, Any]], resource_version: str, include_object: bool
) -> dict[str, Any]:
    """The Table kubectl prints for ``objs``."""
    columns: list[Mapping[str, Any]] = list(rtype.printer_columns) or [_AGE]
    if rtype.group_resource == "pods":
        columns = list(_POD_COLUMNS)
    definitions = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "priority": 0,
            "description": "Name must be unique within a namespace.",
        }
    ]
    definitions += [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]
    rows = []
    for obj in objs:
        cells: list[Any] = [obj["metadata"]["name"]]
        for column in columns:
            if "computed" in column:
                cells.append(_pod_cell(obj, column["computed"]))
                continue
            values = jsonpath(obj, column["jsonPath"])
            value = values[0] if values else None
            cells.append(
                _age(value) if value is not None and column.get("type") == "date" else value
            )
        partial = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        }
        rows.append({"cells": cells, "object": obj if include_object else partial})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }
