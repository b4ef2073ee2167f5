"""One role compiled for one identity: traits expanded, label selectors and rules compiled.

:func:`compile_role` turns a ``Role`` resource (Teleport role v7 ``spec``) and the user's
traits into a :class:`CompiledRole`. It never raises for a bad role; instead:

- a section (``allow`` or ``deny``) that cannot be compiled (malformed template, invalid
  regular expression, wrong shape) is dropped from ``allow`` — the role grants nothing —
  and recorded in ``problem``;
- if the ``deny`` section (or the options) cannot be compiled, the role is ``broken``: it
  denies everything until fixed, so a typo in a deny rule never opens access (fail closed).

Called by :class:`limen.rbac.roleset.RoleSet`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from limen.api.predicates import Context, Predicate, parse_where
from limen.api.resources import Resource
from limen.errors import BadParameter
from limen.rbac.kube_resources import KubeResourceRule, compile_kube_resources
from limen.rbac.labels import EMPTY_SELECTOR, WILDCARD, LabelSelector, compile_selector
from limen.rbac.labels import normalize_label_map as _normalize
from limen.rbac.options import RoleOptions, parse_role_options
from limen.rbac.traits import Traits, expand_label_map, expand_logins, expand_values

__all__ = [
    "LABEL_FIELDS",
    "PRINCIPAL_FIELDS",
    "CompiledRole",
    "Conditions",
    "Rule",
    "compile_role",
]

_parse_where = lru_cache(maxsize=512)(parse_where)
"""Roles are compiled for every identity: a rule's ``where`` is parsed once (immutable)."""

LABEL_FIELDS = ("node_labels", "kubernetes_labels", "db_labels", "app_labels", "cluster_labels")
PRINCIPAL_FIELDS = ("logins", "kubernetes_groups", "kubernetes_users", "db_names", "db_users")


@dataclass(frozen=True)
class Rule:
    """``{resources: [kinds], verbs: [...], where?}`` on Limen's own kinds; ``*`` matches
    any. ``where`` (see :mod:`limen.api.predicates`) narrows the rule to the objects and
    users it holds for."""

    resources: frozenset[str]
    verbs: frozenset[str]
    where: Predicate | None = None

    def matches(self, kind: str, verb: str) -> bool:
        return (kind in self.resources or WILDCARD in self.resources) and (
            verb in self.verbs or WILDCARD in self.verbs
        )

    def holds(self, context: Context) -> bool:
        """Does the ``where`` (if any) hold for this object and user?"""
        return self.where is None or self.where.evaluate(context)


@dataclass(frozen=True)
class Conditions:
    """One compiled ``allow`` or ``deny`` section."""

    logins: tuple[str, ...] = ()
    kubernetes_groups: tuple[str, ...] = ()
    kubernetes_users: tuple[str, ...] = ()
    db_names: tuple[str, ...] = ()
    db_users: tuple[str, ...] = ()
    db_roles: tuple[str, ...] = ()
    """Database roles granted to (allow) or withheld from (deny) auto-created db users."""
    node_labels: LabelSelector = EMPTY_SELECTOR
    kubernetes_labels: LabelSelector = EMPTY_SELECTOR
    db_labels: LabelSelector = EMPTY_SELECTOR
    app_labels: LabelSelector = EMPTY_SELECTOR
    cluster_labels: LabelSelector = EMPTY_SELECTOR
    rules: tuple[Rule, ...] = ()
    kubernetes_resources: tuple[KubeResourceRule, ...] | None = None
    """Objects inside matching Kubernetes clusters (``None``: the field is absent)."""

    def selector(self, name: str) -> LabelSelector:
        value = getattr(self, name)
        assert isinstance(value, LabelSelector)
        return value


NO_CONDITIONS = Conditions()


@dataclass(frozen=True)
class CompiledRole:
    name: str
    allow: Conditions = NO_CONDITIONS
    deny: Conditions = NO_CONDITIONS
    options: RoleOptions = field(default_factory=RoleOptions)
    broken: bool = False
    """The deny section or the options could not be evaluated: the role denies everything."""
    problem: str | None = None
    """Why part of the role was dropped (also reported as a RoleSet warning)."""


def _strings(raw: Any, where: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, Sequence) and all(isinstance(v, str) for v in raw):
        return list(raw)
    raise BadParameter(f"{where} must be a list of strings")


def _rules(raw: Any, section: str) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise BadParameter(f"{section}.rules must be a list")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise BadParameter(f"{section}.rules[{i}] must be a map")
        resources = _strings(item.get("resources"), f"{section}.rules[{i}].resources")
        verbs = _strings(item.get("verbs"), f"{section}.rules[{i}].verbs")
        if not resources or not verbs:  # Teleport's Rule.CheckAndSetDefaults
            raise BadParameter(f"{section}.rules[{i}] needs resources and verbs")
        where = item.get("where")
        if where is not None and not isinstance(where, str):
            raise BadParameter(f"{section}.rules[{i}].where must be a string")
        try:
            predicate = _parse_where(where) if where is not None else None
        except BadParameter as err:
            raise BadParameter(f"{section}.rules[{i}].where: {err}") from None
        out.append(Rule(frozenset(r.lower() for r in resources),
                        frozenset(v.lower() for v in verbs), predicate))
    return tuple(out)


def _conditions(raw: Any, where: str, traits: Traits) -> Conditions:
    if raw is None:
        return NO_CONDITIONS
    if not isinstance(raw, Mapping):
        raise BadParameter(f"{where} must be a map")
    logins = expand_logins(_strings(raw.get("logins"), f"{where}.logins"), traits)
    if where == "allow" and WILDCARD in logins:
        raise BadParameter("allow.logins: the wildcard '*' is not allowed in logins")

    def values(name: str) -> tuple[str, ...]:
        return expand_values(_strings(raw.get(name), f"{where}.{name}"), traits)

    def selector(name: str) -> LabelSelector:
        labels = _normalize(raw.get(name), f"{where}.{name}")
        return compile_selector(expand_label_map(labels, traits), f"{where}.{name}")

    return Conditions(
        logins=logins,
        kubernetes_groups=values("kubernetes_groups"),
        kubernetes_users=values("kubernetes_users"),
        db_names=values("db_names"),
        db_users=values("db_users"),
        db_roles=values("db_roles"),
        node_labels=selector("node_labels"),
        kubernetes_labels=selector("kubernetes_labels"),
        db_labels=selector("db_labels"),
        app_labels=selector("app_labels"),
        cluster_labels=selector("cluster_labels"),
        rules=_rules(raw.get("rules"), where),
        kubernetes_resources=compile_kube_resources(raw.get("kubernetes_resources"), where,
                                                    traits),
    )


def compile_role(role: Resource, traits: Traits) -> CompiledRole:
    """Expand and compile ``role`` for an identity with ``traits`` (never raises)."""
    spec = role.spec
    problems: list[str] = []
    broken = False
    try:
        deny = _conditions(spec.get("deny"), "deny", traits)
        options = parse_role_options(spec.get("options"))
    except BadParameter as err:
        deny, options, broken = NO_CONDITIONS, RoleOptions(), True
        problems.append(f"{err} (the role denies everything until fixed)")
    try:
        allow = _conditions(spec.get("allow"), "allow", traits)
    except BadParameter as err:
        allow = NO_CONDITIONS
        problems.append(f"{err} (the role grants nothing)")
    if broken:
        allow = NO_CONDITIONS
    return CompiledRole(
        name=role.name, allow=allow, deny=deny, options=options, broken=broken,
        problem="; ".join(problems) or None,
    )
