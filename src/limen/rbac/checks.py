"""The access decisions, as pure functions over a user's compiled roles.

Every check follows Teleport's ``RoleSet.checkAccess`` (``lib/services/role.go``):

1. a broken role (its deny rules could not be evaluated) denies everything;
2. deny is checked first, over ALL roles, and wins. A role's deny matches when its deny
   label selector matches the resource, OR when its deny principal list (logins, db users,
   db names, kube groups/users) contains the requested principal — deny is "greedy";
3. allow needs ONE role whose allow labels match the resource AND whose allow principal
   lists hold every requested principal (two roles each matching half do not add up);
4. when a granting role sets ``require_session_mfa``, access also needs a verified
   per-session MFA (callers pass ``mfa_verified``; the default denies).

Roles are given sorted by name (see :class:`limen.rbac.roleset.RoleSet`), so the deciding
role reported in a :class:`~limen.rbac.decision.Decision` does not depend on role order.
Called by :class:`limen.rbac.roleset.RoleSet`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from limen.api.predicates import Context
from limen.api.resources import Kind, parse_kind
from limen.errors import BadParameter
from limen.rbac.db_auto_users import db_auto_user
from limen.rbac.decision import Decision, allow, deny
from limen.rbac.labels import WILDCARD
from limen.rbac.role import CompiledRole, Rule

__all__ = [
    "RULE_RESOURCES",
    "RULE_VERBS",
    "check_app",
    "check_cluster",
    "check_db",
    "check_kube",
    "check_rule",
    "check_rule_possible",
    "check_ssh",
    "db_users_on",
    "kube_principals",
    "rule_kind",
]

Labels = Mapping[str, str]

RULE_RESOURCES = (
    "role", "user", "token", "trusted_cluster", "resource", "cluster", "session", "event",
    WILDCARD,
)
"""The Limen kinds a role's ``rules`` speak about (``*`` = all of them)."""
RULE_VERBS = ("list", "create", "read", "update", "delete", WILDCARD)


def _names(roles: Iterable[CompiledRole]) -> str:
    return ", ".join(sorted({r.name for r in roles}))


def _listed(values: Sequence[str], wanted: str, *, wildcard: bool) -> bool:
    return wanted in values or (wildcard and WILDCARD in values)


def _broken(roles: Sequence[CompiledRole]) -> Decision | None:
    # Fail closed: a role whose deny section could not be compiled denies everything.
    for role in roles:
        if role.broken:
            return deny(role.name, "deny", f"role {role.name!r} is invalid: {role.problem}")
    return None


def _granted(granting: Sequence[CompiledRole], rule: str, reason: str, mfa_verified: bool,
             deciding: CompiledRole | None = None) -> Decision:
    # checkAccess: every fully matching role is looked at; one requiring per-session MFA
    # makes the access need MFA (require_session_mfa), even if another role does not.
    needing = [r for r in granting if r.options.require_session_mfa]
    if needing and not mfa_verified:
        return deny(needing[0].name, "options.require_session_mfa",
                    f"role {needing[0].name!r} requires a per-session MFA check",
                    mfa_required=True)
    first = deciding or granting[0]
    return allow(first.name, rule, reason.replace("{role}", repr(first.name)),
                 mfa_required=bool(needing))


def check_ssh(roles: Sequence[CompiledRole], node_labels: Labels, login: str, *,
              mfa_verified: bool = False) -> Decision:
    """May the user log in as ``login`` on a node with ``node_labels``?"""
    if broken := _broken(roles):
        return broken
    for role in roles:
        # deny.node_labels matching the node denies every login on it.
        if role.deny.node_labels.matches(node_labels):
            return deny(role.name, "deny.node_labels",
                        f"role {role.name!r} denies nodes labelled "
                        f"{role.deny.node_labels.describe()}")
        # deny.logins denies that login on every node, whatever the deny labels say
        # ('*' denies every login: Limen reads it as Teleport's wildcard denial).
        if _listed(role.deny.logins, login, wildcard=True):
            return deny(role.name, "deny.logins", f"role {role.name!r} denies login {login!r}")
    by_labels = [r for r in roles if r.allow.node_labels.matches(node_labels)]
    granting = [r for r in by_labels if login in r.allow.logins]  # exact: no '*' in allow
    if granting:
        return _granted(granting, "allow.logins",
                        f"role {{role}} allows login {login!r} on nodes matching "
                        "its node_labels", mfa_verified)
    if by_labels:
        return deny(None, "allow.logins", f"login {login!r} is not allowed by the roles "
                    f"matching the node ({_names(by_labels)})")
    by_login = [r for r in roles if login in r.allow.logins]
    if by_login:
        return deny(None, "allow.node_labels", f"the roles allowing login {login!r} "
                    f"({_names(by_login)}) do not match the node's labels")
    return deny(None, "allow.node_labels", "no role's allow.node_labels match the node")


def _kube_denied_for(role: CompiledRole, labels: Labels) -> bool:
    # getKubeLabelMatchers: an empty deny.kubernetes_labels counts as '*': '*' when
    # removing denied groups/users, so deny.kubernetes_groups applies on every cluster.
    return role.deny.kubernetes_labels.is_empty or role.deny.kubernetes_labels.matches(labels)


def kube_principals(roles: Sequence[CompiledRole],
                    cluster_labels: Labels) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(groups, users) usable on a Kubernetes cluster (CheckKubeGroupsAndUsers): the union
    over the roles whose allow.kubernetes_labels match, minus the denied ones."""
    if any(r.broken or r.deny.kubernetes_labels.matches(cluster_labels) for r in roles):
        return (), ()
    groups: dict[str, None] = {}
    users: dict[str, None] = {}
    for role in roles:
        if role.allow.kubernetes_labels.matches(cluster_labels):
            groups.update(dict.fromkeys(role.allow.kubernetes_groups))
            users.update(dict.fromkeys(role.allow.kubernetes_users))
    for role in roles:
        if _kube_denied_for(role, cluster_labels):
            for found, denied in ((groups, role.deny.kubernetes_groups),
                                  (users, role.deny.kubernetes_users)):
                if WILDCARD in denied:
                    found.clear()
                for name in denied:
                    found.pop(name, None)
    return tuple(sorted(groups)), tuple(sorted(users))


def check_kube(roles: Sequence[CompiledRole], cluster_labels: Labels,
               groups: Sequence[str] = (), users: Sequence[str] = (), *,
               mfa_verified: bool = False) -> Decision:
    """May the user reach a Kubernetes cluster, as ``groups``/``users`` when given (else
    with at least one group or user to impersonate)?"""
    if broken := _broken(roles):
        return broken
    for role in roles:
        if role.deny.kubernetes_labels.matches(cluster_labels):
            return deny(role.name, "deny.kubernetes_labels",
                        f"role {role.name!r} denies clusters labelled "
                        f"{role.deny.kubernetes_labels.describe()}")
    matching = [r for r in roles if r.allow.kubernetes_labels.matches(cluster_labels)]
    if not matching:
        return deny(None, "allow.kubernetes_labels",
                    "no role's allow.kubernetes_labels match the cluster")
    requested = [("kubernetes_groups", g) for g in groups]
    requested += [("kubernetes_users", u) for u in users]
    first_grant: CompiledRole | None = None
    for field, name in requested:
        for role in roles:
            if _kube_denied_for(role, cluster_labels) and _listed(
                    getattr(role.deny, field), name, wildcard=True):
                return deny(role.name, f"deny.{field}",
                            f"role {role.name!r} denies {field[:-1].replace('_', ' ')} "
                            f"{name!r}")
        granting = [r for r in matching if name in getattr(r.allow, field)]
        if not granting:
            return deny(None, f"allow.{field}",
                        f"no role matching the cluster allows {field[:-1].replace('_', ' ')} "
                        f"{name!r} (matching: {_names(matching)})")
        first_grant = first_grant or granting[0]
    if first_grant is None:
        found_groups, found_users = kube_principals(roles, cluster_labels)
        if not found_groups and not found_users:
            return deny(None, "allow.kubernetes_groups", "the roles matching the cluster "
                        f"({_names(matching)}) grant no kubernetes groups or users")
        usable = set(found_groups) | set(found_users)
        first_grant = next(r for r in matching if usable.intersection(
            r.allow.kubernetes_groups + r.allow.kubernetes_users))
        rule = "allow.kubernetes_labels"
        reason = "role {role} matches the cluster's labels and grants kubernetes principals"
    else:
        rule = f"allow.{requested[0][0]}"
        reason = "role {role} allows the requested kubernetes principals on this cluster"
    # MFA is judged over the roles matching the cluster (checkAccess has no matchers here).
    return _granted(matching, rule, reason, mfa_verified, deciding=first_grant)


def check_db(roles: Sequence[CompiledRole], db_labels: Labels, db_user: str,
             db_name: str | None = None, *, mfa_verified: bool = False,
             own_name: str | None = None) -> Decision:
    """May the user connect to a database as ``db_user`` (to ``db_name`` when the protocol
    has database names; ``None`` skips that check, as Teleport does for MySQL)?

    ``own_name`` is the Limen user's name, given when the database can create its users
    (its Resource names an ``admin_user``). When a role matching the database then sets
    ``create_db_user`` (:func:`~limen.rbac.db_auto_users.db_auto_user`), the database user
    IS that name (Teleport's automatic user provisioning): ``allow.db_users`` is not
    consulted, another database user is refused, and the deny rules still win (a
    ``deny.db_users`` listing the user's own name, or ``*``, refuses)."""
    if broken := _broken(roles):
        return broken
    for role in roles:
        if role.deny.db_labels.matches(db_labels):
            return deny(role.name, "deny.db_labels", f"role {role.name!r} denies databases "
                        f"labelled {role.deny.db_labels.describe()}")
        # MatchDatabaseUser / MatchDatabaseName: exact or '*', on every database.
        if _listed(role.deny.db_users, db_user, wildcard=True):
            return deny(role.name, "deny.db_users",
                        f"role {role.name!r} denies database user {db_user!r}")
        if db_name is not None and _listed(role.deny.db_names, db_name, wildcard=True):
            return deny(role.name, "deny.db_names",
                        f"role {role.name!r} denies database name {db_name!r}")
    matching = [r for r in roles if r.allow.db_labels.matches(db_labels)]
    if not matching:
        return deny(None, "allow.db_labels", "no role's allow.db_labels match the database")
    auto = db_auto_user(roles, db_labels) if own_name is not None else None
    if auto is not None:
        if db_user != own_name:
            return deny(None, "options.create_db_user", "the database creates database users "
                        f"for the roles {', '.join(auto.granted_by)}: connect as your own "
                        f"name ({own_name!r}), not {db_user!r}")
        by_user = matching
        rule = "options.create_db_user"
        reason = f"role {{role}} matches the database, which creates the user {db_user!r}"
    else:
        by_user = [r for r in matching if _listed(r.allow.db_users, db_user, wildcard=True)]
        if not by_user:
            return deny(None, "allow.db_users", f"database user {db_user!r} is not allowed "
                        f"by the roles matching the database ({_names(matching)})")
        rule = "allow.db_users"
        reason = f"role {{role}} allows database user {db_user!r} on this database"
    granting = [r for r in by_user
                if db_name is None or _listed(r.allow.db_names, db_name, wildcard=True)]
    if not granting:
        return deny(None, "allow.db_names", f"database name {db_name!r} is not allowed by "
                    f"the roles that allow user {db_user!r} ({_names(by_user)})")
    return _granted(granting, rule, reason, mfa_verified)


def db_users_on(roles: Sequence[CompiledRole], db_labels: Labels, candidates: Iterable[str],
                *, own_name: str | None = None) -> tuple[str, ...]:
    """The database users a listing shows for a database: the ``candidates`` (the users
    the roles name) :func:`check_db` allows there; when the database creates the user's own
    database user (``own_name`` given, provisioning on), that name alone, if allowed."""
    if own_name is not None and db_auto_user(roles, db_labels) is not None:
        candidates = (own_name,)
    return tuple(dict.fromkeys(
        user for user in candidates
        if check_db(roles, db_labels, user, own_name=own_name).allowed))


def check_app(roles: Sequence[CompiledRole], app_labels: Labels, *,
              mfa_verified: bool = False) -> Decision:
    """May the user open a web application with ``app_labels``?"""
    if broken := _broken(roles):
        return broken
    for role in roles:
        if role.deny.app_labels.matches(app_labels):
            return deny(role.name, "deny.app_labels", f"role {role.name!r} denies apps "
                        f"labelled {role.deny.app_labels.describe()}")
    granting = [r for r in roles if r.allow.app_labels.matches(app_labels)]
    if not granting:
        return deny(None, "allow.app_labels", "no role's allow.app_labels match the app")
    return _granted(granting, "allow.app_labels", "role {role} matches the app's labels",
                    mfa_verified)


def check_cluster(roles: Sequence[CompiledRole], cluster_labels: Labels) -> Decision:
    """May the user see and reach a leaf cluster with ``cluster_labels``
    (CheckAccessToRemoteCluster)?"""
    if not roles:
        return deny(None, "allow.cluster_labels", "the user has no roles")
    if broken := _broken(roles):
        return broken
    uses_labels = any(not r.allow.cluster_labels.is_empty or not r.deny.cluster_labels.is_empty
                      for r in roles)
    if not uses_labels and not cluster_labels:
        # Teleport's backwards compatibility: nobody uses cluster labels, cluster unlabelled.
        return allow(None, "cluster_labels", "no role uses cluster_labels and the cluster "
                     "has no labels")
    for role in roles:
        if role.deny.cluster_labels.matches(cluster_labels):
            return deny(role.name, "deny.cluster_labels", f"role {role.name!r} denies "
                        f"clusters labelled {role.deny.cluster_labels.describe()}")
    for role in roles:
        if role.allow.cluster_labels.matches(cluster_labels):
            return allow(role.name, "allow.cluster_labels",
                         f"role {role.name!r} matches the cluster's labels")
    return deny(None, "allow.cluster_labels", "no role's allow.cluster_labels match the cluster")


def rule_kind(kind: str | Kind) -> str:
    """The name rules use for a kind: ``TrustedCluster``/``tc`` -> ``trusted_cluster``."""
    if not isinstance(kind, Kind):
        try:
            kind = parse_kind(kind)
        except BadParameter:
            return kind.strip().lower()
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind.value).lower()


def _rule_text(resource: str, verb: str, rule: Rule) -> str:
    return f"{verb} on {resource}" + (f" where {rule.where.text}" if rule.where else "")


def check_rule(roles: Sequence[CompiledRole], kind: str | Kind, verb: str,
               context: Context | None = None) -> Decision:
    """May the user perform ``verb`` on objects of ``kind`` (checkAccessToRuleImpl)?

    ``context`` holds the fields a rule's ``where`` reads (the user's, and the object's such
    as ``session.participants``); fields it lacks are empty. Deny rules whose ``where`` holds
    are checked first, over all roles; then one allow rule whose ``where`` holds grants."""
    resource, verb = rule_kind(kind), verb.strip().lower()
    fields: Context = context or {}
    if broken := _broken(roles):
        return broken
    for role in roles:
        for rule in role.deny.rules:
            if rule.matches(resource, verb) and rule.holds(fields):
                return deny(role.name, "deny.rules",
                            f"role {role.name!r} denies {_rule_text(resource, verb, rule)}")
    conditional: list[str] = []
    for role in roles:
        for rule in role.allow.rules:
            if not rule.matches(resource, verb):
                continue
            if rule.holds(fields):
                return allow(role.name, "allow.rules",
                             f"role {role.name!r} allows {_rule_text(resource, verb, rule)}")
            conditional.append(f"role {role.name!r} allows {verb} on {resource} only where "
                               f"{rule.where.text if rule.where else ''}, which does not hold")
    if conditional:
        return deny(None, "allow.rules", "; ".join(dict.fromkeys(conditional)))
    return deny(None, "allow.rules", f"no role allows {verb} on {resource}")


def check_rule_possible(roles: Sequence[CompiledRole], kind: str | Kind, verb: str) -> Decision:
    """Could the user perform ``verb`` on SOME object of ``kind`` (Teleport's
    GuessIfAccessIsPossible)? An allow rule counts whatever its ``where``; only a deny rule
    without ``where`` rules it out. For listings filtered object by object with
    :func:`check_rule`: the 403 of a user no rule speaks for."""
    resource, verb = rule_kind(kind), verb.strip().lower()
    if broken := _broken(roles):
        return broken
    for role in roles:
        if any(r.matches(resource, verb) and r.where is None for r in role.deny.rules):
            return deny(role.name, "deny.rules", f"role {role.name!r} denies {verb} on {resource}")
    for role in roles:
        if any(r.matches(resource, verb) for r in role.allow.rules):
            return allow(role.name, "allow.rules",
                         f"role {role.name!r} allows {verb} on some {resource} objects")
    return deny(None, "allow.rules", f"no role allows {verb} on {resource}")
