"""Heartbeated nodes for administrators: ``lmctl nodes ls`` and ``lmctl access check USER
node/NAME``.

A node is an agent online (a presence record, see ``limen.auth.presence``), named by its
hostname or its host id. Two agents may share a hostname: then the hostname is ambiguous and
the answer lists their host ids, to be named instead. Called by ``limen.auth.http.admin`` and by
``limen.cli.admin_local`` (offline ``lmctl``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from limen.api.resources import Resource
from limen.auth.presence import PRESENCE_TTL, presence
from limen.errors import BadParameter, NotFound

if TYPE_CHECKING:  # imported by lmctl and the auth API alike: the server only for types
    from limen.auth.core import AuthServer

__all__ = ["is_node_kind", "list_nodes", "node_row", "resolve_node"]


def node_row(record: dict[str, Any]) -> dict[str, Any]:
    """One line of ``lmctl nodes ls`` from a presence record."""
    resource = Resource.from_document(record["resource"])
    return {
        "hostname": str(resource.spec.get("hostname") or resource.name),
        "host_id": str(record.get("host_id", "")), "name": resource.name,
        "address": str(resource.spec.get("address") or ""),
        "tunnel": bool(record.get("tunnel")), "labels": dict(resource.labels),
        "updated": str(record.get("updated", "")),
    }


async def list_nodes(auth: AuthServer) -> list[dict[str, Any]]:
    rows = [node_row(record) for record in await presence(auth)]
    return sorted(rows, key=lambda r: (r["hostname"], r["host_id"]))


async def resolve_node(auth: AuthServer, name: str) -> Resource:
    """The Resource a heartbeated node announced, by host id or hostname."""
    records = await presence(auth)
    by_id = [r for r in records if str(r.get("host_id")) == name]
    if by_id:
        return Resource.from_document(by_id[0]["resource"])
    matches = [r for r in records if node_row(r)["hostname"] == name
               or Resource.from_document(r["resource"]).name == name]
    if len(matches) > 1:
        ids = ", ".join(sorted(str(r.get("host_id")) for r in matches))
        raise BadParameter(f"node name {name!r} is ambiguous: {len(matches)} nodes online have "
                           f"it (host ids {ids}); name one as node/<host id>")
    if not matches:
        raise NotFound(f"node {name!r} is not online (no heartbeat in the last "
                       f"{int(PRESENCE_TTL)} s); `lmctl nodes ls` lists the nodes online")
    return Resource.from_document(matches[0]["resource"])


def is_node_kind(kind: str) -> bool:
    """``node``/``nodes``: heartbeated nodes, which are not a stored kind."""
    return kind.strip().lower() in ("node", "nodes")



