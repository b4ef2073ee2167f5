"""What lmctl's users/nodes/tokens commands do in the auth server (memory backend): store
errors in the object's words, refusals before any write, ownership refusals that say where to
change the object and are audited, reset/unlock of a user's secrets, tokens by hint/id/prefix,
nodes by hostname or host id."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from limen.api.loader import load_path
from limen.api.resources import Kind, Origin, Resource
from limen.api.validation import validate
from limen.auth import node_admin, token_admin, user_admin
from limen.auth.core import AuthServer
from limen.auth.credentials import otp
from limen.auth.credentials.local_users import CREDENTIALS_PREFIX, SIGNUP_PREFIX
from limen.auth.credentials.lockout import LockoutState
from limen.auth.credentials.login import LocalCredentials
from limen.auth.presence import heartbeat
from limen.backend.memory import MemoryBackend
from limen.config import ClusterSettings
from limen.errors import AccessDenied, AlreadyExists, BadParameter, CompareFailed, NotFound
from limen.events.emitter import MemoryEmitter
from limen.services.apply import apply_plan
from limen.services.plan import compute_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"


@pytest.fixture
async def auth(auth: AuthServer) -> AuthServer:
    """The demo cluster of ``tests/unit/conftest.py``, with its proxy address registered."""
    await auth.set_proxy_address("127.0.0.1:3080")
    return auth


def _events(auth: AuthServer, event_type: str) -> list[dict[str, Any]]:
    assert isinstance(auth.emitter, MemoryEmitter)
    return [e.to_dict() for e in auth.emitter.events if e.type == event_type]


def _no_backend_key(err: pytest.ExceptionInfo[Any]) -> None:
    assert "/resources/" not in str(err.value)
    assert "key " not in str(err.value)


# -- store errors in the object's words -----------------------------------------------------
async def test_a_second_user_add_says_the_user_already_exists(auth: AuthServer) -> None:
    await auth.add_user("me", ["dev"], [], actor="admin")
    with pytest.raises(AlreadyExists, match=r"^user 'me' already exists$") as err:
        await auth.add_user("me", ["dev"], [], actor="admin")
    _no_backend_key(err)


async def test_not_found_and_lost_races_name_the_object(auth: AuthServer) -> None:
    with pytest.raises(NotFound, match=r"^role 'nope' not found$") as err:
        await auth.store.delete(Kind.ROLE, "nope")
    _no_backend_key(err)
    dev = await auth.store.get(Kind.ROLE, "dev")
    await auth.store.update(dev)
    with pytest.raises(CompareFailed, match=r"^role 'dev' was changed or deleted") as lost:
        await auth.store.update(dev)  # the revision it was read at is gone
    _no_backend_key(lost)
    tc = await auth.store.get(Kind.TRUSTED_CLUSTER, "org-root")
    with pytest.raises(AlreadyExists, match=r"^trusted cluster 'org-root' already exists$"):
        await auth.store.update(tc.replace(revision=0))


async def test_an_apply_that_lost_a_race_names_no_key(auth: AuthServer) -> None:
    role = Resource(Kind.ROLE, "late", spec={"allow": {"logins": ["x"]}})
    plan = compute_plan([role], [], Origin.API, prune=False)
    await auth.store.create(role.with_origin(Origin.API))  # someone else, meanwhile
    with pytest.raises(CompareFailed, match="nothing was applied: run it again") as err:
        await apply_plan(auth.store, plan)
    _no_backend_key(err)


# -- validate first, then write -------------------------------------------------------------
async def test_token_add_on_a_cluster_without_cas_writes_and_audits_nothing() -> None:
    server = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), MemoryEmitter())
    await server.start(initialize=False)  # a bootstrapped directory: no CA yet
    with pytest.raises(BadParameter, match="holds no cluster yet"):
        await server.create_token("node", timedelta(minutes=5), actor="admin")
    assert await server.tokens.list() == []
    assert _events(server, "join_token.create") == []


async def test_users_add_without_a_proxy_address_stores_no_user() -> None:
    server = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), MemoryEmitter())
    await server.start()
    await server.apply(validate(load_path(EXAMPLES / "roles")), Origin.GIT, actor="t")
    with pytest.raises(NotFound, match="no proxy has registered"):
        await server.add_user("me", ["dev"], [], actor="admin")
    assert await server.store.find(Kind.USER, "me") is None
    assert _events(server, "user.create") == []
    assert await server.backend.list(SIGNUP_PREFIX) == []


# -- users ----------------------------------------------------------------------------------
async def test_users_ls_shows_origin_and_status(auth: AuthServer) -> None:
    await auth.add_user("me", ["dev"], ["me"], actor="admin")
    rows = {r["name"]: r for r in await user_admin.list_users(auth)}
    assert rows["alice"]["origin"] == "git"
    assert rows["alice"]["logins"] == ["alice"]
    assert rows["me"] == {"name": "me", "roles": ["dev"], "logins": ["me"], "origin": "api",
                          "signed_up": False, "totp": False, "locked": False,
                          "locked_until": None}


async def test_update_of_a_git_user_is_refused_with_where_and_audited(auth: AuthServer) -> None:
    with pytest.raises(AccessDenied, match=r"owned by origin git.*Git repository.*commit"):
        await user_admin.update_user(auth, "alice", actor="admin", roles=["ops"])
    assert (await auth.store.get(Kind.USER, "alice")).spec["roles"] == ["dev"]
    refused = _events(auth, "user.update")
    assert refused[-1]["success"] is False
    assert refused[-1]["code"] == "L1002W"
    with pytest.raises(AccessDenied, match=r"cannot delete user 'alice'.*Git repository"):
        await user_admin.remove_user(auth, "alice", actor="admin")
    assert _events(auth, "user.delete")[-1]["code"] == "L1003W"
    assert await auth.store.find(Kind.USER, "alice") is not None


async def test_update_replaces_roles_and_logins_of_an_api_user(auth: AuthServer) -> None:
    await auth.add_user("me", ["dev"], ["me"], actor="admin")
    row = await user_admin.update_user(auth, "me", actor="admin", roles=["dev", "ops"],
                                       logins=["root", "me"])
    assert (row["roles"], row["logins"]) == (["dev", "ops"], ["root", "me"])
    stored = await auth.store.get(Kind.USER, "me")
    assert stored.origin is Origin.API
    assert stored.spec["traits"]["logins"] == ["root", "me"]
    with pytest.raises(NotFound, match="role 'nope' not found"):
        await user_admin.update_user(auth, "me", actor="admin", roles=["nope"])
    await user_admin.remove_user(auth, "me", actor="admin")
    assert await auth.store.find(Kind.USER, "me") is None


async def _store_creds(auth: AuthServer, name: str, creds: LocalCredentials) -> None:
    await auth.backend.put(CREDENTIALS_PREFIX + name, json.dumps(creds.to_dict()).encode())


async def test_reset_clears_password_and_totp_and_voids_old_links(auth: AuthServer) -> None:
    old_url = await auth.invite("alice", actor="admin")
    creds = LocalCredentials.new(auth.clock()).with_password("a long enough password 1",
                                                             auth.clock())
    await _store_creds(auth, "alice", creds.with_totp_secret(otp.new_secret(), auth.clock()))
    url = await user_admin.reset_user(auth, "alice", actor="admin")
    assert url != old_url
    assert url.startswith("https://127.0.0.1:3080/")
    assert await auth.backend.get(CREDENTIALS_PREFIX + "alice") is None
    assert len(await auth.backend.list(SIGNUP_PREFIX)) == 1  # only the new link
    assert _events(auth, "user.update")[-1]["action"] == "reset"


async def test_unlock_clears_a_lockout(auth: AuthServer) -> None:
    now = auth.clock()
    locked = LocalCredentials.new(now).with_lockout(
        LockoutState(failures=(now,) * 5, locked_until=now + 900), now)
    await _store_creds(auth, "bob", locked)
    assert (await user_admin.list_users(auth))[1]["locked"] is True
    assert await user_admin.unlock_user(auth, "bob", actor="admin") is True
    item = await auth.backend.get(CREDENTIALS_PREFIX + "bob")
    assert item is not None
    cleared = LocalCredentials.from_dict(json.loads(item.value))
    assert (cleared.failures, cleared.locked_until) == ((), None)
    assert await user_admin.unlock_user(auth, "bob", actor="admin") is False


# -- tokens ---------------------------------------------------------------------------------
async def test_tokens_are_listed_without_secret_and_removed_by_any_reference(
        auth: AuthServer) -> None:
    first, record = await auth.create_token("node", timedelta(minutes=5), actor="admin",
                                            labels={"env": "dev"}, single_use=False)
    second, other = await auth.create_token("trusted_cluster", timedelta(minutes=9),
                                            actor="admin")
    rows = await token_admin.list_tokens(auth)
    assert [(r["type"], r["single_use"]) for r in rows] == [("node", False),
                                                           ("trusted_cluster", True)]
    assert rows[0]["hint"] == first[:6]
    assert first not in json.dumps(rows)
    assert (await token_admin.find_token(auth, first)).name == record.name
    assert (await token_admin.find_token(auth, first[:6])).name == record.name
    assert (await token_admin.find_token(auth, other.name[:8])).name == other.name
    with pytest.raises(BadParameter, match="too short"):
        await token_admin.find_token(auth, "ab")
    with pytest.raises(NotFound, match="not found"):
        await token_admin.find_token(auth, "ffffffffffff")
    removed = await token_admin.remove_token(auth, second, actor="admin")
    assert removed["id"] == other.name
    assert [r["id"] for r in await token_admin.list_tokens(auth)] == [record.name]
    assert _events(auth, "join_token.delete")[-1]["token_id"] == other.name


# -- nodes ----------------------------------------------------------------------------------
def _node(name: str, hostname: str) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
            "metadata": {"name": name, "labels": {"env": "dev", "team": "platform"}},
            "spec": {"kind": "ssh", "hostname": hostname}}


async def test_nodes_by_hostname_or_id_and_ambiguous_names(auth: AuthServer) -> None:
    await heartbeat(auth, _node("web1", "web1"), "h-1", "proxy-1", "unit")
    await heartbeat(auth, _node("twin", "twin"), "h-2", "proxy-1", "unit")
    await heartbeat(auth, _node("twin", "twin"), "h-3", "proxy-1", "unit")
    rows = await node_admin.list_nodes(auth)
    assert [(r["hostname"], r["host_id"], r["tunnel"]) for r in rows] == [
        ("twin", "h-2", True), ("twin", "h-3", True), ("web1", "h-1", True)]
    assert (await node_admin.resolve_node(auth, "web1")).name == "web1"
    assert (await node_admin.resolve_node(auth, "h-3")).name == "twin"
    with pytest.raises(BadParameter, match=r"'twin' is ambiguous.*h-2, h-3"):
        await node_admin.resolve_node(auth, "twin")
    with pytest.raises(NotFound, match="not online"):
        await node_admin.resolve_node(auth, "gone")
    alice = await auth.store.get(Kind.USER, "alice")
    target = await node_admin.resolve_node(auth, "web1")
    allowed = await auth.access_check_target(alice, target, "alice")
    assert (allowed["allowed"], allowed["role"]) == (True, "dev")
    denied = await auth.access_check_target(alice, target, "root")
    assert denied["allowed"] is False
