"""The resources agents serve right now, by name: the presence records (``limen.auth.presence``,
one per serving agent) under one prefix grouped by the Resource's name, the freshest
heartbeat's document first. Called by :mod:`limen.auth.db_access` (databases) and
:mod:`limen.auth.kube_access` (kube clusters), which add their kind's fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from limen.auth import presence

if TYPE_CHECKING:
    from limen.auth.core import AuthServer

__all__ = ["OnlineResource", "online_resources"]


@dataclass(frozen=True)
class OnlineResource:
    name: str
    resource: dict[str, Any]
    """The Resource document of the freshest heartbeat (labels, spec)."""
    host_ids: tuple[str, ...]
    """The agents serving it."""

    @property
    def labels(self) -> dict[str, str]:
        raw = (self.resource.get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in raw.items()}

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.resource.get("spec") or {})


R = TypeVar("R", bound=OnlineResource)


async def online_resources(auth: AuthServer, prefix: str, kind: type[R]) -> dict[str, R]:
    """Every resource some agent heartbeats now under ``prefix``, by name, as ``kind``."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for record in await presence.presence(auth, prefix):
        name = ((record.get("resource") or {}).get("metadata") or {}).get("name")
        if isinstance(name, str):
            by_name.setdefault(name, []).append(record)
    out: dict[str, R] = {}
    for name, items in by_name.items():
        items.sort(key=lambda r: str(r.get("updated", "")), reverse=True)
        out[name] = kind(name, dict(items[0]["resource"]),
                         tuple(str(r.get("host_id", "")) for r in items))
    return out
