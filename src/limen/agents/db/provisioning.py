"""Automatic database users at the db agent (Teleport's ``admin_user`` / ``create_db_user``).

When a database's Resource names an ``admin_user`` and one of the user's roles matching it
sets ``options.create_db_user: true`` (:meth:`limen.rbac.RoleSet.db_auto_user`), the agent,
before it logs in as the user, logs in as the admin user (its certificate from Limen's DB
CA, no password) and creates or enables the database user named after the Limen user, with
exactly the roles' ``db_roles``; when the user's last session on that database server ends,
it revokes them and disables the user::

    session ──▶ AutoUsers.provisioned(session, plan)
                  first or later session: admin login ──▶ activate (create/enable, grants)
                  ──▶ the session is served (logged in as the user itself)
                  last session ends:       admin login ──▶ deactivate (revoke, disable)

The requested database user must be the Limen user's name. Sessions are counted per
database server and user (one lock each): activation runs for each session (the grants
follow the roles as they are now), deactivation once the count is back to zero. A refusal
(a pre-existing user Limen does not manage, a name the database cannot hold, the database
refusing a statement) refuses the session; each step is audited: ``db.user.provisioned``
and ``db.user.deactivated`` with what changed or the reason.

Called by :mod:`limen.agents.db.db_service`; the SQL is in
:mod:`limen.agents.db.provisioning_postgres` and :mod:`limen.agents.db.provisioning_mysql`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from limen.agents.db import provisioning_mysql, provisioning_postgres
from limen.agents.db.admin_mysql import MySQLAdmin
from limen.agents.db.admin_postgres import PostgresAdmin
from limen.agents.db.provisioning_errors import AdminQueryFailed
from limen.agents.db.provisioning_plan import Change
from limen.agents.db.session import DBSession
from limen.agents.db.upstream_tls import UpstreamCerts, UpstreamTarget, upstream_target
from limen.api.resources import Resource
from limen.errors import AccessDenied, LimenError
from limen.rbac import DBAutoUser

__all__ = ["AdminUser", "AutoUsers", "admin_user"]

log = logging.getLogger(__name__)

_FAILURES = (LimenError, OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError)


@dataclass(frozen=True)
class AdminUser:
    """A Resource's ``spec.admin_user``."""

    name: str
    default_database: str


def admin_user(db: Resource) -> AdminUser | None:
    """The database's admin user, or None when its Resource names none."""
    raw = db.spec.get("admin_user")
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        return None
    default = raw.get("default_database")
    if not isinstance(default, str) or not default:
        default = "postgres" if db.spec.get("protocol") == "postgres" else ""
    return AdminUser(raw["name"], default)


def plan(session: DBSession) -> DBAutoUser | None:
    """The provisioning plan of ``session``: None when the database has no admin user or no
    role matching it sets ``create_db_user``; AccessDenied when the requested database user
    is not the Limen user's name."""
    if admin_user(session.db) is None:
        return None
    auto = session.role_set.db_auto_user(session.db.labels)
    if auto is None:
        return None
    if session.db_user != session.identity.username:
        raise AccessDenied(
            f"database {session.db.name} creates database users for the roles "
            f"{', '.join(auto.granted_by)}: connect as your own name "
            f"({session.identity.username!r}), not {session.db_user!r}")
    return auto


@dataclass
class _UserState:
    """One database user on one server: its lock, its sessions, and the tasks holding it
    (sessions and those waiting for the lock: the state is dropped when none is left)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sessions: int = 0
    holders: int = 0


class AutoUsers:
    """The agent's provisioned database users: sessions per (server, user), one lock each."""

    def __init__(self, certs: UpstreamCerts) -> None:
        self._certs = certs
        self._users: dict[tuple[str, str, int, str], _UserState] = {}

    @contextlib.asynccontextmanager
    async def provisioned(self, session: DBSession, auto: DBAutoUser) -> AsyncIterator[None]:
        """Activate the session's database user (AccessDenied, audited, when that fails),
        hold it while the session runs, and deactivate it after the last session."""
        admin = admin_user(session.db)
        assert admin is not None
        target = upstream_target(session.db)
        key = (str(session.db.spec.get("protocol")), target.host, target.port, session.db_user)
        state = self._users.setdefault(key, _UserState())
        state.holders += 1
        try:
            async with state.lock:
                await self._activate(session, admin, target, auto)
                state.sessions += 1
            try:
                yield
            finally:
                async with state.lock:
                    state.sessions -= 1
                    if state.sessions == 0:
                        await self._deactivate(session, admin, target)
        finally:
            state.holders -= 1
            if state.holders == 0:
                self._users.pop(key, None)

    async def _activate(self, session: DBSession, admin: AdminUser, target: UpstreamTarget,
                        auto: DBAutoUser) -> None:
        try:
            change = await self._run(session, admin, target, "activate", auto.db_roles)
        except _FAILURES as err:
            reason = _reason(err)
            await session.emit("db.user.provisioned", success=False, reason=reason,
                               db_roles=list(auto.db_roles), admin_user=admin.name)
            raise AccessDenied(f"cannot provision database user {session.db_user!r}: "
                               f"{reason}") from None
        await session.emit("db.user.provisioned", db_roles=list(auto.db_roles),
                           created=change.created, granted=list(change.granted),
                           revoked=list(change.revoked), admin_user=admin.name,
                           roles=list(auto.granted_by))

    async def _deactivate(self, session: DBSession, admin: AdminUser,
                          target: UpstreamTarget) -> None:
        try:
            change = await self._run(session, admin, target, "deactivate", ())
        except _FAILURES as err:
            reason = _reason(err)
            log.warning("db agent: cannot disable database user %r of %s: %s",
                        session.db_user, session.db.name, reason)
            await session.emit("db.user.deactivated", success=False, reason=reason,
                               admin_user=admin.name)
            return
        if change.in_use:
            reason = (f"left enabled: the database still has {change.in_use} other "
                      "session(s) of the user (another db agent's, or a direct login)")
            log.info("db agent: database user %r of %s %s", session.db_user,
                     session.db.name, reason)
            await session.emit("db.user.deactivated", success=False, reason=reason,
                               in_use=change.in_use, admin_user=admin.name)
            return
        await session.emit("db.user.deactivated", revoked=list(change.revoked),
                           admin_user=admin.name)

    async def _run(self, session: DBSession, admin: AdminUser, target: UpstreamTarget,
                   step: str, db_roles: tuple[str, ...]) -> Change:
        context = await self._certs.context(target, admin.name)
        user = session.db_user
        if session.db.spec.get("protocol") == "postgres":
            pg = await PostgresAdmin.connect(target, context, admin.name,
                                             admin.default_database)
            async with pg:
                if step == "activate":
                    return await provisioning_postgres.activate(pg, user, db_roles)
                return await provisioning_postgres.deactivate(pg, user)
        my = await MySQLAdmin.connect(target, context, admin.name, admin.default_database)
        async with my:
            if step == "activate":
                return await provisioning_mysql.activate(my, user, db_roles)
            return await provisioning_mysql.deactivate(my, user)


def _reason(err: BaseException) -> str:
    if isinstance(err, AdminQueryFailed):
        return f"the database refused: {err}"
    if isinstance(err, TimeoutError):
        return "the database did not answer in time"
    if isinstance(err, asyncio.IncompleteReadError):
        return "the database closed the connection"
    if isinstance(err, (OSError, ssl.SSLError)):
        return f"cannot log in as the admin user: {err}"
    return str(err) or type(err).__name__
