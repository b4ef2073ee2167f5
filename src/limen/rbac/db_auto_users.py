"""Automatic database users: whether a user's roles ask the db agent to create their database
user on a database, and which database roles that user gets.

Teleport's model (``create_db_user`` and ``db_roles``): the roles whose ``allow.db_labels``
match the database are the ones that count. Provisioning is on when one of them sets
``options.create_db_user: true``; the database roles are the union of their
``allow.db_roles`` minus every role's ``deny.db_roles`` (a denied ``*`` removes them all).
Whether the user may reach the database at all is :func:`limen.rbac.checks.check_db`'s
answer, asked before this one: given the user's :func:`db_own_name` for the database (only when
its Resource names an ``admin_user``), it reads provisioning as on when :func:`db_auto_user`
is, and then lets the user connect as that name only, without ``allow.db_users``.

Called by :meth:`limen.rbac.roleset.RoleSet.db_auto_user` (the db agent at each connection)
and :func:`limen.rbac.checks.check_db`; :func:`db_own_name` by every caller of ``check_db``
that knows the database's Resource (auth's login and listing, the proxy, the db agent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from limen.rbac.labels import WILDCARD
from limen.rbac.role import CompiledRole

__all__ = ["DBAutoUser", "creates_users", "db_auto_user", "db_own_name"]


@dataclass(frozen=True)
class DBAutoUser:
    """Provisioning is on for this database: the database roles to grant, sorted."""

    db_roles: tuple[str, ...]
    granted_by: tuple[str, ...]
    """The Limen roles that turned provisioning on (for the audit)."""


def db_auto_user(roles: Sequence[CompiledRole],
                 db_labels: Mapping[str, str]) -> DBAutoUser | None:
    """The auto-user plan for a database with ``db_labels``, or None when no role matching
    it sets ``create_db_user: true`` (or a role is broken: it grants nothing)."""
    if any(role.broken for role in roles):
        return None
    matching = [role for role in roles if role.allow.db_labels.matches(db_labels)]
    enabling = [role for role in matching if role.options.create_db_user is True]
    if not enabling:
        return None
    denied = {name for role in roles for name in role.deny.db_roles}
    granted = {name for role in matching for name in role.allow.db_roles}
    if WILDCARD in denied:
        granted = set()
    granted -= denied
    granted.discard(WILDCARD)  # '*' is not a database role: never granted as one
    return DBAutoUser(tuple(sorted(granted)), tuple(role.name for role in enabling))


def creates_users(db_spec: Mapping[str, Any] | None) -> bool:
    """Does the database create its users (its Resource's ``spec`` names an ``admin_user``)?"""
    admin = (db_spec or {}).get("admin_user")
    return isinstance(admin, Mapping) and isinstance(admin.get("name"), str) \
        and bool(admin["name"])


def db_own_name(db_spec: Mapping[str, Any] | None, username: str) -> str | None:
    """``username`` when the database can create its users (:func:`creates_users`), else
    None: what :func:`limen.rbac.checks.check_db` takes as ``own_name``."""
    return username if creates_users(db_spec) else None
