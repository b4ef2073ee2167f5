"""A user's roles, expanded once for their traits: access checks, certificate contents and
merged session options.

``RoleSet.from_roles(roles, traits)`` compiles every role once (see
:mod:`limen.rbac.role`); a role that cannot be compiled is reported in ``warnings`` instead
of raising. Roles are kept sorted by name so every answer is independent of role order.
Called by auth (certificate issuance), the proxy and agents (access checks) through
:class:`limen.rbac.checker.AccessChecker` or directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from limen.api.predicates import Context
from limen.api.resources import Kind, Resource
from limen.rbac import checks
from limen.rbac.db_auto_users import DBAutoUser, db_auto_user
from limen.rbac.decision import Decision
from limen.rbac.kube_request import KubeRequestInfo
from limen.rbac.kube_resources import check_kube_request
from limen.rbac.labels import WILDCARD
from limen.rbac.options import SessionOptions, merge_options
from limen.rbac.role import CompiledRole, compile_role

__all__ = ["RoleSet", "normalize_traits"]

Labels = Mapping[str, str]


def normalize_traits(traits: Mapping[str, Sequence[str] | str] | None
                     ) -> dict[str, tuple[str, ...]]:
    """Traits as ``{name: (values...)}``; a bare string becomes a one-value list."""
    out: dict[str, tuple[str, ...]] = {}
    for name, values in (traits or {}).items():
        out[name] = (values,) if isinstance(values, str) else tuple(str(v) for v in values)
    return out


def _order(role: Resource) -> tuple[str, str]:
    return role.name, json.dumps(dict(role.spec), sort_keys=True, default=str)


def _union(values: Iterable[Sequence[str]]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for seq in values:
        out.update(dict.fromkeys(seq))
    return tuple(sorted(out))


@dataclass(frozen=True)
class RoleSet:
    roles: tuple[CompiledRole, ...]
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_roles(cls, roles: Sequence[Resource],
                   traits: Mapping[str, Sequence[str] | str] | None) -> RoleSet:
        """Expand the templates of every role once for ``traits`` and compile them."""
        clean = normalize_traits(traits)
        warnings: list[str] = []
        compiled: list[CompiledRole] = []
        for role in sorted(roles, key=_order):
            if role.kind is not Kind.ROLE:
                warnings.append(f"{role.key} is not a Role; ignored")
                continue
            result = compile_role(role, clean)
            if result.problem:
                warnings.append(f"role {role.name!r}: {result.problem}")
            compiled.append(result)
        return cls(tuple(compiled), tuple(warnings))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.roles)

    # -- access decisions --------------------------------------------------------------

    def check_ssh(self, node_labels: Labels, login: str, *,
                  mfa_verified: bool = False) -> Decision:
        return checks.check_ssh(self.roles, node_labels, login, mfa_verified=mfa_verified)

    def check_kube(self, cluster_labels: Labels, groups: Sequence[str] = (),
                   users: Sequence[str] = (), *, mfa_verified: bool = False) -> Decision:
        return checks.check_kube(self.roles, cluster_labels, groups, users,
                                 mfa_verified=mfa_verified)

    def check_kube_request(self, cluster_labels: Labels, info: KubeRequestInfo) -> Decision:
        """One Kubernetes API request (``kubernetes_resources``, deny first); the caller has
        admitted the cluster with :meth:`check_kube`."""
        return check_kube_request(self.roles, cluster_labels, info)

    def check_db(self, db_labels: Labels, db_user: str, db_name: str | None = None, *,
                 mfa_verified: bool = False, own_name: str | None = None) -> Decision:
        """``own_name``: the Limen user's name when the database can create its users
        (:func:`limen.rbac.db_auto_users.db_own_name`); see :func:`limen.rbac.checks.check_db`."""
        return checks.check_db(self.roles, db_labels, db_user, db_name,
                               mfa_verified=mfa_verified, own_name=own_name)

    def db_users_on(self, db_labels: Labels, candidates: Iterable[str], *,
                    own_name: str | None = None) -> tuple[str, ...]:
        """The database users a listing shows for a database with these labels
        (:func:`limen.rbac.checks.db_users_on`)."""
        return checks.db_users_on(self.roles, db_labels, candidates, own_name=own_name)

    def db_auto_user(self, db_labels: Labels) -> DBAutoUser | None:
        """Whether the db agent creates the user's database user on a database with these
        labels, and with which database roles (:mod:`limen.rbac.db_auto_users`)."""
        return db_auto_user(self.roles, db_labels)

    def check_app(self, app_labels: Labels, *, mfa_verified: bool = False) -> Decision:
        return checks.check_app(self.roles, app_labels, mfa_verified=mfa_verified)

    def check_cluster(self, cluster_labels: Labels) -> Decision:
        return checks.check_cluster(self.roles, cluster_labels)

    def check_rule(self, kind: str | Kind, verb: str,
                   context: Context | None = None) -> Decision:
        """``verb`` on ``kind``; ``context`` feeds the rules' ``where`` (see
        :func:`limen.rbac.rule_context.rule_context`)."""
        return checks.check_rule(self.roles, kind, verb, context)

    def check_rule_possible(self, kind: str | Kind, verb: str) -> Decision:
        """``verb`` on some object of ``kind``, whatever the rules' ``where`` say."""
        return checks.check_rule_possible(self.roles, kind, verb)

    def kube_principals(self, cluster_labels: Labels
                        ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(groups, users) the user may impersonate on a cluster with these labels."""
        return checks.kube_principals(self.roles, cluster_labels)

    # -- certificate contents ----------------------------------------------------------

    def allowed_logins(self, node_labels: Labels | None = None) -> tuple[str, ...]:
        """Logins for certificate principals (``None``: every allowed login of every role,
        like GetAllLogins; deny is enforced at the node), or the logins usable on a node
        with ``node_labels`` (GetAllowedLoginsForResource)."""
        logins = _union(r.allow.logins for r in self.roles)
        if node_labels is None:
            return logins
        return tuple(login for login in logins
                     if self.check_ssh(node_labels, login, mfa_verified=True).allowed)

    def kube_groups(self) -> tuple[str, ...]:
        """Kubernetes groups for the certificate: every role's (CheckKubeGroupsAndUsers
        without a cluster: deny is applied per cluster at access time)."""
        return _union(r.allow.kubernetes_groups for r in self.roles)

    def kube_users(self) -> tuple[str, ...]:
        return _union(r.allow.kubernetes_users for r in self.roles)

    def _db_values(self, name: str) -> tuple[str, ...]:
        # CheckDatabaseNamesAndUsers: allowed values minus denied ones (no labels involved);
        # a denied '*' removes everything.
        allowed = set(_union(getattr(r.allow, name) for r in self.roles))
        denied = set(_union(getattr(r.deny, name) for r in self.roles))
        return () if WILDCARD in denied else tuple(sorted(allowed - denied))

    def db_users(self) -> tuple[str, ...]:
        return self._db_values("db_users")

    def db_names(self) -> tuple[str, ...]:
        return self._db_values("db_names")

    @cached_property
    def options(self) -> SessionOptions:
        """Options merged over all roles (see :func:`limen.rbac.options.merge_options`)."""
        return merge_options([r.options for r in self.roles])
