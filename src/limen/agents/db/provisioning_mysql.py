"""Automatic database users on MariaDB, run over the admin connection
(:class:`~limen.agents.db.admin_mysql.MySQLAdmin`).

A user Limen manages is the account ``'<name>'@'%'`` granted the role ``limen-auto-users``
(created when missing; it holds no privileges). MariaDB activates one default role at login,
so the database roles go through one role per user, ``limen-auto-<20 hex of the name's
SHA-256>``: it is the account's default role and is granted exactly the ``db_roles``.

* :func:`activate`: create the account when missing (``REQUIRE SUBJECT '/CN=<name>'``, no
  password), refuse a pre-existing account that does not hold ``limen-auto-users``, grant
  the per-user role exactly the database roles asked for (revoke the others), make it the
  default role, ``ACCOUNT UNLOCK``.
* :func:`deactivate`: unless the server still has other connections of the user (another
  db agent's: seen when the admin user holds PROCESS), revoke the per-user role's database
  roles, ``ACCOUNT LOCK``.

MariaDB has no transactional DDL: each step is idempotent and the next session's activation
repairs a half-done one. Names are SQL strings (quotes doubled, backslashes escaped, with
NO_BACKSLASH_ESCAPES turned off for the connection); a name with a backslash or a control
character is refused (the certificate subject MariaDB compares could then match another
user's). Called by :mod:`limen.agents.db.provisioning`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from limen.agents.db.admin_mysql import MySQLAdmin
from limen.agents.db.provisioning_errors import ProvisioningRefused
from limen.agents.db.provisioning_plan import Change, sessions_left

__all__ = ["MARKER_ROLE", "activate", "certificate_subject", "check_name", "deactivate",
           "prepare", "quote_string", "user_role"]

MARKER_ROLE = "limen-auto-users"


def check_name(name: str) -> str:
    """``name`` when it can be a user or role name here: not empty, no backslash (OpenSSL's
    one-line subject leaves one as is, so the subject could match another user's), no
    control character."""
    if not name or "\\" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ProvisioningRefused(f"{name!r} cannot be a MariaDB user or role name here "
                                  "(empty, a backslash or a control character)")
    return name


def quote_string(text: str) -> str:
    """``text`` as a MariaDB string literal: quotes doubled, backslashes escaped (the admin
    connection turns NO_BACKSLASH_ESCAPES off: :func:`prepare`); a NUL is refused."""
    if "\0" in text:
        raise ProvisioningRefused(f"{text!r} contains a NUL")
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


async def prepare(admin: MySQLAdmin) -> None:
    """Make backslashes escape in string literals for this connection, whatever the server's
    sql_mode."""
    await admin.query("SET SESSION sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')")


def _account(user: str) -> str:
    return f"{quote_string(check_name(user))}@'%'"


def user_role(user: str) -> str:
    """The per-user role holding ``user``'s database roles."""
    return "limen-auto-" + hashlib.sha256(user.encode("utf-8")).hexdigest()[:20]


def _subject_byte(byte: int) -> str:
    if not 0x20 <= byte <= 0x7E:
        return f"\\x{byte:02X}"
    return ("\\" if byte in b"/+" else "") + chr(byte)


def certificate_subject(user: str) -> str:
    """The subject of Limen's certificate for ``user`` as MariaDB compares it (OpenSSL 3's
    one-line form; as ``lmctl auth sign --format db`` prints it)."""
    return "/CN=" + "".join(_subject_byte(byte) for byte in user.encode("utf-8"))


async def _managed(admin: MySQLAdmin, user: str) -> bool | None:
    """None: no account ``user``@'%'; else whether it holds the marker role."""
    name = quote_string(check_name(user))
    found = await admin.query(
        f"SELECT 1 FROM mysql.user WHERE User = {name} "  # noqa: S608 (quoted)
        "AND Host = '%' AND is_role = 'N'")
    if not found:
        return None
    marker = quote_string(MARKER_ROLE)
    return bool(await admin.query(
        f"SELECT 1 FROM mysql.roles_mapping WHERE User = {name} "  # noqa: S608 (quoted)
        f"AND Host = '%' AND Role = {marker}"))


async def _sessions(admin: MySQLAdmin, user: str) -> int:
    """The connections of ``user`` the server has, but this admin connection's (all of them
    only when the admin user holds the PROCESS privilege; else none is seen)."""
    rows = await admin.query(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "  # noqa: S608 (name quoted)
        f"WHERE USER = {quote_string(check_name(user))} AND ID <> CONNECTION_ID()")
    return int(rows[0][0] or 0) if rows else 0


async def _role_grants(admin: MySQLAdmin, role: str) -> set[str]:
    """The roles granted to the role ``role``."""
    name = quote_string(role)
    rows = await admin.query(
        f"SELECT Role FROM mysql.roles_mapping WHERE User = {name} "  # noqa: S608 (quoted)
        "AND Host = ''")
    return {str(row[0]) for row in rows}


async def activate(admin: MySQLAdmin, user: str, db_roles: Sequence[str]) -> Change:
    """Create or enable ``user`` with exactly ``db_roles``; ProvisioningRefused for an account
    Limen does not manage, AdminQueryFailed when the database refuses."""
    account = _account(user)
    bundle = user_role(user)
    wanted = {name for name in db_roles if name not in (MARKER_ROLE, bundle)}
    for name in wanted:
        check_name(name)
    await prepare(admin)
    await admin.query(f"CREATE ROLE IF NOT EXISTS {quote_string(MARKER_ROLE)}")
    managed = await _managed(admin, user)
    if managed is False:
        raise ProvisioningRefused(
            f"the MariaDB account {user!r}@'%' exists and is not managed by Limen (it does not "
            f"hold the role {MARKER_ROLE!r}): Limen does not touch it")
    created = managed is None
    if created:
        await admin.query(f"CREATE USER {account} REQUIRE SUBJECT "
                          f"{quote_string(certificate_subject(user))} ACCOUNT LOCK")
        await admin.query(f"GRANT {quote_string(MARKER_ROLE)} TO {account}")
    await admin.query(f"CREATE ROLE IF NOT EXISTS {quote_string(bundle)}")
    await admin.query(f"GRANT {quote_string(bundle)} TO {account}")
    current = await _role_grants(admin, bundle)
    revoked = sorted(current - wanted)
    granted = sorted(wanted - current)
    for name in revoked:
        await admin.query(f"REVOKE {quote_string(name)} FROM {quote_string(bundle)}")
    for name in granted:
        await admin.query(f"GRANT {quote_string(name)} TO {quote_string(bundle)}")
    await admin.query(f"SET DEFAULT ROLE {quote_string(bundle)} FOR {account}")
    await admin.query(f"ALTER USER {account} ACCOUNT UNLOCK")
    return Change(created=created, granted=tuple(granted), revoked=tuple(revoked))


async def deactivate(admin: MySQLAdmin, user: str) -> Change:
    """Revoke ``user``'s database roles and lock the account (one Limen does not manage is
    refused; a missing one is no change)."""
    await prepare(admin)
    managed = await _managed(admin, user)
    if managed is None:
        return Change()
    if not managed:
        raise ProvisioningRefused(f"the MariaDB account {user!r}@'%' is not managed by Limen")
    in_use = await sessions_left(lambda: _sessions(admin, user))
    if in_use:
        return Change(in_use=in_use)
    account = _account(user)
    await admin.query(f"ALTER USER {account} ACCOUNT LOCK")
    bundle = user_role(user)
    revoked = sorted(await _role_grants(admin, bundle))
    for name in revoked:
        await admin.query(f"REVOKE {quote_string(name)} FROM {quote_string(bundle)}")
    return Change(revoked=tuple(revoked))
