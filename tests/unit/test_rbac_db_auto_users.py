"""Automatic database users in RBAC: ``options.create_db_user`` and ``allow/deny.db_roles``
(templated), merged over the roles matching a database (``RoleSet.db_auto_user``); the
Resource's ``admin_user`` and the role option in validation; the agent's plan (own name)."""

from __future__ import annotations

from typing import Any

import pytest

from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Resource
from limen.api.validation import validate
from limen.errors import ValidationFailed
from limen.rbac import RoleSet

PROD = {"env": "prod"}
DEV = {"env": "dev"}


def role(name: str, **spec: Any) -> Resource:
    return Resource(kind=Kind.ROLE, name=name, spec=spec)


AUTO = role("auto", options={"create_db_user": True}, allow={
    "db_labels": {"env": "*"}, "db_users": ["*"], "db_names": ["*"],
    "db_roles": ["reader", "{{internal.db_roles}}"]})
WRITER_ON_DEV = role("writer", allow={"db_labels": DEV, "db_roles": ["writer"]})
NO_ADMIN = role("no-admin", deny={"db_roles": ["admin"]})


def test_no_role_with_create_db_user_means_no_provisioning() -> None:
    roles = RoleSet.from_roles([WRITER_ON_DEV], {})
    assert roles.db_auto_user(DEV) is None


def test_db_roles_are_the_union_of_the_matching_roles_templated_minus_the_denied() -> None:
    roles = RoleSet.from_roles([AUTO, WRITER_ON_DEV, NO_ADMIN],
                               {"db_roles": ["admin", "audit"]})
    on_dev = roles.db_auto_user(DEV)
    assert on_dev is not None
    assert on_dev.db_roles == ("audit", "reader", "writer")
    assert on_dev.granted_by == ("auto",)
    on_prod = roles.db_auto_user(PROD)
    assert on_prod is not None
    assert on_prod.db_roles == ("audit", "reader")  # writer's db_labels do not match prod


def test_a_role_not_matching_the_database_does_not_turn_provisioning_on() -> None:
    only_dev = role("only-dev", options={"create_db_user": True},
                    allow={"db_labels": DEV, "db_roles": ["reader"]})
    roles = RoleSet.from_roles([only_dev], {})
    assert roles.db_auto_user(PROD) is None
    assert roles.db_auto_user(DEV) is not None


def test_a_denied_wildcard_removes_every_db_role_and_a_trait_cannot_be_a_wildcard() -> None:
    roles = RoleSet.from_roles([AUTO, role("none", deny={"db_roles": ["*"]})], {})
    auto = roles.db_auto_user(DEV)
    assert auto is not None
    assert auto.db_roles == ()
    crafted = RoleSet.from_roles([AUTO], {"db_roles": ["*"]}).db_auto_user(DEV)
    assert crafted is not None
    assert crafted.db_roles == ("reader",)


def test_a_broken_role_turns_provisioning_off() -> None:
    broken = role("broken", options={"create_db_user": "maybe"})
    assert RoleSet.from_roles([AUTO, broken], {}).db_auto_user(DEV) is None


def _doc(data: dict[str, Any]) -> SourceDocument:
    return SourceDocument(data=data, source="test.yaml", index=0, line=1)


def _db(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
            "metadata": {"name": "orders"},
            "spec": {"kind": "db", "protocol": "postgres", "address": "db:5432", **spec}}


def test_admin_user_is_validated_on_db_resources_only() -> None:
    [ok] = validate([_doc(_db(admin_user={"name": "limen-admin",
                                          "default_database": "postgres"}))])
    assert ok.spec["admin_user"]["name"] == "limen-admin"
    with pytest.raises(ValidationFailed, match="admin_user"):
        validate([_doc(_db(admin_user={"default_database": "postgres"}))])
    with pytest.raises(ValidationFailed, match="admin_user"):
        validate([_doc(_db(admin_user={"name": "a", "password": "x"}))])
    ssh = {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource", "metadata": {"name": "n"},
           "spec": {"kind": "ssh", "address": "n:22", "admin_user": {"name": "a"}}}
    with pytest.raises(ValidationFailed, match="only applies to kind db"):
        validate([_doc(ssh)])


def test_create_db_user_is_a_role_option() -> None:
    doc = {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "auto"},
           "spec": {"options": {"create_db_user": True},
                    "allow": {"db_roles": ["reader", "{{external.team}}"]}}}
    [ok] = validate([_doc(doc)])
    assert ok.spec["options"]["create_db_user"] is True
    doc["spec"]["options"] = {"create_db_user": "sometimes"}
    with pytest.raises(ValidationFailed, match="create_db_user"):
        validate([_doc(doc)])
