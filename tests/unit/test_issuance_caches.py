"""Certificate issuance never serves what changed: the role reader and the grant cache
(``limen.auth.role_reader``, ``limen.auth.grants``), the lock view auth writes to, and the
trusted CA map (``Authorities.trusted``).

Each test warms the caches with an issuance, changes one thing — a role edited (by this auth
server or by another process on the same SQLite file), deleted, a user's roles or traits, a
lock, the user CA's signing key — and asserts that the very next issuance shows it. An
``AuthServer`` on the real SQLite backend with an in-memory audit log.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Origin, Resource
from limen.api.validation import validate
from limen.auth.core import AuthServer
from limen.auth.grants import GrantCache
from limen.auth.issuer import IssuedCerts
from limen.auth.role_reader import StoredRole
from limen.auth.rotation import key_fingerprint
from limen.auth.rotation_service import rotate_ca
from limen.backend.factory import open_backend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.ca.ssh_certs import parse_ssh_cert, verify_ssh_user_cert
from limen.config import ClusterSettings
from limen.errors import AccessDenied
from limen.events.emitter import MemoryEmitter
from limen.services.locks import Locked
from limen.services.resource_store import ResourceStore

CLUSTER = "unit"


def _role(name: str, logins: list[str], ttl: str = "8h") -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": name},
            "spec": {"options": {"max_session_ttl": ttl},
                     "allow": {"logins": ["{{internal.logins}}", *logins],
                               "node_labels": {"env": "dev"}}}}


def _user(name: str, roles: list[str], logins: list[str]) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "User", "metadata": {"name": name},
            "spec": {"roles": roles, "traits": {"logins": logins}}}


async def _apply(auth: AuthServer, *docs: dict[str, Any]) -> None:
    resources = validate([SourceDocument("<test>", i, 1, d) for i, d in enumerate(docs)])
    await auth.apply(resources, Origin.API, actor="admin")


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[AuthServer]:
    backend = open_backend(tmp_path)
    server = AuthServer(backend, ClusterSettings(name=CLUSTER), MemoryEmitter())
    try:
        await server.start()
        await _apply(server, _role("dev", ["ubuntu"]), _role("ops", ["root"], "1h"),
                     _user("alice", ["dev"], ["alice"]))
        yield server
    finally:
        await backend.close()


async def _issue(auth: AuthServer, user: str = "alice") -> IssuedCerts:
    key = public_key_to_openssh(generate_private_key().public_key())
    return await auth.issue_for_user(await auth.store.get(Kind.USER, user), key, None)


def _principals(certs: IssuedCerts) -> list[str]:
    return [p.decode() for p in parse_ssh_cert(certs.ssh_cert).valid_principals]


def _cert_events(auth: AuthServer) -> list[dict[str, Any]]:
    assert isinstance(auth.emitter, MemoryEmitter)
    return [{"success": e.success, "user": e.user, **e.fields}
            for e in auth.emitter.events if e.type == "cert.create"]


async def test_repeated_issuance_compiles_the_roles_once(auth: AuthServer) -> None:
    first, second = await _issue(auth), await _issue(auth)
    assert _principals(first) == _principals(second) == ["alice", "ubuntu"]
    assert (auth.grants.misses, auth.grants.hits) == (1, 1)
    events = _cert_events(auth)
    assert [e["success"] for e in events] == [True, True]  # each issuance is audited


async def test_a_role_edited_counts_from_the_next_issuance(auth: AuthServer) -> None:
    assert _principals(await _issue(auth)) == ["alice", "ubuntu"]
    await _apply(auth, _role("dev", ["admin"], "30m"))
    certs = await _issue(auth)
    assert _principals(certs) == ["admin", "alice"]
    assert certs.ttl == timedelta(minutes=30)


async def test_a_role_edited_by_another_process_counts_at_once(auth: AuthServer,
                                                               tmp_path: Path) -> None:
    """``lmctl`` on the data directory (its own SQLite connection): no watch is waited for,
    every issuance reads the roles it needs from the backend."""
    assert _principals(await _issue(auth)) == ["alice", "ubuntu"]
    other = open_backend(tmp_path)
    try:
        store = ResourceStore(other)
        role = await store.get(Kind.ROLE, "dev")
        spec = {**role.spec, "allow": {"logins": ["{{internal.logins}}", "deploy"]}}
        await store.update(role.replace(spec=spec))
    finally:
        await other.close()
    assert _principals(await _issue(auth)) == ["alice", "deploy"]


async def test_a_role_deleted_grants_nothing_at_once(auth: AuthServer) -> None:
    assert _principals(await _issue(auth)) == ["alice", "ubuntu"]
    await auth.remove(Kind.ROLE, "dev", Origin.API, actor="admin")
    certs = await _issue(auth)
    assert certs.identity.roles == ()
    assert certs.identity.logins == ()
    assert "ubuntu" not in _principals(certs)


async def test_a_role_deleted_and_recreated_the_same_is_read_again(auth: AuthServer) -> None:
    await _issue(auth)
    await auth.remove(Kind.ROLE, "dev", Origin.API, actor="admin")
    await _issue(auth)
    await _apply(auth, _role("dev", ["ubuntu"]))
    certs = await _issue(auth)
    assert certs.identity.roles == ("dev",)
    assert _principals(certs) == ["alice", "ubuntu"]


async def test_a_users_roles_and_traits_changed_count_at_once(auth: AuthServer) -> None:
    assert _principals(await _issue(auth)) == ["alice", "ubuntu"]
    await _apply(auth, _user("alice", ["dev", "ops"], ["alice"]))
    certs = await _issue(auth)
    assert certs.identity.roles == ("dev", "ops")
    assert _principals(certs) == ["alice", "root", "ubuntu"]
    assert certs.ttl == timedelta(hours=1)  # the shortest max_session_ttl of the two
    await _apply(auth, _user("alice", ["ops"], ["al"]))
    certs = await _issue(auth)
    assert certs.identity.roles == ("ops",)
    assert _principals(certs) == ["al", "root"]
    assert certs.identity.traits == {"logins": ("al",)}


async def test_access_decisions_follow_a_role_edit_at_once(auth: AuthServer) -> None:
    """``AuthServer.role_set`` (the auth API's RBAC) shares compiled roles the same way."""
    identity = (await _issue(auth)).identity
    assert (await auth.role_set(identity)).check_ssh({"env": "dev"}, "ubuntu").allowed
    assert (await auth.role_set(identity)).check_ssh({"env": "dev"}, "ubuntu").allowed
    await _apply(auth, {**_role("dev", ["ubuntu"]), "spec": {
        "allow": {"logins": ["ubuntu"], "node_labels": {"env": "dev"}},
        "deny": {"node_labels": {"env": "dev"}}}})
    assert not (await auth.role_set(identity)).check_ssh({"env": "dev"}, "ubuntu").allowed


async def test_users_with_other_traits_never_share_a_grant(auth: AuthServer) -> None:
    await _apply(auth, _user("bob", ["dev"], ["bob"]))
    assert _principals(await _issue(auth, "alice")) == ["alice", "ubuntu"]
    assert _principals(await _issue(auth, "bob")) == ["bob", "ubuntu"]
    assert auth.grants.misses == 2


async def test_a_lock_applied_refuses_the_very_next_issuance(auth: AuthServer) -> None:
    """No lock feed runs here: auth's own write puts the lock in force, audited."""
    await _issue(auth)
    lock = Resource(Kind.LOCK, "stop-dev", spec={"target": {"role": "dev"},
                                                 "message": "incident 7"})
    await auth.apply([lock], Origin.API, actor="admin")
    with pytest.raises(Locked, match="incident 7"):
        await _issue(auth)
    refused = _cert_events(auth)[-1]
    assert refused["success"] is False
    assert refused["user"] == "alice"
    assert "incident 7" in refused["reason"]
    assert refused["lock"] == "stop-dev"


async def test_a_rotated_user_ca_signs_the_very_next_issuance(auth: AuthServer) -> None:
    user_ca = CertAuthorityType.USER
    await _issue(auth)
    state = await rotate_ca(auth, "user", actor="admin")
    await rotate_ca(auth, "user", actor="admin", phase="update_clients")
    certs = await _issue(auth)
    signer = None
    for pair in auth.authorities.get(user_ca).key_pairs:
        with contextlib.suppress(AccessDenied):
            verify_ssh_user_cert(certs.ssh_cert, {CLUSTER: (pair.public_key,)})
            signer = key_fingerprint(user_ca, pair)
    assert signer == state["new_key"]


async def test_the_trusted_cas_follow_every_stored_change(auth: AuthServer) -> None:
    """``Authorities.trusted`` (every login answer and API identity) parses a CA once per
    stored content and sees a leaf CA added, disabled and removed at once."""
    user_ca = CertAuthorityType.USER
    assert set(await auth.authorities.trusted(user_ca)) == {CLUSTER}
    leaf = CertAuthority.generate("leaf", user_ca).public_only()
    resource = Resource(Kind.CERT_AUTHORITY, "user.leaf", spec=leaf.to_dict())
    await auth.store.put(resource)
    trusted = await auth.authorities.trusted(user_ca)
    assert trusted["leaf"].fingerprint == leaf.fingerprint
    await auth.store.put(resource.replace(spec={**leaf.to_dict(), "disabled": True}))
    assert set(await auth.authorities.trusted(user_ca)) == {CLUSTER}
    await auth.store.put(resource)
    assert set(await auth.authorities.trusted(user_ca)) == {CLUSTER, "leaf"}
    await auth.store.delete(Kind.CERT_AUTHORITY, "user.leaf")
    assert set(await auth.authorities.trusted(user_ca)) == {CLUSTER}


def test_the_grant_cache_keeps_at_most_its_size() -> None:
    role = Resource(Kind.ROLE, "dev", spec=_role("dev", ["ubuntu"])["spec"])
    stored = [StoredRole(role, role.to_json())]
    cache = GrantCache(size=2, role_sets=1)
    for name in ("a", "b", "c", "a"):
        assert cache.grant(stored, {"logins": (name,)}).logins == (name, "ubuntu")
    assert (cache.misses, cache.hits) == (4, 0)  # "a" was the least recently used: dropped
    assert cache.grant(stored, {"logins": ("c",)}).logins == ("c", "ubuntu")
    assert cache.hits == 1
    cache.role_set(stored, {"logins": ("a",)})
    cache.role_set(stored, {"logins": ("b",)})
    cache.role_set(stored, {"logins": ("a",)})
    assert (cache.misses, cache.hits) == (7, 1)
