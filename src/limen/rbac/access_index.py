"""Batch access evaluation: every grant one user's roles hold over many resources at once.

The access review (``lmctl gitops plan --access``) asks the RBAC engine about every user x
resource x principal, before and after a change. Asking pair by pair is too slow for 1,000
users x 10,000 resources, so this module narrows the pairs first and then asks the SAME
checks that enforce access (:mod:`limen.rbac.checks`) about the rest:

- resources are grouped by their label set: resources with equal labels get equal answers,
  so each distinct label set of a kind is evaluated once (:class:`TargetIndex`);
- a label set is only a candidate when some role's allow selector for that kind matches it:
  the index keeps, per label key, the distinct values seen, and a selector's values are
  matched against those values with :meth:`~limen.rbac.labels.ValuePattern.matches` (a few
  values instead of every resource); the survivors are confirmed with
  :meth:`~limen.rbac.labels.LabelSelector.matches`. A label set no allow selector matches
  is denied by every check (allow needs a matching role), so skipping it changes nothing;
- the principals asked about are the ones the roles could grant there: the allowed logins
  and database users of the matching roles (a database user alone, as MySQL and ``lmctl
  access check`` ask, and ``user/name`` for each database name they list), the Kubernetes
  groups and users :func:`~limen.rbac.checks.kube_principals` finds. Deny rules are applied
  by the checks.

A database whose Resource names an ``admin_user`` is filed under its own kind
(:data:`AUTO_DB`): there a role with ``create_db_user`` makes the user's database user their
own name, whatever ``db_users`` says (:func:`~limen.rbac.checks.check_db`'s ``own_name``), so
its grants depend on the user's name and are asked per user (:func:`evaluate_own_names`), not
per role set.

Leaf clusters are few and have Teleport's "nobody uses cluster labels" exception, so every
one is asked. Rules (``allow.rules``) are asked per Limen kind and verb with
:func:`~limen.rbac.checks.check_rule_possible`. Decisions are made with ``mfa_verified``
(a grant that needs per-session MFA is a grant; ``Decision.mfa_required`` says so).

Pure code; called by :mod:`limen.gitops.access_diff`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from limen.rbac.checks import RULE_RESOURCES, RULE_VERBS
from limen.rbac.decision import Decision
from limen.rbac.labels import WILDCARD, LabelSelector
from limen.rbac.roleset import RoleSet

__all__ = [
    "AUTO_DB",
    "LABEL_FIELD",
    "RULE_TARGETS",
    "GrantKey",
    "LabelSet",
    "RuleCache",
    "Target",
    "TargetIndex",
    "decide",
    "evaluate",
    "evaluate_own_names",
    "public_kind",
    "selector_for",
]

LabelSet = tuple[tuple[str, str], ...]
"""A resource's labels, sorted: the unit every answer is computed for."""

AUTO_DB = "db-auto"
"""The index's kind of a database that creates its users (its Resource names an
``admin_user``); shown as ``db`` (:func:`public_kind`)."""

LABEL_FIELD = {
    "ssh": "node_labels", "db": "db_labels", AUTO_DB: "db_labels", "kube": "kubernetes_labels",
    "app": "app_labels", "cluster": "cluster_labels",
}
"""The role selector each target kind is matched with."""


def public_kind(kind: str) -> str:
    """The kind a person reads: :data:`AUTO_DB` is a ``db``."""
    return "db" if kind == AUTO_DB else kind

RULE_TARGETS = tuple(r for r in RULE_RESOURCES if r != WILDCARD)
_RULE_VERBS = tuple(v for v in RULE_VERBS if v != WILDCARD)


@dataclass(frozen=True)
class Target:
    """One resource the cluster knows: ``kind`` is ssh, db, kube, app or cluster, or
    :data:`AUTO_DB` for a database that creates its users."""

    kind: str
    name: str
    labels: LabelSet = ()

    @classmethod
    def of(cls, kind: str, name: str, labels: Mapping[str, str],
           creates_users: bool = False) -> Target:
        """``creates_users``: a database whose Resource names an ``admin_user``."""
        return cls(AUTO_DB if kind == "db" and creates_users else kind, name,
                   tuple(sorted((str(k), str(v)) for k, v in labels.items())))


GrantKey = tuple[str, str, LabelSet]
"""(kind, principal, label set): ``kind`` is a target kind or ``rule``; for ``rule`` the
principal is the verb and the label set is ``(("kind", KIND),)``."""


class TargetIndex:
    """The targets of one state, grouped by kind and label set, indexed by label values."""

    def __init__(self, targets: Iterable[Target]) -> None:
        self.by_labels: dict[str, dict[LabelSet, list[str]]] = {}
        self._values: dict[str, dict[str, dict[str, set[LabelSet]]]] = {}
        for target in targets:
            groups = self.by_labels.setdefault(target.kind, {})
            names = groups.setdefault(target.labels, [])
            names.append(target.name)
            if len(names) == 1:
                keys = self._values.setdefault(target.kind, {})
                for key, value in target.labels:
                    keys.setdefault(key, {}).setdefault(value, set()).add(target.labels)
        for groups in self.by_labels.values():
            for names in groups.values():
                names.sort()

    def fingerprint(self) -> tuple[tuple[str, tuple[tuple[LabelSet, tuple[str, ...]], ...]], ...]:
        """Equal for two indexes holding the same targets."""
        return tuple(sorted((kind, tuple(sorted((ls, tuple(n)) for ls, n in groups.items())))
                            for kind, groups in self.by_labels.items()))

    def names(self, kind: str, labels: LabelSet) -> list[str]:
        return self.by_labels.get(kind, {}).get(labels, [])

    def candidates(self, kind: str, selector: LabelSelector) -> set[LabelSet]:
        """The label sets of ``kind`` that ``selector`` matches."""
        groups = self.by_labels.get(kind, {})
        if selector.is_empty or not groups:
            return set()
        if selector.matches_all:
            return set(groups)
        values = self._values.get(kind, {})
        found: set[LabelSet] | None = None
        for key, patterns in selector.entries:
            if key is None or key not in values:
                return set()
            here: set[LabelSet] = set()
            wildcard = any(p.is_wildcard for p in patterns)
            for value, sets in values[key].items():
                if wildcard or any(p.matches(value) for p in patterns):
                    here |= sets
            found = here if found is None else found & here
            if not found:
                return set()
        return {ls for ls in (found or set()) if selector.matches(dict(ls))}


def selector_for(role_set: RoleSet, role_name: str | None, kind: str) -> LabelSelector | None:
    """The allow selector of ``kind`` of the named role (``None`` when there is none)."""
    field = LABEL_FIELD.get(kind)
    for role in role_set.roles:
        if field and role.name == role_name:
            selector: LabelSelector = getattr(role.allow, field)
            return selector
    return None


RuleCache = dict[tuple[tuple[str, bool], ...], dict[GrantKey, Decision]]
"""Rule grants per (role name, broken) list: rules do not depend on traits, so the users of
one state holding the same roles share them (pass one cache per state to :func:`evaluate`)."""


def evaluate(role_set: RoleSet, index: TargetIndex,
             rule_cache: RuleCache | None = None) -> dict[GrantKey, Decision]:
    """Every grant of ``role_set`` over the targets of ``index``, with its deciding
    :class:`~limen.rbac.decision.Decision` (denials are left out). ``rule_cache`` may only
    be shared by role sets built from the same Role resources."""
    roles = role_set.roles
    out: dict[GrantKey, Decision] = {}
    if not roles:
        return out
    for kind in ("ssh", "db", "kube", "app"):
        field = LABEL_FIELD[kind]
        matching: dict[LabelSet, None] = {}
        for role in roles:
            matching.update(dict.fromkeys(index.candidates(kind, getattr(role.allow, field))))
        for labels in sorted(matching):
            _grants_on(role_set, kind, labels, out)
    for labels in sorted(index.by_labels.get("cluster", {})):
        decision = role_set.check_cluster(dict(labels))
        if decision.allowed:
            out[("cluster", "", labels)] = decision
    key = tuple((r.name, r.broken) for r in roles)
    rules = rule_cache.get(key) if rule_cache is not None else None
    if rules is None:
        rules = {}
        for resource in RULE_TARGETS:
            for verb in _RULE_VERBS:
                decision = role_set.check_rule_possible(resource, verb)
                if decision.allowed:
                    rules[("rule", verb, (("kind", resource),))] = decision
        if rule_cache is not None:
            rule_cache[key] = rules
    out.update(rules)
    return out


def evaluate_own_names(role_set: RoleSet, index: TargetIndex,
                       user: str) -> dict[GrantKey, Decision]:
    """The grants of ``user`` (whose roles are ``role_set``) over the databases that create
    their users (:data:`AUTO_DB`): the own name where a matching role sets
    ``create_db_user``, the ``db_users`` elsewhere, as :func:`~limen.rbac.checks.check_db`
    decides with ``own_name``."""
    out: dict[GrantKey, Decision] = {}
    matching: dict[LabelSet, None] = {}
    for role in role_set.roles:
        matching.update(dict.fromkeys(index.candidates(AUTO_DB, role.allow.db_labels)))
    for labels in sorted(matching):
        as_map = dict(labels)
        users = [user] if role_set.db_auto_user(as_map) is not None else \
            _principals(role_set, "db_users", "db_labels", as_map)
        _db_grants(role_set, AUTO_DB, labels, users, out, own_name=user)
    return out


def _db_grants(role_set: RoleSet, kind: str, labels: LabelSet, users: Sequence[str],
               out: dict[GrantKey, Decision], own_name: str | None = None) -> None:
    as_map = dict(labels)
    names = _principals(role_set, "db_names", "db_labels", as_map)
    for user in users:
        decision = role_set.check_db(as_map, user, None, mfa_verified=True, own_name=own_name)
        if not decision.allowed:  # with a database name it can only be stricter
            continue
        out[(kind, user, labels)] = decision
        for name in names:
            named = role_set.check_db(as_map, user, name, mfa_verified=True, own_name=own_name)
            if named.allowed:
                out[(kind, f"{user}/{name}", labels)] = named


def _principals(role_set: RoleSet, field: str, selector_field: str,
                labels: Mapping[str, str]) -> list[str]:
    found: dict[str, None] = {}
    for role in role_set.roles:
        if getattr(role.allow, selector_field).matches(labels):
            values: Sequence[str] = getattr(role.allow, field)
            found.update(dict.fromkeys(values))
    return sorted(found)


def _grants_on(role_set: RoleSet, kind: str, labels: LabelSet,
               out: dict[GrantKey, Decision]) -> None:
    as_map = dict(labels)
    decisions: list[tuple[str, Decision]] = []
    if kind == "ssh":
        for login in _principals(role_set, "logins", "node_labels", as_map):
            decisions.append((login, role_set.check_ssh(as_map, login, mfa_verified=True)))
    elif kind == "db":
        _db_grants(role_set, kind, labels,
                   _principals(role_set, "db_users", "db_labels", as_map), out)
    elif kind == "kube":
        groups, users = role_set.kube_principals(as_map)
        for group in groups:
            decisions.append((f"group/{group}",
                              role_set.check_kube(as_map, (group,), (), mfa_verified=True)))
        for user in users:
            decisions.append((f"user/{user}",
                              role_set.check_kube(as_map, (), (user,), mfa_verified=True)))
    else:
        decisions.append(("", role_set.check_app(as_map, mfa_verified=True)))
    for principal, decision in decisions:
        if decision.allowed:
            out[(kind, principal, labels)] = decision


def decide(role_set: RoleSet, key: GrantKey, username: str | None = None) -> Decision:
    """The decision of one grant key (the same check :func:`evaluate` or, with the user's
    name, :func:`evaluate_own_names` asked), e.g. to say why a grant is gone."""
    kind, principal, labels = key
    as_map = dict(labels)
    if kind == "ssh":
        return role_set.check_ssh(as_map, principal, mfa_verified=True)
    if kind in ("db", AUTO_DB):
        user, slash, name = principal.partition("/")
        return role_set.check_db(as_map, user, name if slash else None, mfa_verified=True,
                                 own_name=username if kind == AUTO_DB else None)
    if kind == "kube":
        what, _, name = principal.partition("/")
        groups, users = ((name,), ()) if what == "group" else ((), (name,))
        return role_set.check_kube(as_map, groups, users, mfa_verified=True)
    if kind == "app":
        return role_set.check_app(as_map, mfa_verified=True)
    if kind == "cluster":
        return role_set.check_cluster(as_map)
    return role_set.check_rule_possible(as_map["kind"], principal)
