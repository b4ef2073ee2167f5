"""Root side of trusted clusters after the handshake: the leaves' connection status and nodes.

::

    leaf proxy ──cluster link──▶ root proxy ──POST /v1/remoteclusters/heartbeat──▶ here
                 heartbeat {nodes}          {cluster, tunnel, nodes}
                                            RemoteCluster.spec: connection online,
                                            last_heartbeat, tunnel; the node list kept under
                                            /presence/clusters/<leaf> for REMOTE_TTL seconds
                 link lost ─────────────────▶ POST /v1/remoteclusters/{name}/offline

A leaf is *online* while its RemoteCluster says so AND its last heartbeat is younger than
:data:`REMOTE_TTL` (a root proxy that died cannot leave a leaf online forever). Transitions are
audited (``remote_cluster.online`` / ``remote_cluster.offline``). A heartbeat for a leaf
without a RemoteCluster (removed by an admin) is :class:`NotFound`, and the proxy drops the link.

Users see a leaf (``lmsh clusters``, ``lmsh ls --cluster``) when their roles'
``cluster_labels`` allow its labels (Teleport's CheckAccessToRemoteCluster). The node list is
the one the leaf publishes in its heartbeats (names and labels): the root cannot evaluate the
leaf's roles, so ``logins`` stays empty and the leaf decides at connection time. Called by
``limen.auth.http.trust_root``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from limen.api.resources import Kind, Resource
from limen.auth.authorities import ca_resource_name
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.wire import TRUST_LABEL, TRUST_REMOTE
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity
from limen.errors import CompareFailed, NotFound
from limen.rbac.roleset import RoleSet

__all__ = [
    "NODES_PREFIX",
    "REMOTE_TTL",
    "cluster_heartbeat",
    "cluster_nodes",
    "cluster_offline",
    "connection_of",
    "visible_clusters",
]

NODES_PREFIX = "/presence/clusters/"
REMOTE_TTL = 35.0
"""Seconds a leaf's heartbeat keeps it online (three missed heartbeats and a margin)."""
_RETRIES = 5


def connection_of(remote: Resource, now: datetime) -> str:
    """``online`` or ``offline`` (see the module doc)."""
    spec = remote.spec
    if spec.get("connection") != "online" or not isinstance(spec.get("last_heartbeat"), str):
        return "offline"
    try:
        seen = datetime.fromisoformat(spec["last_heartbeat"])
    except ValueError:
        return "offline"
    return "online" if (now - seen).total_seconds() < REMOTE_TTL else "offline"


async def _set_status(auth: AuthServer, cluster: str, **spec: Any) -> tuple[Resource, str]:
    """Write ``spec`` fields of RemoteCluster ``cluster``; returns it and its previous
    connection. :class:`NotFound` when the leaf is not (or no longer) admitted here."""
    for _attempt in range(_RETRIES):
        remote = await auth.store.get(Kind.REMOTE_CLUSTER, cluster)
        before = connection_of(remote, auth.now())
        try:
            updated = await auth.store.update(remote.replace(spec={**remote.spec, **spec}))
        except CompareFailed:
            continue
        return updated, before
    raise CompareFailed(f"RemoteCluster {cluster!r} changed {_RETRIES} times in a row")


async def cluster_heartbeat(auth: AuthServer, cluster: str, tunnel: str,
                            nodes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Record a heartbeat of leaf ``cluster`` relayed by proxy ``tunnel``."""
    now = auth.now()
    remote, before = await _set_status(auth, cluster, connection="online",
                                       last_heartbeat=now.isoformat(), tunnel=tunnel)
    await auth.backend.put(NODES_PREFIX + cluster, json.dumps(list(nodes)).encode(),
                           expires=auth.clock() + REMOTE_TTL)
    if before != "online":
        await auth.emit("remote_cluster.online", remote_cluster=cluster, proxy=tunnel,
                        nodes=len(nodes))
    return {"name": cluster, "connection": connection_of(remote, now)}


async def cluster_offline(auth: AuthServer, cluster: str, tunnel: str) -> dict[str, Any]:
    """Leaf ``cluster``'s link to proxy ``tunnel`` is gone (ignored when another proxy holds
    the leaf's link now)."""
    remote = await auth.store.get(Kind.REMOTE_CLUSTER, cluster)
    if remote.spec.get("tunnel") not in (None, "", tunnel):
        return {"name": cluster, "connection": connection_of(remote, auth.now())}
    _updated, before = await _set_status(auth, cluster, connection="offline")
    await auth.backend.delete(NODES_PREFIX + cluster)
    if before == "online":
        await auth.emit("remote_cluster.offline", remote_cluster=cluster, proxy=tunnel)
    return {"name": cluster, "connection": "offline"}


def _allowed(role_set: RoleSet | None, remote: Resource) -> bool:
    return role_set is None or role_set.check_cluster(dict(remote.labels)).allowed


async def visible_clusters(auth: AuthServer, identity: Identity,
                           role_set: RoleSet | None) -> list[dict[str, Any]]:
    """The leaves ``identity`` may see (``role_set`` None: an admin sees all), with their
    status and host CA keys (``lmsh`` writes them to known_hosts for ``*.<leaf>``)."""
    now = auth.now()
    out = []
    for remote in await auth.store.list(Kind.REMOTE_CLUSTER):
        if not _allowed(role_set, remote):
            continue
        host_ca = await auth.store.find(Kind.CERT_AUTHORITY,
                                        ca_resource_name(CertAuthorityType.HOST, remote.name))
        keys: list[str] = []
        if host_ca is not None and host_ca.labels.get(TRUST_LABEL) == TRUST_REMOTE \
                and not host_ca.spec.get("disabled"):
            keys = list(CertAuthority.from_dict(host_ca.spec).ssh_public_keys())
        out.append({"name": remote.name, "labels": dict(remote.labels),
                    "connection": connection_of(remote, now),
                    "last_heartbeat": remote.spec.get("last_heartbeat"),
                    "host_ca_keys": keys})
    return sorted(out, key=lambda c: c["name"])


async def cluster_nodes(auth: AuthServer, identity: Identity, role_set: RoleSet | None,
                        cluster: str) -> list[dict[str, Any]]:
    """The nodes leaf ``cluster`` published, for a user allowed to see the leaf (otherwise
    :class:`NotFound`, exactly like a leaf that does not exist)."""
    remote = await auth.store.find(Kind.REMOTE_CLUSTER, cluster)
    if remote is None or not _allowed(role_set, remote):
        raise NotFound(f"no cluster named {cluster!r} is reachable from here")
    item = await auth.backend.get(NODES_PREFIX + cluster)
    try:
        nodes = json.loads(item.value) if item is not None else []
    except ValueError:
        nodes = []
    return sorted(({"name": str(n.get("name", "")), "hostname": str(n.get("hostname") or
                                                                    n.get("name", "")),
                    "host_id": str(n.get("host_id", "")), "labels": dict(n.get("labels") or {}),
                    "address": "", "cluster": cluster, "online": True, "logins": []}
                   for n in nodes if isinstance(n, Mapping)),
                  key=lambda n: (n["hostname"], n["host_id"]))
