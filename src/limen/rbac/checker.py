"""The facade for one identity: its RoleSet, plus ``explain`` for ``lmctl access check``.

``AccessChecker.for_user(user, role_names, traits, roles)`` resolves role names against the
known Role resources (a missing role is a warning, it grants nothing) and builds the
:class:`~limen.rbac.roleset.RoleSet`. ``explain(target, ...)`` picks the right check for a
target resource — a ``Resource`` of ``spec.kind`` ssh, db, kube or app; a trusted or remote
cluster; any other kind through the role ``rules`` — and :func:`describe` renders the answer
for ``lmctl access check USER KIND/NAME [--login L]``. Called by auth, the proxy and the CLIs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from limen.api.resources import Kind, Resource
from limen.errors import BadParameter
from limen.rbac.db_auto_users import db_own_name
from limen.rbac.decision import Decision
from limen.rbac.roleset import RoleSet

__all__ = ["AccessChecker", "describe"]


@dataclass(frozen=True)
class AccessChecker:
    user: str
    roles: RoleSet
    warnings: tuple[str, ...] = ()
    """Problems found while building the checker: missing roles and invalid role parts."""

    @classmethod
    def for_user(cls, user: str, role_names: Sequence[str],
                 traits: Mapping[str, Sequence[str] | str] | None,
                 roles: Mapping[str, Resource] | Sequence[Resource]) -> AccessChecker:
        known = roles if isinstance(roles, Mapping) else {r.name: r for r in roles}
        missing = [name for name in role_names if name not in known]
        role_set = RoleSet.from_roles(
            [known[name] for name in dict.fromkeys(role_names) if name in known], traits)
        warnings = tuple(f"role {name!r} does not exist; it grants nothing" for name in missing)
        return cls(user, role_set, warnings + role_set.warnings)

    def explain(self, target: Resource, *, login: str | None = None,
                db_user: str | None = None, db_name: str | None = None,
                kube_groups: Sequence[str] = (), kube_users: Sequence[str] = (),
                verb: str = "read", mfa_verified: bool = False) -> Decision:
        """Decide access to ``target`` with the check its kind calls for."""
        labels = dict(target.labels)
        if target.kind is Kind.RESOURCE:
            kind = str(target.spec.get("kind", ""))
            if kind == "ssh":
                if not login:
                    raise BadParameter(f"{target.key} is an SSH server: give --login")
                return self.roles.check_ssh(labels, login, mfa_verified=mfa_verified)
            if kind == "db":
                if not db_user:
                    raise BadParameter(f"{target.key} is a database: give --db-user")
                return self.roles.check_db(labels, db_user, db_name, mfa_verified=mfa_verified,
                                           own_name=db_own_name(target.spec, self.user))
            if kind == "kube":
                return self.roles.check_kube(labels, kube_groups, kube_users,
                                             mfa_verified=mfa_verified)
            if kind == "app":
                return self.roles.check_app(labels, mfa_verified=mfa_verified)
            raise BadParameter(f"{target.key} has an unknown spec.kind {kind!r}")
        if target.kind in (Kind.TRUSTED_CLUSTER, Kind.REMOTE_CLUSTER):
            return self.roles.check_cluster(labels)
        return self.roles.check_rule(target.kind, verb)


def describe(checker: AccessChecker, target: Resource, decision: Decision, *,
             principal: str | None = None) -> str:
    """Human-readable lines for ``lmctl access check``: verdict, deciding role and rule."""
    head = "ALLOWED" if decision.allowed else "DENIED"
    as_who = f" as {principal}" if principal else ""
    lines = [
        f"{head}: {checker.user} -> {target.key}{as_who}",
        f"  role:   {decision.role or '(none)'}",
        f"  rule:   {decision.rule}",
        f"  reason: {decision.reason}",
    ]
    if decision.allowed and decision.mfa_required:
        lines.append("  note:   a per-session MFA check is required")
    lines.extend(f"  warning: {w}" for w in checker.warnings)
    return "\n".join(lines)
