"""The access review of a change: who gains and who loses access to what.

``lmctl gitops plan --access`` builds two :class:`AccessState` (before and after the change:
users, roles, the resources the cluster knows, trusted clusters) and :func:`access_diff`
compares every user x resource x principal between them with the RBAC engine that enforces
access (:mod:`limen.rbac.access_index` over :class:`~limen.rbac.roleset.RoleSet`). Only the
differences come out, each with the deciding role and rule of the engine's
:class:`~limen.rbac.decision.Decision`, and flagged when risky: a ``root`` login,
``system:masters``, any database user, a grant through a wildcard label selector, admin
rules (write verbs on roles, users, tokens, trusted clusters), and ``role_map`` entries of a
trusted cluster that map more remote roles to local ones.

Users whose roles, traits and resources are the same in both states are not evaluated again;
users with identical roles and traits share one evaluation; resources whose labels agree on
every key a role selector names share one answer. Locks do not change the answer
(they stop sessions, not grants). Pure code; rendered by :mod:`limen.gitops.access_diff_format`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from limen.api.resources import Kind, Resource
from limen.rbac import AccessChecker, Decision, RoleSet
from limen.rbac.access_index import (
    AUTO_DB,
    LABEL_FIELD,
    GrantKey,
    LabelSet,
    RuleCache,
    Target,
    TargetIndex,
    decide,
    evaluate,
    evaluate_own_names,
    public_kind,
    selector_for,
)
from limen.rbac.db_auto_users import creates_users

__all__ = [
    "ADMIN_KINDS",
    "AccessChange",
    "AccessDiff",
    "AccessState",
    "RoleMapChange",
    "access_diff",
    "after_objects",
    "node_targets",
]

ADMIN_KINDS = ("role", "user", "token", "trusted_cluster")
"""Rules that write these kinds make their holder an administrator."""
_WRITE_VERBS = ("create", "update", "delete")
_RESOURCE_KINDS = ("ssh", "db", "kube", "app")


def _traits(user: Resource) -> dict[str, tuple[str, ...]]:
    # The user's spec.traits, read as auth reads them when it issues certificates.
    raw = user.spec.get("traits") or {}
    return {str(k): tuple(str(v) for v in (vals if isinstance(vals, list) else [vals]))
            for k, vals in raw.items()}


def node_targets(rows: Iterable[Mapping[str, Any]]) -> list[Target]:
    """Heartbeated nodes (rows of ``lmctl nodes ls -o json``: hostname, labels with the last
    heartbeated dynamic labels) as SSH targets."""
    return [Target.of("ssh", str(row.get("hostname") or row.get("name")),
                      dict(row.get("labels") or {})) for row in rows]


@dataclass
class AccessState:
    """Everything that decides access on one side of a change."""

    users: dict[str, Resource]
    roles: dict[str, Resource]
    targets: list[Target]
    trusted: dict[str, Resource]
    _role_text: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, objects: Iterable[Resource], nodes: Iterable[Target] = ()) -> AccessState:
        """From stored objects (users, roles, Resources, trusted and remote clusters) and
        heartbeated nodes. One target per kind and name: a node online wins over a stored
        SSH Resource of its hostname (its heartbeated labels are the current ones)."""
        state = cls({}, {}, [], {})
        for obj in objects:
            if obj.kind is Kind.USER:
                state.users[obj.name] = obj
            elif obj.kind is Kind.ROLE:
                state.roles[obj.name] = obj
            elif obj.kind is Kind.TRUSTED_CLUSTER:
                state.trusted[obj.name] = obj
            elif obj.kind is Kind.REMOTE_CLUSTER:
                state.targets.append(Target.of("cluster", obj.name, obj.labels))
            elif obj.kind is Kind.RESOURCE and obj.spec.get("kind") in _RESOURCE_KINDS:
                state.targets.append(Target.of(
                    str(obj.spec["kind"]), obj.name, obj.labels,
                    creates_users=creates_users(obj.spec)))
        unique = {(t.kind, t.name): t for t in [*state.targets, *nodes]}
        state.targets = list(unique.values())
        state._role_text = {name: json.dumps(dict(role.spec), sort_keys=True, default=str)
                            for name, role in state.roles.items()}
        return state

    def user_key(self, name: str) -> tuple[Any, ...] | None:
        """Equal for two users (or one user in two states) whose access is the same."""
        user = self.users.get(name)
        if user is None:
            return None
        names = sorted({str(n) for n in user.spec.get("roles") or []})
        traits = tuple(sorted(_traits(user).items()))
        return tuple((n, self._role_text.get(n)) for n in names), traits

    def role_set(self, name: str) -> RoleSet:
        user = self.users[name]
        return AccessChecker.for_user(name, [str(n) for n in user.spec.get("roles") or []],
                                      _traits(user), self.roles).roles


@dataclass(frozen=True)
class AccessChange:
    """One grant gained (``+``) or lost (``-``) by one user."""

    sign: str
    user: str
    kind: str
    """ssh, db, kube, app, cluster or rule."""
    principal: str
    """The login, database user (``user/name`` with a database name), ``group/G`` or
    ``user/U`` (kube), the verb (rule); empty for apps and clusters."""
    targets: tuple[str, ...]
    """The resources' names, sorted (for ``rule``, the kind the rule speaks about): the
    resources with the same labels, which get the same answer."""
    role: str | None
    rule: str
    reason: str
    detail: str
    """The explanation printed in parentheses."""
    risky: tuple[str, ...] = ()


    def to_json(self) -> dict[str, Any]:
        return {"sign": self.sign, "user": self.user, "kind": self.kind,
                "principal": self.principal, "targets": list(self.targets), "role": self.role,
                "rule": self.rule, "reason": self.reason, "detail": self.detail,
                "risky": list(self.risky)}


@dataclass(frozen=True)
class RoleMapChange:
    """A ``role_map`` entry of a trusted cluster added (``+``) or removed (``-``)."""

    sign: str
    cluster: str
    remote: str
    local: str
    risky: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"sign": self.sign, "cluster": self.cluster, "remote": self.remote,
                "local": self.local, "risky": list(self.risky)}


@dataclass(frozen=True)
class AccessDiff:
    changes: tuple[AccessChange, ...]
    role_map: tuple[RoleMapChange, ...]
    users: int
    """Users in either state."""
    targets: int
    """Resources in the after state."""

    @property
    def risky(self) -> list[AccessChange | RoleMapChange]:
        """The flagged additions (removals are never risky)."""
        found: list[AccessChange | RoleMapChange] = [
            c for c in self.changes if c.sign == "+" and c.risky]
        found.extend(c for c in self.role_map if c.sign == "+" and c.risky)
        return found

    @property
    def empty(self) -> bool:
        return not self.changes and not self.role_map


class _Evaluations:
    """One evaluation per distinct (roles, traits) of a state."""

    def __init__(self, state: AccessState, index: TargetIndex) -> None:
        self.state, self.index = state, index
        self._cache: dict[Any, tuple[RoleSet, dict[GrantKey, Decision]]] = {}
        self._rules: RuleCache = {}

    def of(self, user: str) -> tuple[RoleSet, dict[GrantKey, Decision]]:
        key = self.state.user_key(user)
        found = self._cache.get(key)
        if found is None:
            role_set = self.state.role_set(user)
            found = self._cache[key] = (role_set, evaluate(role_set, self.index,
                                                              self._rules))
        if AUTO_DB in self.index.by_labels:  # grants that depend on the user's own name
            role_set, grants = found
            return role_set, {**grants, **evaluate_own_names(role_set, self.index, user)}
        return found


def _names(index: TargetIndex, key: GrantKey) -> list[str]:
    kind, _, labels = key
    if kind == "rule":
        return [labels[0][1]]
    return index.names(kind, labels)


Placed = dict[tuple[str, str], tuple[str, LabelSet]]
"""(kind as shown, name) → (kind in the index, labels): a database that starts or stops
creating its users changes its index kind (``AUTO_DB``), not its identity."""


def _target_labels(targets: Sequence[Target]) -> Placed:
    return {(public_kind(t.kind), t.name): (t.kind, t.labels) for t in targets}


def _selector_keys(states: Sequence[AccessState]) -> frozenset[str] | None:
    """Every label key a role's selector names in either state (``None`` when a key is a
    template: then any label may count)."""
    keys: set[str] = set()
    for state in states:
        for role in state.roles.values():
            for section in (role.spec.get("allow"), role.spec.get("deny")):
                for name in LABEL_FIELD.values():
                    selector = section.get(name) if isinstance(section, Mapping) else None
                    for key in selector if isinstance(selector, Mapping) else ():
                        if "{{" in str(key):
                            return None
                        keys.add(str(key))
    return frozenset(keys)


def _projected(targets: Sequence[Target], keys: frozenset[str] | None) -> list[Target]:
    """Targets with only the labels a selector can read: a check reads the selector's keys
    and nothing else, so resources differing in other labels get the same answers and share
    one evaluation. Leaf clusters keep theirs (an unlabelled one is a special case)."""
    if keys is None:
        return list(targets)
    return [t if t.kind == "cluster" else
            Target(t.kind, t.name, tuple(kv for kv in t.labels if kv[0] in keys))
            for t in targets]


def access_diff(before: AccessState, after: AccessState) -> AccessDiff:
    """Every grant that differs between ``before`` and ``after``, per user."""
    keys = _selector_keys((before, after))
    targets_b, targets_a = _projected(before.targets, keys), _projected(after.targets, keys)
    index_b, index_a = TargetIndex(targets_b), TargetIndex(targets_a)
    eval_b, eval_a = _Evaluations(before, index_b), _Evaluations(after, index_a)
    labels_b, labels_a = _target_labels(targets_b), _target_labels(targets_a)
    moved = {t for t in labels_b.keys() | labels_a.keys() if labels_b.get(t) != labels_a.get(t)}
    changes: list[AccessChange] = []
    for user in sorted(before.users.keys() | after.users.keys()):
        key_b, key_a = before.user_key(user), after.user_key(user)
        if key_b == key_a and not moved:
            continue
        _, grants_b = eval_b.of(user) if key_b is not None else (None, {})
        rs_a, grants_a = eval_a.of(user) if key_a is not None else (None, {})
        for key in grants_a.keys() - grants_b.keys():
            names = [n for n in _names(index_a, key) if (public_kind(key[0]), n) not in moved]
            if names:
                changes.append(_added(user, key, names, grants_a[key], rs_a))
        for key in grants_b.keys() - grants_a.keys():
            names = [n for n in _names(index_b, key) if (public_kind(key[0]), n) not in moved]
            if names:
                changes.append(_removed(user, key, names, rs_a, labels_a))
        for target in sorted(moved):
            old = _principals(grants_b, labels_b.get(target))
            new = _principals(grants_a, labels_a.get(target))
            name = target[1]
            for principal in sorted(new.keys() - old.keys()):
                kind, labels = labels_a[target]
                changes.append(_added(user, (kind, principal, labels), [name], new[principal],
                                      rs_a))
            for principal in sorted(old.keys() - new.keys()):
                kind, labels = labels_b[target]
                changes.append(_removed(user, (kind, principal, labels), [name], rs_a,
                                        labels_a))
    changes.sort(key=lambda c: (c.sign != "+", c.user, c.kind, c.principal, c.targets))
    return AccessDiff(tuple(changes), _role_map_diff(before, after),
                      len(before.users.keys() | after.users.keys()), len(after.targets))


def _principals(grants: Mapping[GrantKey, Decision],
                placed: tuple[str, LabelSet] | None) -> dict[str, Decision]:
    if placed is None:
        return {}
    kind, labels = placed
    return {k[1]: d for k, d in grants.items() if k[0] == kind and k[2] == labels}


def _added(user: str, key: GrantKey, names: list[str], decision: Decision,
           role_set: RoleSet | None) -> AccessChange:
    kind, principal, _ = key
    detail = f"role {decision.role}: {decision.rule}"
    selector = selector_for(role_set, decision.role, kind) if role_set else None
    risky: list[str] = []
    if selector is not None and not selector.is_empty:
        detail += f", {LABEL_FIELD[kind]} {selector.describe()[1:-1]}"
        if any(p.is_wildcard for _, values in selector.entries for p in values):
            risky.append("wildcard labels")
    if decision.mfa_required:
        detail += ", per-session MFA"
    if kind == "ssh" and principal == "root":
        risky.append("root login")
    if kind == "kube" and principal == "group/system:masters":
        risky.append("system:masters")
    if kind == "db" and principal.partition("/")[0] == "*":
        risky.append("any database user")
    if kind == "rule" and names[0] in ADMIN_KINDS and principal in _WRITE_VERBS:
        risky.append("admin rules")
    return AccessChange("+", user, public_kind(kind), principal, tuple(sorted(names)),
                        decision.role, decision.rule, decision.reason, detail, tuple(risky))


def _removed(user: str, key: GrantKey, names: list[str], role_set: RoleSet | None,
             labels_after: Placed) -> AccessChange:
    """``names`` have the same labels before and after (:func:`access_diff` diffs resources
    whose labels changed one by one), so the first one's answer is every one's."""
    kind, principal, _ = key
    shown = public_kind(kind)
    targets = tuple(sorted(names))
    if role_set is None:
        return AccessChange("-", user, shown, principal, targets, None, "",
                            "the user is deleted", "user deleted")
    name = targets[0]
    if kind != "rule" and (shown, name) not in labels_after:
        return AccessChange("-", user, shown, principal, targets, None, "",
                            "the resource is removed", "resource removed")
    if kind == "rule":
        decision = decide(role_set, (kind, principal, (("kind", name),)))
    else:
        kind_after, labels = labels_after[(shown, name)]
        decision = decide(role_set, (kind_after, principal, labels), user)
    if decision.role:
        detail = f"deny in role {decision.role}: {decision.rule}"
    else:
        detail = f"no longer granted: {decision.reason}"
    return AccessChange("-", user, shown, principal, targets, decision.role, decision.rule,
                        decision.reason, detail)


def _role_map(cluster: Resource | None) -> set[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    for entry in (cluster.spec.get("role_map") or []) if cluster else []:
        if not isinstance(entry, Mapping):
            continue
        local = entry.get("local")
        for name in [local] if isinstance(local, str) else (local or []):
            pairs.add((str(entry.get("remote")), str(name)))
    return pairs


def _local_role_risks(state: AccessState, name: str) -> tuple[str, ...]:
    role = state.roles.get(name)
    risks = ["role_map widening"]
    if role is None:
        return tuple(risks)
    role_set = RoleSet.from_roles([role], {})
    compiled = role_set.roles[0] if role_set.roles else None
    if compiled is not None and "root" in compiled.allow.logins:
        risks.append("root login")
    if compiled is not None and "system:masters" in compiled.allow.kubernetes_groups:
        risks.append("system:masters")
    if any(role_set.check_rule_possible(kind, verb).allowed
           for kind in ADMIN_KINDS for verb in _WRITE_VERBS):
        risks.append("admin rules")
    return tuple(risks)


def _role_map_diff(before: AccessState, after: AccessState) -> tuple[RoleMapChange, ...]:
    out: list[RoleMapChange] = []
    for cluster in sorted(before.trusted.keys() | after.trusted.keys()):
        old, new = _role_map(before.trusted.get(cluster)), _role_map(after.trusted.get(cluster))
        for remote, local in sorted(new - old):
            out.append(RoleMapChange("+", cluster, remote, local,
                                     _local_role_risks(after, local)))
        for remote, local in sorted(old - new):
            out.append(RoleMapChange("-", cluster, remote, local))
    return tuple(out)


def after_objects(before: Sequence[Resource], desired: Sequence[Resource],
                  owner: str) -> list[Resource]:
    """``before`` once the sync applied ``desired``: objects owned by ``owner`` (the
    ``git`` origin) that ``desired`` no longer declares are pruned, declared ones replace
    theirs."""
    declared = {(r.kind, r.name) for r in desired}
    kept = [r for r in before if (r.kind, r.name) not in declared
            and not (r.origin is not None and r.origin.value == owner)]
    return kept + list(desired)
