"""Automatic database users on PostgreSQL, run over the admin connection
(:class:`~limen.agents.db.admin_postgres.PostgresAdmin`).

A user Limen manages is a role that is a member of the group role ``limen-auto-users``
(created NOLOGIN when missing; it holds no privileges) and carries a comment saying so.

* :func:`activate`, in one transaction: create the role ``LOGIN`` when missing (pg_hba
  ``cert`` then maps the certificate's CN to it), refuse a pre-existing role that is not a
  member of ``limen-auto-users``, grant exactly the database roles asked for (revoke the
  other memberships it has, all granted by Limen earlier), ``ALTER ROLE ... LOGIN``.
* :func:`deactivate`: unless ``pg_stat_activity`` still shows other sessions of the user
  (another db agent's), in one transaction: revoke every membership but the marker and
  ``ALTER ROLE ... NOLOGIN`` (the role and what it owns stay).

Names are quoted as identifiers (double quotes doubled) and as literals (single quotes
doubled, with ``standard_conforming_strings`` set on for the connection); a NUL or a name
longer than PostgreSQL's 63 bytes (which it would silently truncate, matching another role)
is refused. Called by :mod:`limen.agents.db.provisioning`.
"""

from __future__ import annotations

from collections.abc import Sequence

from limen.agents.db.admin_postgres import PostgresAdmin
from limen.agents.db.provisioning_errors import ProvisioningRefused
from limen.agents.db.provisioning_plan import Change, sessions_left

__all__ = ["MARKER_ROLE", "activate", "deactivate", "quote_ident", "quote_literal"]

MARKER_ROLE = "limen-auto-users"
_MAX_NAME_BYTES = 63
_COMMENT = "Created by Limen for the Limen user of this name; enabled while they have a session"


def quote_ident(name: str) -> str:
    """``name`` as a PostgreSQL identifier: in double quotes, inner ones doubled."""
    if not name or "\0" in name:
        raise ProvisioningRefused(f"{name!r} cannot be a PostgreSQL role name")
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        raise ProvisioningRefused(f"{name!r} is longer than PostgreSQL's {_MAX_NAME_BYTES} "
                                  "bytes for a role name")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as a string literal under ``standard_conforming_strings = on``."""
    if "\0" in text:
        raise ProvisioningRefused(f"{text!r} contains a NUL")
    return "'" + text.replace("'", "''") + "'"


async def _begin(admin: PostgresAdmin) -> None:
    await admin.query("SET standard_conforming_strings = on; BEGIN")


async def _managed(admin: PostgresAdmin, user: str) -> bool | None:
    """None: no role ``user``; else whether it is a direct member of the marker role (and no
    superuser: ``pg_has_role`` would say a superuser is a member of everything, so only
    ``pg_auth_members`` is read)."""
    name, marker = quote_literal(user), quote_literal(MARKER_ROLE)
    rows = await admin.query(
        "SELECT NOT r.rolsuper AND EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members a "  # noqa: S608
        "JOIN pg_catalog.pg_roles m ON m.oid = a.roleid "
        f"WHERE a.member = r.oid AND m.rolname = {marker}) "
        f"FROM pg_catalog.pg_roles r WHERE r.rolname = {name}")
    if not rows:
        return None
    return rows[0][0] == "t"


async def _sessions(admin: PostgresAdmin, user: str) -> int:
    """The sessions of ``user`` the server has, but this admin connection's."""
    rows = await admin.query(
        "SELECT count(*) FROM pg_catalog.pg_stat_activity "  # noqa: S608 (name quoted)
        f"WHERE usename = {quote_literal(user)} AND pid <> pg_backend_pid()")
    return int(rows[0][0] or 0) if rows else 0


async def _memberships(admin: PostgresAdmin, user: str) -> set[str]:
    """The roles ``user`` is a direct member of, but the marker."""
    name, marker = quote_literal(user), quote_literal(MARKER_ROLE)
    rows = await admin.query(
        "SELECT g.rolname FROM pg_catalog.pg_auth_members a "  # noqa: S608 (names quoted)
        "JOIN pg_catalog.pg_roles g ON g.oid = a.roleid "
        "JOIN pg_catalog.pg_roles u ON u.oid = a.member "
        f"WHERE u.rolname = {name} AND g.rolname <> {marker}")
    return {str(row[0]) for row in rows}


async def activate(admin: PostgresAdmin, user: str, db_roles: Sequence[str]) -> Change:
    """Create or enable ``user`` with exactly ``db_roles``; ProvisioningRefused for a role
    Limen does not manage, AdminQueryFailed when the database refuses (rolled back)."""
    role = quote_ident(user)
    wanted = {name for name in db_roles if name != MARKER_ROLE}
    for name in wanted:
        quote_ident(name)
    await _begin(admin)
    try:
        marker = quote_literal(MARKER_ROLE)
        if not await admin.query(
                f"SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {marker}"):  # noqa: S608
            await admin.query(f"CREATE ROLE {quote_ident(MARKER_ROLE)} NOLOGIN")
        managed = await _managed(admin, user)
        if managed is False:
            raise ProvisioningRefused(
                f"the PostgreSQL role {user!r} exists and is not managed by Limen (not a "
                f"member of {MARKER_ROLE!r}): Limen does not touch it")
        created = managed is None
        if created:
            await admin.query(f"CREATE ROLE {role} LOGIN INHERIT")
            await admin.query(f"GRANT {quote_ident(MARKER_ROLE)} TO {role}")
            await admin.query(f"COMMENT ON ROLE {role} IS {quote_literal(_COMMENT)}")
        current = await _memberships(admin, user)
        revoked = sorted(current - wanted)
        granted = sorted(wanted - current)
        for name in revoked:
            await admin.query(f"REVOKE {quote_ident(name)} FROM {role}")
        for name in granted:
            await admin.query(f"GRANT {quote_ident(name)} TO {role}")
        await admin.query(f"ALTER ROLE {role} LOGIN")
        await admin.query("COMMIT")
    except BaseException:
        await _rollback(admin)
        raise
    return Change(created=created, granted=tuple(granted), revoked=tuple(revoked))


async def deactivate(admin: PostgresAdmin, user: str) -> Change:
    """Revoke every database role of ``user`` and make it NOLOGIN (a role Limen does not
    manage is refused; a missing one is no change)."""
    role = quote_ident(user)
    in_use = await sessions_left(lambda: _sessions(admin, user))
    if in_use:
        return Change(in_use=in_use)
    await _begin(admin)
    try:
        managed = await _managed(admin, user)
        if managed is None:
            await admin.query("COMMIT")
            return Change()
        if not managed:
            raise ProvisioningRefused(f"the PostgreSQL role {user!r} is not managed by Limen")
        revoked = sorted(await _memberships(admin, user))
        for name in revoked:
            await admin.query(f"REVOKE {quote_ident(name)} FROM {role}")
        await admin.query(f"ALTER ROLE {role} NOLOGIN")
        await admin.query("COMMIT")
    except BaseException:
        await _rollback(admin)
        raise
    return Change(revoked=tuple(revoked))


async def _rollback(admin: PostgresAdmin) -> None:
    try:
        await admin.query("ROLLBACK")
    except Exception:  # the connection is closed right after: the first error counts
        return
