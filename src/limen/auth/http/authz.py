"""Who may call what on the auth API: system roles and the ``rules`` of users' roles.

The caller's identity comes only from its client certificate, verified against this cluster's
TLS CA (type, cluster, expiry) on every request. Called by ``limen.auth.http.app``.
"""

from __future__ import annotations

from collections.abc import Iterable

from limen.api.resources import Kind
from limen.ca.identity import Identity, SystemRole
from limen.errors import AccessDenied
from limen.rbac.roleset import RoleSet

__all__ = ["require_rule", "require_system"]


def require_system(identity: Identity, roles: Iterable[SystemRole]) -> None:
    allowed = {SystemRole.ADMIN, *roles}
    if identity.system_role not in allowed:
        who = identity.system_role.value if identity.system_role else f"user {identity.username}"
        raise AccessDenied(f"{who} may not call this auth API endpoint")


def require_rule(identity: Identity, role_set: RoleSet | None, kind: Kind | str,
                 verb: str, *, system: Iterable[SystemRole] = ()) -> None:
    """Admins and the listed system roles pass; users need an allow rule and no deny rule."""
    if identity.system_role is SystemRole.ADMIN or identity.system_role in set(system):
        return
    if identity.system_role is not None or role_set is None:
        raise AccessDenied(f"{identity.system_role or identity.username} may not {verb} "
                           f"{kind if isinstance(kind, str) else kind.plural}")
    decision = role_set.check_rule(kind, verb)
    if not decision.allowed:
        raise AccessDenied(f"user {identity.username} may not {verb} "
                           f"{kind if isinstance(kind, str) else kind.plural}: {decision.reason}")
