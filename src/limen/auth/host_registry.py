"""Which host ids auth has certified, and who may join under one again.

Host ids are auth's to give: a joiner proposes none (auth picks a new UUID) or the id it saved
at its first join. A proposed id that auth has certified before (a record under
``/hosts/<host_id>``), that belongs to the auth process's own components, or that a node is
heartbeating under right now, is taken: joining under it again needs the proof of
:mod:`limen.auth.host_proof` made with that host's *current* certificate (the key recorded for
the role at its last join). Without it the join is refused and audited: a fresh node token
does not buy another host's identity, nor its place in ``lmsh ls``.

A record::

    {"host_id": ..., "local": false,
     "roles": {"node": {"key": "sha256:<SPKI pin>", "hostname": "web1", "updated": ISO}}}

The record is written in the same backend transaction that consumes the join token
(:class:`Claim` carries the condition and the write), so two joins racing for one id or one
token give one success. Called by ``limen.auth.core`` and ``limen.auth.auth_service``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from limen.auth.host_names import check_host_id
from limen.auth.host_proof import verify_proof
from limen.auth.store_keys import PRESENCE_PREFIX
from limen.backend.base import Backend, Condition, Put
from limen.ca.identity import SystemRole
from limen.ca.keys import spki_pin
from limen.errors import AccessDenied

__all__ = ["HOSTS_PREFIX", "Claim", "claim_host_id", "register_local_host"]

HOSTS_PREFIX = "/hosts/"


@dataclass(frozen=True)
class Claim:
    """A join's host id and what registering it takes (applied with the token's use)."""

    host_id: str
    condition: Condition
    put: Put
    rejoined: bool
    """True when the joiner proved it holds the id's current certificate."""


def _key(host_id: str) -> str:
    return HOSTS_PREFIX + host_id


async def claim_host_id(
    backend: Backend, proposed: str, *, role: SystemRole, hostname: str, public_key_pin: str,
    proof: Mapping[str, Any] | None, trusted: Mapping[str, Sequence[x509.Certificate]],
    cluster: str, public_key: str, now: datetime,
) -> Claim:
    """The host id this join gets (see the module doc); ``AccessDenied`` when ``proposed``
    is taken and not proven."""
    host_id = check_host_id(proposed) if proposed else str(uuid.uuid4())
    item = await backend.get(_key(host_id))
    record: dict[str, Any] = json.loads(item.value) if item is not None else {}
    online = proposed and await backend.get(PRESENCE_PREFIX + host_id) is not None
    rejoined = False
    if item is not None or online:
        if proof is None:
            raise AccessDenied(f"host id {host_id} is already registered: joining under it "
                               "again needs that host's current certificate (or join with no "
                               "saved host id to get a new one)")
        _identity, cert = verify_proof(proof, trusted=trusted, cluster=cluster,
                                       host_id=host_id, role=role, public_key=public_key,
                                       now=now)
        current = ((record.get("roles") or {}).get(role.value) or {}).get("key")
        if current and current != spki_pin(cert):
            raise AccessDenied(f"the certificate offered as proof is not the current one of "
                               f"host {host_id}")
        rejoined = True
    roles = dict(record.get("roles") or {})
    roles[role.value] = {"key": public_key_pin, "hostname": hostname,
                         "updated": now.isoformat()}
    value = {"host_id": host_id, "local": bool(record.get("local")), "roles": roles}
    return Claim(host_id, Condition(_key(host_id), item.revision if item is not None else 0),
                 Put(_key(host_id), json.dumps(value, sort_keys=True).encode()), rejoined)


async def register_local_host(backend: Backend, host_id: str) -> None:
    """Reserve the id of the auth process's own components (auth, proxy, node in-process):
    no joiner takes it without one of their certificates."""
    item = await backend.get(_key(host_id))
    if item is not None and json.loads(item.value).get("local"):
        return
    record: dict[str, Any] = json.loads(item.value) if item is not None else {}
    value = {"host_id": host_id, "local": True, "roles": dict(record.get("roles") or {})}
    await backend.put(_key(host_id), json.dumps(value, sort_keys=True).encode())
