"""Where an SSH target lives: turn what the user typed into exactly one node.

Inputs, merged by :func:`collect_nodes`:

* agents connected to THIS proxy's tunnel server (the registry: host id, certificate hostname,
  labels and address from the last heartbeat) — reachable;
* presence records from auth (agents connected to other proxies only, ``tunnels``) — known,
  not reachable here (agents keep a tunnel to every proxy, so that is a transient state);
* declared ``Resource`` objects with ``spec.kind: ssh`` and ``spec.address`` — agentless OpenSSH
  nodes, dialled directly over TCP.

:func:`resolve` matches, first tier that matches anything wins (more than one node in that tier
is an ambiguity error, never a guess):

====  ====================================  ==============================================
tier  the user typed                        matches
====  ====================================  ==============================================
1     ``env=dev`` / ``env=dev,team=core``   nodes carrying every label
2     ``<host_id>`` / ``<host_id>.<cluster>``  that agent
3     ``web1``                              certificate hostname (agents), resource name
                                            and ``spec.hostname`` (agentless)
4     ``10.0.0.5`` + port 22                a node whose ``spec.address`` is that host:port
====  ====================================  ==============================================

The port the user gave only matters for tier 4; a node found by name is reached at its own
address (agentless) or through its tunnel (agents). The caller filters the nodes the user may
see before resolving, so a hidden node answers exactly like an unknown one.

The errors are what the user reads (``lmsh ssh`` prints them after ``lmsh:``):
``unknown node 'x'`` (:class:`NotFound`) and ``'vm' matches 2 nodes: use one of <id1>, <id2>``
(:class:`BadParameter`), the ids being what reaches each node alone (tier 2).

:class:`ClusterView` reads presence, Resources, Roles and RemoteClusters from auth through the
proxy's ``AuthClient`` with a short cache. Called by :mod:`limen.proxy.sshproxy`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from limen.api.resources import Kind, Resource
from limen.auth.client import AuthClient
from limen.ca.identity import Identity
from limen.errors import BadParameter, LimenError, NotFound
from limen.net.address import format_address, parse_address
from limen.rbac.checker import AccessChecker
from limen.rbac.roleset import RoleSet
from limen.services.locks import LockView
from limen.tunnel.registry import AgentRecord

__all__ = [
    "ClusterView",
    "Node",
    "address_of",
    "ambiguity",
    "collect_nodes",
    "parse_labels_query",
    "parse_subsystem",
    "resolve",
]

log = logging.getLogger(__name__)
SUBSYSTEM_PREFIX = "proxy:"
LOCKS_TTL = 0.5
"""Seconds the proxy reuses its copy of the locks (``ClusterView.locks``)."""
_LISTED = 10


@dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    host_id: str = ""
    """Agent-served nodes only."""
    hostnames: tuple[str, ...] = ()
    """Other names it answers to (``spec.hostname``, certificate hostname)."""
    address: str = ""
    """``spec.address``: where an agentless node is dialled; informational for agents."""
    agentless: bool = False
    connected_here: bool = False
    """An agent whose tunnel ends at this proxy."""
    tunnel: str = ""
    """Id of the proxy that relayed the agent's latest heartbeat (from presence)."""
    tunnels: tuple[str, ...] = ()
    """Ids of every proxy holding a tunnel of the agent (from presence)."""

    @property
    def label(self) -> str:
        return f"{self.name} ({self.host_id})" if self.host_id else self.name


# ---------------------------------------------------------------------- parsing


def parse_subsystem(subsystem: str) -> tuple[str, int, str | None]:
    """``proxy:host:port@cluster`` (Teleport's form; port and cluster optional) →
    ``(host, port, cluster)``; :class:`BadParameter` for anything else."""
    if not subsystem.startswith(SUBSYSTEM_PREFIX):
        raise BadParameter(f"unknown subsystem {subsystem[:80]!r}")
    rest = subsystem[len(SUBSYSTEM_PREFIX):]
    target, sep, cluster = rest.rpartition("@")
    if not sep:
        target, cluster = rest, ""
    if not target:
        raise BadParameter("the proxy subsystem needs a target: proxy:host:port@cluster")
    if target.startswith("[") or target.count(":") == 1:
        host, port = parse_address(target, 0)
    elif ":" not in target:
        host, port = target, 0
    else:
        raise BadParameter(f"invalid proxy target {target[:80]!r}: use host:port")
    return host, port, cluster or None


def parse_labels_query(text: str) -> dict[str, str] | None:
    """``k=v,k2=v2`` → labels; ``None`` when ``text`` is not a label query."""
    if "=" not in text:
        return None
    labels: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise BadParameter(f"invalid label selector {text[:80]!r}: use key=value,...")
        labels[key.strip()] = value.strip()
    return labels


# ---------------------------------------------------------------------- resolution


def resolve(host: str, port: int, nodes: Sequence[Node], cluster: str = "") -> Node:
    """The one node ``host`` (and ``port``) names; :class:`NotFound` or, when several match,
    :class:`BadParameter` listing them."""
    selector = parse_labels_query(host)
    if selector is not None:
        return _one(host, [n for n in nodes
                           if all(n.labels.get(k) == v for k, v in selector.items())])
    short = host[: -len(cluster) - 1] if cluster and host.endswith(f".{cluster}") else host
    tiers: list[Callable[[Node], bool]] = [
        lambda n: bool(n.host_id) and short == n.host_id,
        lambda n: short == n.name or short in n.hostnames,
        lambda n: bool(n.address) and _same_address(n.address, host, port),
    ]
    for matches in tiers:
        found = [n for n in nodes if matches(n)]
        if found:
            return _one(host, found)
    raise NotFound(f"unknown node {host!r}")


def _same_address(address: str, host: str, port: int) -> bool:
    try:
        node_host, node_port = parse_address(address)
    except BadParameter:
        return False
    return (node_host.lower(), node_port) == (host.lower(), port)


def _one(query: str, found: list[Node]) -> Node:
    unique = list({(n.host_id, n.name, n.agentless): n for n in found}.values())
    if not unique:
        raise NotFound(f"no node has the labels {query!r}")
    if len(unique) > 1:
        raise BadParameter(ambiguity(query, unique))
    return unique[0]


def ambiguity(query: str, found: Sequence[Node]) -> str:
    """``'web1' matches 2 nodes: use one of <id1>, <id2>``: each node by the name that reaches
    it alone (its host id; an agentless node by its resource name), at most ten."""
    ids = sorted(n.host_id or n.name for n in found)
    more = ", ..." if len(ids) > _LISTED else ""
    return (f"{query!r} matches {len(found)} nodes: use one of "
            f"{', '.join(ids[:_LISTED])}{more}")


def collect_nodes(local: Mapping[str, AgentRecord], presence: Sequence[Mapping[str, Any]],
                  resources: Sequence[Resource]) -> list[Node]:
    """Every routable node: local agents, remote agents (presence), agentless Resources."""
    nodes = [_agent_node(r) for r in local.values() if r.role == "node"]
    for item in presence:
        host_id = item.get("host_id")
        if not isinstance(host_id, str) or host_id in local:
            continue
        doc = item.get("resource")
        if isinstance(doc, Mapping):
            node = _doc_node(doc, host_id)
            if node is not None:
                nodes.append(replace(node, tunnel=str(item.get("tunnel", "")),
                                     tunnels=_tunnels(item)))
    for res in resources:
        if res.kind is Kind.RESOURCE and res.spec.get("kind") == "ssh" \
                and isinstance(res.spec.get("address"), str):
            hostname = res.spec.get("hostname")
            nodes.append(Node(
                name=res.name, labels=dict(res.labels), address=res.spec["address"],
                hostnames=(hostname,) if isinstance(hostname, str) else (), agentless=True))
    return nodes


def _tunnels(item: Mapping[str, Any]) -> tuple[str, ...]:
    """The proxies of a presence record: ``tunnels``, or the one ``tunnel`` of older records."""
    listed = item.get("tunnels")
    if isinstance(listed, list):
        return tuple(str(p) for p in listed if isinstance(p, str) and p)
    one = item.get("tunnel")
    return (one,) if isinstance(one, str) and one else ()


def _agent_node(record: AgentRecord) -> Node:
    # Names come from the agent's certificate only (host id, hostname): what its heartbeat
    # claims could shadow another node. Labels and address come from the heartbeat; they
    # only decide visibility here, the node enforces RBAC with its own labels.
    base = _doc_node(record.resource, record.host_id) if record.resource else None
    return Node(name=record.name, labels=dict(record.labels), host_id=record.host_id,
                hostnames=(record.hostname,) if record.hostname else (),
                address=base.address if base else "", connected_here=True)


def _doc_node(doc: Mapping[str, Any], host_id: str) -> Node | None:
    meta = doc.get("metadata")
    spec = doc.get("spec")
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        return None
    name = meta.get("name")
    raw = meta.get("labels")
    labels = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    hostname = spec.get("hostname")
    address = spec.get("address")
    return Node(name=name if isinstance(name, str) and name else host_id, labels=labels,
                host_id=host_id, hostnames=(hostname,) if isinstance(hostname, str) else (),
                address=address if isinstance(address, str) else "")


def address_of(node: Node) -> str:
    """``host:port`` to dial for an agentless node."""
    host, port = parse_address(node.address, 22)
    return format_address(host, port)


# ---------------------------------------------------------------------- auth reads


class ClusterView:
    """Presence, Resources and Roles read from auth, cached for ``ttl`` seconds (one refresh
    in flight at a time). A failed read keeps the previous answer and is logged."""

    def __init__(self, auth: AuthClient, *, ttl: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.auth = auth
        self.ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _cached(self, key: str, fetch: Callable[[], Any], ttl: float | None = None) -> Any:
        ttl = self.ttl if ttl is None else ttl
        hit = self._cache.get(key)
        if hit is not None and self._clock() - hit[0] < ttl:
            return hit[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._cache.get(key)
            if hit is not None and self._clock() - hit[0] < ttl:
                return hit[1]
            try:
                value = await fetch()
            except (LimenError, OSError) as err:
                if hit is None:
                    raise
                log.warning("routing: cannot refresh %s from auth: %s", key, err)
                return hit[1]
            self._cache[key] = (self._clock(), value)
            return value

    async def presence(self) -> list[dict[str, Any]]:
        async def fetch() -> list[dict[str, Any]]:
            return list((await self.auth.call("GET", "/v1/presence/nodes"))["items"])
        result: list[dict[str, Any]] = await self._cached("presence", fetch)
        return result

    async def databases(self) -> list[dict[str, Any]]:
        """Online databases: one presence record per (database, serving db agent)."""
        async def fetch() -> list[dict[str, Any]]:
            return list((await self.auth.call("GET", "/v1/presence/dbs"))["items"])
        result: list[dict[str, Any]] = await self._cached("databases", fetch)
        return result

    async def resources(self) -> list[Resource]:
        async def fetch() -> list[Resource]:
            return [Resource.from_document(d) for d in await self.auth.list("resource")]
        result: list[Resource] = await self._cached("resources", fetch)
        return result

    async def roles(self) -> dict[str, Resource]:
        async def fetch() -> dict[str, Resource]:
            docs = await self.auth.list("role")
            return {r.name: r for r in map(Resource.from_document, docs)}
        result: dict[str, Resource] = await self._cached("roles", fetch)
        return result

    async def remote_clusters(self) -> dict[str, Resource]:
        """The leaf clusters admitted here (RemoteCluster objects), by name."""
        async def fetch() -> dict[str, Resource]:
            docs = await self.auth.list("remotecluster")
            return {r.name: r for r in map(Resource.from_document, docs)}
        result: dict[str, Resource] = await self._cached("remoteclusters", fetch)
        return result

    async def locks(self) -> LockView:
        """The locks in force (``GET /v1/locks``), read again after half a second: a new lock
        refuses routes through this proxy within one second."""
        async def fetch() -> LockView:
            answer = await self.auth.call("GET", "/v1/locks")
            view = LockView(max_staleness=None)
            view.replace(map(Resource.from_document, answer.get("items") or []),
                         int(answer.get("revision") or 0))
            return view
        result: LockView = await self._cached("locks", fetch, LOCKS_TTL)
        return result

    async def role_set(self, identity: Identity) -> RoleSet:
        """The user's roles (as named in the certificate) expanded for its traits."""
        checker = AccessChecker.for_user(identity.username, identity.roles, identity.traits,
                                         await self.roles())
        return checker.roles

    async def nodes(self, local: Mapping[str, AgentRecord]) -> list[Node]:
        presence, resources = await asyncio.gather(self.presence(), self.resources())
        return collect_nodes(local, presence, resources)
