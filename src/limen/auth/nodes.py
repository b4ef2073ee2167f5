"""The SSH nodes a user may reach, with the logins allowed on each (``lmsh ls``).

Nodes are the agents online (presence records from heartbeats) plus agentless OpenSSH servers
declared as Resources with ``spec.kind: ssh`` and an address. A node is listed when at least one
of the identity's logins is allowed on its labels (deny rules included), exactly the question
the node agent asks when a session starts. Called by ``limen.auth.http.user``.
"""

from __future__ import annotations

from typing import Any

from limen.api.resources import Kind, Resource
from limen.auth.core import AuthServer
from limen.auth.presence import presence
from limen.ca.identity import Identity
from limen.rbac.roleset import RoleSet

__all__ = ["visible_nodes"]


def _entry(resource: Resource, *, host_id: str, online: bool) -> dict[str, Any]:
    return {
        "name": resource.name, "host_id": host_id,
        "hostname": str(resource.spec.get("hostname") or resource.name),
        "address": str(resource.spec.get("address", "")), "labels": dict(resource.labels),
        "agentless": not host_id, "online": online,
    }


async def visible_nodes(auth: AuthServer, identity: Identity,
                        role_set: RoleSet | None) -> list[dict[str, Any]]:
    """Every node ``identity`` may log in to, with ``logins`` allowed there.
    ``role_set`` is None for admins, who see every node (with no logins)."""
    candidates: list[dict[str, Any]] = []
    for record in await presence(auth):
        resource = Resource.from_document(record["resource"])
        candidates.append(_entry(resource, host_id=str(record["host_id"]), online=True))
    for resource in await auth.store.list(Kind.RESOURCE):
        if resource.spec.get("kind") == "ssh" and resource.spec.get("address"):
            candidates.append(_entry(resource, host_id="", online=True))
    visible = []
    for node in candidates:
        if role_set is None:
            visible.append({**node, "logins": []})
            continue
        logins = [login for login in identity.logins
                  if role_set.check_ssh(node["labels"], login, mfa_verified=True).allowed]
        if logins:
            visible.append({**node, "logins": logins})
    return sorted(visible, key=lambda n: (n["hostname"], n["host_id"]))
