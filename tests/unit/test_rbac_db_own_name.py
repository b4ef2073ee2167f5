"""The database decision when a database creates its users (Teleport's automatic user
provisioning): ``RoleSet.check_db(..., own_name=...)`` and ``db_users_on`` for listings.

With the database's Resource naming an ``admin_user`` (``db_own_name`` gives the user's
name) and a role matching the database setting ``create_db_user``, the database user is the
Limen user's own name: ``allow.db_users`` is not consulted, another user is refused, deny
rules still win, ``db_names`` still count."""

from __future__ import annotations

from typing import Any

from limen.api.resources import Kind, Resource
from limen.rbac import RoleSet, db_own_name

PROD = {"env": "prod"}
DEV = {"env": "dev"}
SPEC = {"kind": "db", "protocol": "postgres", "address": "db:5432",
        "admin_user": {"name": "limen-admin"}}


def role(name: str, **spec: Any) -> Resource:
    return Resource(kind=Kind.ROLE, name=name, spec=spec)


AUTO = role("auto", options={"create_db_user": True},
            allow={"db_labels": PROD, "db_names": ["orders"], "db_roles": ["reader"]})
FIXED = role("fixed", allow={"db_labels": DEV, "db_users": ["app"], "db_names": ["*"]})


def test_the_own_name_needs_an_admin_user_on_the_resource() -> None:
    assert db_own_name(SPEC, "alice") == "alice"
    assert db_own_name({**SPEC, "admin_user": None}, "alice") is None
    assert db_own_name({**SPEC, "admin_user": {"name": ""}}, "alice") is None
    assert db_own_name({"kind": "db"}, "alice") is None
    assert db_own_name(None, "alice") is None


def test_create_db_user_lets_the_user_connect_as_its_own_name_without_db_users() -> None:
    roles = RoleSet.from_roles([AUTO], {})
    decision = roles.check_db(PROD, "alice", "orders", own_name="alice")
    assert decision.allowed
    assert decision.rule == "options.create_db_user"
    assert decision.role == "auto"
    # without the own name (no admin user on the database) db_users decide, as always
    assert not roles.check_db(PROD, "alice", "orders").allowed


def test_another_database_user_is_refused_even_one_db_users_allows() -> None:
    roles = RoleSet.from_roles([role("auto-any", options={"create_db_user": True}, allow={
        "db_labels": PROD, "db_users": ["*", "postgres"], "db_names": ["*"]})], {})
    decision = roles.check_db(PROD, "postgres", "orders", own_name="alice")
    assert not decision.allowed
    assert decision.rule == "options.create_db_user"
    assert "connect as your own name ('alice'), not 'postgres'" in decision.reason
    assert "auto-any" in decision.reason


def test_deny_rules_still_win_over_the_own_name() -> None:
    for deny in ({"db_users": ["alice"]}, {"db_users": ["*"]}, {"db_labels": PROD},
                 {"db_names": ["orders"]}):
        roles = RoleSet.from_roles([AUTO, role("no", deny=deny)], {})
        decision = roles.check_db(PROD, "alice", "orders", own_name="alice")
        assert not decision.allowed, deny
        assert decision.role == "no"
    templated = role("not-me", deny={"db_users": ["{{internal.db_users}}"]})
    roles = RoleSet.from_roles([AUTO, templated], {"db_users": ["alice"]})
    assert roles.check_db(PROD, "alice", "orders", own_name="alice").rule == "deny.db_users"


def test_db_names_still_count_and_only_roles_matching_the_database_grant() -> None:
    roles = RoleSet.from_roles([AUTO], {})
    refused = roles.check_db(PROD, "alice", "postgres", own_name="alice")
    assert not refused.allowed
    assert refused.rule == "allow.db_names"
    # MySQL has no database name at connect: the labels and the own name decide
    assert roles.check_db(PROD, "alice", None, own_name="alice").allowed
    assert roles.check_db(DEV, "alice", None, own_name="alice").rule == "allow.db_labels"


def test_provisioning_off_on_a_database_keeps_db_users() -> None:
    roles = RoleSet.from_roles([AUTO, FIXED], {})
    # dev: no role matching it sets create_db_user, so the own name changes nothing
    assert roles.check_db(DEV, "app", "x", own_name="alice").allowed
    assert roles.check_db(DEV, "alice", "x", own_name="alice").rule == "allow.db_users"


def test_a_role_matching_the_database_without_create_db_user_grants_with_the_own_name() -> None:
    names = role("names", allow={"db_labels": PROD, "db_names": ["reports"]})
    roles = RoleSet.from_roles([AUTO, names], {})
    decision = roles.check_db(PROD, "alice", "reports", own_name="alice")
    assert decision.allowed
    assert decision.role == "names"


def test_per_session_mfa_of_the_granting_role_applies() -> None:
    mfa = role("auto-mfa", options={"create_db_user": True, "require_session_mfa": True},
               allow={"db_labels": PROD, "db_names": ["*"]})
    roles = RoleSet.from_roles([mfa], {})
    assert not roles.check_db(PROD, "alice", "orders", own_name="alice").allowed
    assert roles.check_db(PROD, "alice", "orders", own_name="alice", mfa_verified=True).allowed


def test_a_broken_role_denies() -> None:
    broken = role("broken", options={"create_db_user": "maybe"})
    roles = RoleSet.from_roles([AUTO, broken], {})
    assert not roles.check_db(PROD, "alice", "orders", own_name="alice").allowed


def test_listings_show_the_own_name_alone_where_provisioning_is_on() -> None:
    roles = RoleSet.from_roles([AUTO, FIXED], {})
    assert roles.db_users_on(PROD, ["app", "bob"], own_name="alice") == ("alice",)
    assert roles.db_users_on(DEV, ["app", "bob"], own_name="alice") == ("app",)
    assert roles.db_users_on(PROD, ["app"]) == ()
    denied = RoleSet.from_roles([AUTO, role("no", deny={"db_users": ["alice"]})], {})
    assert denied.db_users_on(PROD, [], own_name="alice") == ()
