"""AuthServer in-process, on the memory backend: tokens, cluster name, apply events, access.

The ``auth`` fixture (the demo repository applied) is in ``tests/unit/conftest.py``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from limen.api.resources import Kind
from limen.auth.core import AuthServer
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.config import ClusterSettings
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter
from limen.events.event import AuditEvent


def _events(auth: AuthServer) -> list[AuditEvent]:
    assert isinstance(auth.emitter, MemoryEmitter)
    return auth.emitter.events


def _key() -> str:
    return public_key_to_openssh(generate_private_key().public_key())


async def test_cluster_name_of_the_first_start_wins(auth: AuthServer) -> None:
    again = AuthServer(auth.backend, ClusterSettings(name="renamed"), MemoryEmitter())
    await again.start()
    assert again.cluster_name == "unit"
    assert again.tls_ca_pin() == auth.tls_ca_pin()


async def test_apply_emits_one_event_per_change(auth: AuthServer) -> None:
    events = _events(auth)
    assert sorted(e.type for e in events if e.type.startswith("role.")) == ["role.created"] * 3
    assert {e.to_dict()["origin"] for e in events if e.type == "role.created"} == {"git"}


async def test_trusted_cluster_token_is_single_use(auth: AuthServer) -> None:
    secret, _ = await auth.create_token("trusted_cluster", timedelta(minutes=5), actor="t")
    await auth.tokens.consume(secret, ("trusted_cluster",), now=auth.now())
    with pytest.raises(AccessDenied, match="invalid or expired join token"):
        await auth.tokens.consume(secret, ("trusted_cluster",), now=auth.now())


async def test_node_token_joins_once_and_not_as_another_type(auth: AuthServer) -> None:
    secret, _ = await auth.create_token("node", timedelta(minutes=5), actor="t")
    with pytest.raises(AccessDenied, match="join refused: join token is of type node"):
        await auth.join(secret, "db", "", "h0", _key(), [])
    certs = await auth.join(secret, "node", "", "h1", _key(), ["127.0.0.1"])
    assert certs.identity.hostname == "h1"
    with pytest.raises(AccessDenied, match="join refused: invalid or expired join token"):
        await auth.join(secret, "node", "", "h2", _key(), [])
    joins = [(e.to_dict()["hostname"], e.success) for e in _events(auth) if e.type == "join"]
    assert joins == [("h0", False), ("h1", True), ("h2", False)]


async def test_a_reusable_node_token_joins_until_it_expires(auth: AuthServer) -> None:
    secret, record = await auth.create_token("node", timedelta(minutes=5), actor="t",
                                             single_use=False)
    assert (await auth.token_answer(secret, record))["single_use"] is False
    ids = {(await auth.join(secret, "node", "", h, _key(), [])).identity.host_id
           for h in ("h1", "h2")}
    assert len(ids) == 2
    with pytest.raises(BadParameter, match="single use"):
        await auth.create_token("trusted_cluster", timedelta(minutes=5), actor="t",
                                single_use=False)


async def test_expired_token_is_refused(auth: AuthServer) -> None:
    secret, record = await auth.create_token("node", timedelta(seconds=30), actor="t")
    later = auth.tokens.expires_at(record) + timedelta(seconds=1)
    with pytest.raises(AccessDenied, match="join token has expired"):
        await auth.tokens.consume(secret, ("node",), now=later)


async def test_access_check_names_the_deciding_role(auth: AuthServer) -> None:
    allowed = await auth.access_check("alice", Kind.RESOURCE, "build-box", "alice")
    assert (allowed["allowed"], allowed["role"], allowed["rule"]) == (True, "dev", "allow.logins")
    denied = await auth.access_check("carol", Kind.RESOURCE, "build-box", "carol")
    assert (denied["allowed"], denied["role"]) == (False, "auditor")
    assert denied["text"].startswith("DENIED: carol -> Resource/build-box")


async def test_user_certs_follow_roles(auth: AuthServer) -> None:
    alice = await auth.store.get(Kind.USER, "alice")
    certs = await auth.issue_for_user(alice, _key(), timedelta(hours=48))
    assert certs.ttl == timedelta(hours=8)  # dev's max_session_ttl caps the request
    assert set(certs.identity.logins) == {"alice", "ubuntu"}
