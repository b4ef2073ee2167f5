"""Attack: an agent announcing a resource of another kind through its heartbeat.

A compromised node agent heartbeats a db Resource (to make a database appear online and
have the proxy route database sessions to it), and a db agent heartbeats an ssh Resource (to
pose as a node); a proxy's or an admin's role heartbeats nothing. Auth's
:func:`limen.auth.presence.heartbeat` refuses each (the role is the agent's system role
from its verified certificate, as the proxy relays it) and stores nothing; the same agents
announcing their own kind are stored (control). Demo cluster, in-process.
"""

from __future__ import annotations

from typing import Any

import pytest

from limen.auth import presence
from limen.auth.core import AuthServer
from limen.errors import BadParameter

SSH: dict[str, Any] = {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
                       "metadata": {"name": "web1", "labels": {"env": "dev"}},
                       "spec": {"kind": "ssh", "address": "10.0.0.5:3022"}}
DB: dict[str, Any] = {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
                      "metadata": {"name": "orders-dev", "labels": {"env": "dev"}},
                      "spec": {"kind": "db", "protocol": "postgres",
                               "address": "10.0.0.9:5432"}}


async def _online(auth: AuthServer) -> list[dict[str, Any]]:
    return [*await presence.presence(auth),
            *await presence.presence(auth, presence.DB_PRESENCE_PREFIX)]


@pytest.mark.parametrize(("role", "document"), [
    ("node", DB), ("db", SSH), ("proxy", SSH), ("proxy", DB), ("admin", DB)],
    ids=["node-with-db", "db-with-ssh", "proxy-with-ssh", "proxy-with-db", "admin-with-db"])
async def test_a_heartbeat_of_another_kind_is_refused(auth: AuthServer, role: str,
                                                      document: dict[str, Any]) -> None:
    with pytest.raises(BadParameter, match=f"a {role} agent's heartbeat carries a Resource "
                                           "with spec.kind"):
        await presence.heartbeat(auth, document, "agent-1", "proxy-1", "unit", role=role)
    assert await _online(auth) == []


async def test_each_agent_announces_its_own_kind(auth: AuthServer) -> None:
    await presence.heartbeat(auth, SSH, "node-1", "proxy-1", "unit", role="node")
    await presence.heartbeat(auth, DB, "db-1", "proxy-1", "unit", role="db")
    [node] = await presence.presence(auth)
    [database] = await presence.presence(auth, presence.DB_PRESENCE_PREFIX)
    assert (node["host_id"], node["resource"]["spec"]["kind"]) == ("node-1", "ssh")
    assert (database["host_id"], database["resource"]["metadata"]["name"]) == \
        ("db-1", "orders-dev")
