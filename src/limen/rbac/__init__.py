"""The RBAC engine: pure access decisions over roles (Teleport role v7 semantics). No I/O.

Public surface (everything else is private to the package)::

    AccessChecker.for_user(user, role_names, traits, roles)   facade for one identity
      .roles: RoleSet, .explain(target, login=...) -> Decision, describe(...) -> str
    RoleSet.from_roles(roles, traits)                         roles expanded once
      .check_ssh / check_kube / check_db / check_app / check_cluster / check_rule -> Decision
      .check_rule(kind, verb, context)  rules with a ``where`` (limen.api.predicates), the
                                        context from rule_context(user, roles, traits, ...)
      .allowed_logins / kube_groups / kube_users / db_users / db_names   certificate contents
      .kube_principals(cluster_labels), .options -> SessionOptions, .warnings
      .db_auto_user(db_labels) -> DBAutoUser | None   create_db_user and db_roles
      .check_db(..., own_name=db_own_name(db_spec, username))  the own name, when the
                                        database creates users; .db_users_on for listings

Layout: ``labels`` (selectors), ``traits`` (template expansion), ``options`` (parse and
merge), ``role`` (one compiled role), ``checks`` (the decisions), ``roleset``, ``checker``,
``context`` (the fields a rule's ``where`` reads), ``presets`` (the preset roles),
``db_auto_users`` (automatic database users).
"""

from limen.rbac.checker import AccessChecker, describe
from limen.rbac.checks import RULE_RESOURCES, RULE_VERBS, rule_kind
from limen.rbac.db_auto_users import DBAutoUser, db_own_name
from limen.rbac.decision import Decision
from limen.rbac.options import DEFAULT_MAX_SESSION_TTL, RoleOptions, SessionOptions
from limen.rbac.roleset import RoleSet
from limen.rbac.rule_context import rule_context

__all__ = [
    "DEFAULT_MAX_SESSION_TTL",
    "RULE_RESOURCES",
    "RULE_VERBS",
    "AccessChecker",
    "DBAutoUser",
    "Decision",
    "RoleOptions",
    "RoleSet",
    "SessionOptions",
    "db_own_name",
    "describe",
    "rule_context",
    "rule_kind",
]
