"""Presence: which agent-served resources are online, from heartbeats relayed by proxies.

An agent sends its Resource document over its tunnel every 10 s; the proxy it is connected to
forwards it here (``POST /v1/presence/heartbeat``) with the host id from the agent's verified
host certificate. Each record lives under ``/presence/nodes/<host_id>`` in the backend with an
expiry of :data:`PRESENCE_TTL` (three missed heartbeats and a margin), so a vanished agent drops
out without anyone deleting it. Presence is kept apart from declared Resources: it has no
origin, is never applied from Git, and is read with ``GET /v1/presence/nodes`` (``lmsh ls``,
the proxy's routing).

An agent keeps a tunnel to every proxy (``limen.tunnel.agent_pool``), so several proxies
relay its heartbeats: the record stays one per agent (per database and agent for db agents,
under ``/presence/dbs/<name>/<host_id>``; per kube cluster and agent for kube agents, under
``/presence/kubes/<name>/<host_id>``; per app and agent for app agents, under
``/presence/apps/<name>/<host_id>``),
and lists in ``tunnels`` the proxies that relayed one within :data:`PRESENCE_TTL` (each one's
expiry in ``tunnel_expires``); ``tunnel`` is the proxy that relayed the latest. The record is
merged with compare-and-swap, so two proxies relaying at once both stay listed. A proxy sends
the heartbeats it gathered in the last second in one request (``POST /v1/presence/heartbeats``,
:func:`heartbeats`; ``limen.proxy.heartbeat_relay``), and a record whose Resource did not change
is rewritten only when half of its relay's time to live has passed: thousands of agents cost
auth a request per proxy per second and a write per agent every 20 s.

Called by :mod:`limen.auth.http.app` with the running :class:`~limen.auth.core.AuthServer`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from limen.api.loader import SourceDocument
from limen.api.resources import Kind
from limen.api.validation import validate
from limen.auth.store_keys import (
    APP_PRESENCE_PREFIX,
    DB_PRESENCE_PREFIX,
    KUBE_PRESENCE_PREFIX,
    PRESENCE_PREFIX,
)
from limen.backend.base import Condition, Item, Put
from limen.errors import BadParameter, CompareFailed

if TYPE_CHECKING:
    from limen.auth.core import AuthServer

__all__ = ["APP_PRESENCE_PREFIX", "DB_PRESENCE_PREFIX", "KUBE_PRESENCE_PREFIX", "MAX_BATCH",
           "PRESENCE_PREFIX", "PRESENCE_TTL", "heartbeat", "heartbeats", "presence"]

PRESENCE_TTL = 35.0
"""Seconds a heartbeat keeps its record alive."""
_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MERGE_ATTEMPTS = 5
"""Compare-and-swap rounds before a heartbeat simply overwrites the record."""
MAX_BATCH = 1000
"""Heartbeats per ``POST /v1/presence/heartbeats`` (a proxy sends what it gathered in a
second, in requests of at most this many)."""


_AGENT_KINDS = {"node": "ssh", "db": "db", "kube": "kube", "app": "app"}
"""The Resource ``spec.kind`` each agent role may heartbeat."""


async def heartbeat(auth: AuthServer, resource: Mapping[str, Any], host_id: str,
                    tunnel: str, cluster: str, role: str = "node") -> dict[str, Any]:
    """Store (or refresh) the presence record of ``host_id`` (a node) or of one database a
    db agent serves; returns the stored record. ``role`` is the agent's system role from its
    verified certificate, as the proxy saw it: a node agent may only heartbeat an ssh
    Resource, a db agent only db Resources."""
    key, document = _accepted(auth, resource, host_id, cluster, role)
    return await _store(auth, key, document, host_id, cluster, tunnel)


async def heartbeats(auth: AuthServer, tunnel: str,
                     items: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """The heartbeats one proxy gathered (``POST /v1/presence/heartbeats``), each merged as
    :func:`heartbeat` merges it, and every record that needs writing written in ONE
    transaction (one commit for hundreds of agents); per item None (stored) or why it was
    refused. One refused item (a crafted Resource, a host id that is not one) refuses only
    itself. When another proxy wrote one of the records meanwhile, the batch is merged record
    by record instead."""
    if len(items) > MAX_BATCH:
        raise BadParameter(f"at most {MAX_BATCH} heartbeats per request, not {len(items)}")
    outcomes: list[str | None] = []
    accepted: dict[str, tuple[dict[str, Any], str, str]] = {}
    for item in items:
        try:
            resource = item.get("resource")
            if not isinstance(resource, Mapping):
                raise BadParameter("resource must be a Resource document")
            host_id, cluster, role = (item.get("host_id"), item.get("cluster"),
                                      item.get("role", "node"))
            if not (isinstance(host_id, str) and isinstance(cluster, str)
                    and isinstance(role, str)):
                raise BadParameter("host_id, cluster and role must be strings")
            key, document = _accepted(auth, resource, host_id, cluster, role)
        except BadParameter as err:
            outcomes.append(str(err))
            continue
        accepted[key] = document, host_id, cluster  # one agent twice: the later one
        outcomes.append(None)
    conditions: list[Condition] = []
    writes: list[Put] = []
    for key, (document, host_id, cluster) in accepted.items():
        stored = await auth.backend.get(key)
        merged = _merged(auth, stored, document, host_id, cluster, tunnel)
        if merged is not None:
            conditions.append(Condition(key, stored.revision if stored is not None else 0))
            writes.append(Put(key, json.dumps(merged).encode(), expires=merged["expires"]))
    if writes:
        try:
            await auth.backend.atomic(conditions, writes)
        except CompareFailed:
            for put in writes:
                await _store(auth, put.key, *accepted[put.key], tunnel)
    return outcomes


def _accepted(auth: AuthServer, resource: Mapping[str, Any], host_id: str, cluster: str,
              role: str) -> tuple[str, dict[str, Any]]:
    """The record's key and the Resource as stored; ``BadParameter`` for a heartbeat this
    agent may not send. A Resource seen before (an agent sends the same one every 10 s) is
    not validated again."""
    if not _HOST_ID.fullmatch(host_id):
        raise BadParameter(f"invalid host id {host_id[:64]!r}")
    if cluster != auth.cluster_name:
        raise BadParameter(f"heartbeat for cluster {cluster!r}; this is {auth.cluster_name!r}")
    expected = _AGENT_KINDS.get(role)
    name, document = _validated(resource, host_id)
    if expected is None or document["spec"].get("kind") != expected:
        raise BadParameter(f"a {role} agent's heartbeat carries a Resource with spec.kind "
                           f"{expected or 'ssh'}")
    prefix = {"kube": KUBE_PRESENCE_PREFIX, "app": APP_PRESENCE_PREFIX}.get(expected,
                                                                      DB_PRESENCE_PREFIX)
    key = PRESENCE_PREFIX + host_id if expected == "ssh" else f"{prefix}{name}/{host_id}"
    return key, document


_VALIDATED: dict[str, tuple[str, dict[str, Any]]] = {}
"""Resources validated before, by their canonical JSON: (name, document as stored)."""
_VALIDATED_MAX = 20_000


def _validated(resource: Mapping[str, Any], host_id: str) -> tuple[str, dict[str, Any]]:
    try:
        text = json.dumps(resource, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        raise BadParameter("the heartbeat's Resource is not a JSON document") from None
    known = _VALIDATED.get(text)
    if known is None:
        (parsed,) = validate([SourceDocument(f"<heartbeat of {host_id}>", 0, 1,
                                             json.loads(text))])
        if parsed.kind is not Kind.RESOURCE:
            raise BadParameter("a heartbeat carries a Resource")
        known = parsed.name, parsed.to_document(with_status=False)
        if len(_VALIDATED) >= _VALIDATED_MAX:
            del _VALIDATED[next(iter(_VALIDATED))]  # the oldest
        _VALIDATED[text] = known
    name, document = known
    return name, json.loads(json.dumps(document))  # the caller's own copy


async def _store(auth: AuthServer, key: str, document: dict[str, Any], host_id: str,
                 cluster: str, tunnel: str) -> dict[str, Any]:
    """Merge this proxy's relay into the record at ``key`` (compare-and-swap, see
    :func:`_merged`); the record as stored."""
    for attempt in range(_MERGE_ATTEMPTS):
        item = await auth.backend.get(key)
        record = _merged(auth, item, document, host_id, cluster, tunnel)
        if record is None:
            return _listed(_record(item.value) if item is not None else {}, auth.clock())
        value = json.dumps(record).encode()
        if attempt == _MERGE_ATTEMPTS - 1:
            await auth.backend.put(key, value, expires=record["expires"])
            return record
        try:
            await auth.backend.compare_and_swap(key, item.revision if item is not None else 0,
                                                value, expires=record["expires"])
            return record
        except CompareFailed:
            continue
    raise AssertionError("unreachable: the last attempt puts")


def _merged(auth: AuthServer, item: Item | None, document: dict[str, Any], host_id: str,
            cluster: str, tunnel: str) -> dict[str, Any] | None:
    """The record to write over ``item`` for this relay, or None when nothing needs
    writing: the record already carries this Resource and this proxy's relay has more than
    half of :data:`PRESENCE_TTL` to live. With a heartbeat every 10 s, a record is written
    every 20 s per proxy instead of every 10 s, and still never expires while its agent
    beats."""
    now = auth.clock()
    stored = _record(item.value) if item is not None else {}
    seen = _unexpired(stored, now)
    if stored.get("resource") == document and stored.get("host_id") == host_id \
            and seen.get(tunnel, 0.0) > now + PRESENCE_TTL / 2:
        return None
    seen[tunnel] = now + PRESENCE_TTL
    return {
        "resource": document, "host_id": host_id, "cluster": cluster, "tunnel": tunnel,
        "tunnels": sorted(seen), "tunnel_expires": seen, "updated": auth.now().isoformat(),
        "expires": now + PRESENCE_TTL,
    }


def _listed(record: dict[str, Any], now: float) -> dict[str, Any]:
    """``record`` with only the relays that have not expired."""
    live = _unexpired(record, now)
    record["tunnel_expires"], record["tunnels"] = live, sorted(live)
    return record


def _record(stored: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(stored) if stored else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _unexpired(doc: Any, now: float) -> dict[str, float]:
    expires = doc.get("tunnel_expires") if isinstance(doc, dict) else None
    if not isinstance(expires, dict):
        return {}
    return {str(proxy): float(when) for proxy, when in expires.items()
            if isinstance(when, int | float) and not isinstance(when, bool) and when > now}


async def presence(auth: AuthServer, prefix: str = PRESENCE_PREFIX) -> list[dict[str, Any]]:
    """Every live presence record of nodes (or, with :data:`DB_PRESENCE_PREFIX`, of
    databases), sorted by key; ``tunnels`` lists the proxies whose relay has not expired."""
    out: list[dict[str, Any]] = []
    now = auth.clock()
    for item in await auth.backend.list(prefix):
        try:
            record = json.loads(item.value)
        except ValueError:
            continue
        if isinstance(record, dict) and "tunnel_expires" in record:
            record = _listed(record, now)
        out.append(record)
    return out
