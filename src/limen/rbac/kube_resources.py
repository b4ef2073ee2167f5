"""``kubernetes_resources``: which objects inside a Kubernetes cluster a role covers, and the
per-request decision over a user's roles.

A rule (Teleport role v7's ``kubernetes_resources`` item)::

    {kind: pod, namespace: dev-*, name: '*', verbs: [get, list, watch, exec]}

* ``kind`` — the object kind, singular or plural, case-insensitive (``pod``, ``pods``,
  ``deployment``), or ``*``;
* ``namespace`` and ``name`` — a literal, a ``*`` glob or a ``^...$`` regular expression,
  with trait templates (default ``*``). A cluster-scoped object (namespace empty) is matched
  only by ``namespace: '*'``, except a ``namespace`` object, whose own name is matched against
  ``namespace`` too; a request on a collection (list, watch, create, deletecollection: no
  name) only by ``name: '*'`` (Limen does not filter lists);
* ``verbs`` — Kubernetes verbs (``get``, ``list``, ``watch``, ``create``, ``update``,
  ``patch``, ``delete``, ``deletecollection``, and ``exec``, ``attach``, ``portforward`` for
  pods) or ``*`` (default ``[*]``).

The decision (:func:`check_kube_request`, after the cluster-level ``check_kube``): deny first —
a ``deny.kubernetes_resources`` rule of a role whose ``deny.kubernetes_labels`` match the
cluster (or are empty) that matches the request refuses it; then one role whose
``allow.kubernetes_labels`` match the cluster must allow it: by a matching rule, or by having
no ``allow.kubernetes_resources`` at all (every object, as before the field existed). Requests
that name no resource (discovery: ``/api``, ``/apis/...``, ``/version``) and the questions a
user asks about themselves (``create`` of ``selfsubjectreviews`` — ``kubectl auth whoami`` —,
``selfsubjectaccessreviews`` and ``selfsubjectrulesreviews`` — ``kubectl auth can-i``) are
allowed to anyone the cluster admits: the API server answers them for the impersonated user.
Pure; compiled by :mod:`limen.rbac.role`, called through
:meth:`limen.rbac.roleset.RoleSet.check_kube_request`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from limen.errors import BadParameter
from limen.rbac.decision import Decision, allow, deny
from limen.rbac.kube_request import KubeRequestInfo
from limen.rbac.labels import WILDCARD, ValuePattern, compile_value
from limen.rbac.traits import Traits, expand_label_values

if TYPE_CHECKING:
    from limen.rbac.role import CompiledRole

__all__ = ["KubeResourceRule", "check_kube_request", "compile_kube_resources", "kind_matches"]

Labels = Mapping[str, str]
SELF_REVIEWS = frozenset({("authentication.k8s.io", "selfsubjectreviews"),
                          ("authorization.k8s.io", "selfsubjectaccessreviews"),
                          ("authorization.k8s.io", "selfsubjectrulesreviews")})
"""Questions about oneself, answered by the API server for the impersonated user."""


@dataclass(frozen=True)
class KubeResourceRule:
    kind: str
    namespace: tuple[ValuePattern, ...]
    name: tuple[ValuePattern, ...]
    verbs: frozenset[str]

    def matches(self, info: KubeRequestInfo) -> bool:
        if not kind_matches(self.kind, info.resource):
            return False
        if WILDCARD not in self.verbs and info.verb not in self.verbs:
            return False
        namespace = info.namespace
        if not namespace and info.resource == "namespaces":
            namespace = info.name
        if not _any(self.namespace, namespace):
            return False
        return _any(self.name, info.name)

    def describe(self) -> str:
        return (f"{{kind: {self.kind}, namespace: {_texts(self.namespace)}, "
                f"name: {_texts(self.name)}, verbs: [{', '.join(sorted(self.verbs))}]}}")


def _texts(patterns: tuple[ValuePattern, ...]) -> str:
    return "|".join(p.text for p in patterns) or "(nothing)"


def _any(patterns: tuple[ValuePattern, ...], value: str) -> bool:
    if not value:  # cluster scope or a collection: only the wildcard covers it
        return any(p.is_wildcard for p in patterns)
    return any(p.matches(value) for p in patterns)


def _singulars(resource: str) -> set[str]:
    out = {resource}
    if resource.endswith("ies"):
        out.add(resource[:-3] + "y")
    if resource.endswith("es"):
        out.add(resource[:-2])
    if resource.endswith("s"):
        out.add(resource[:-1])
    return out


def kind_matches(kind: str, resource: str) -> bool:
    """Does a rule's ``kind`` (singular or plural, any case, or ``*``) name ``resource``?"""
    return kind == WILDCARD or kind.lower() in _singulars(resource.lower())


def _patterns(raw: Any, where: str, traits: Traits) -> tuple[ValuePattern, ...]:
    if raw is None:
        return (compile_value(WILDCARD),)
    if not isinstance(raw, str) or not raw:
        raise BadParameter(f"{where} must be a non-empty string")
    return tuple(p if isinstance(p, ValuePattern) else compile_value(p)
                 for p in expand_label_values([raw], traits))


def compile_kube_resources(raw: Any, where: str, traits: Traits
                           ) -> tuple[KubeResourceRule, ...] | None:
    """The compiled rules of one section (``None`` when the field is absent)."""
    if raw is None:
        return None
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise BadParameter(f"{where}.kubernetes_resources must be a list")
    rules = []
    for i, item in enumerate(raw):
        at = f"{where}.kubernetes_resources[{i}]"
        if not isinstance(item, Mapping):
            raise BadParameter(f"{at} must be a map")
        kind = item.get("kind")
        if not isinstance(kind, str) or not kind:
            raise BadParameter(f"{at}.kind must be a non-empty string")
        verbs = item.get("verbs", [WILDCARD])
        if not isinstance(verbs, Sequence) or isinstance(verbs, str) or not all(
                isinstance(v, str) and v for v in verbs):
            raise BadParameter(f"{at}.verbs must be a list of strings")
        rules.append(KubeResourceRule(
            kind=kind.lower(), namespace=_patterns(item.get("namespace"), f"{at}.namespace",
                                                   traits),
            name=_patterns(item.get("name"), f"{at}.name", traits),
            verbs=frozenset(v.lower() for v in verbs)))
    return tuple(rules)


def check_kube_request(roles: Sequence[CompiledRole], cluster_labels: Labels,
                       info: KubeRequestInfo) -> Decision:
    """May the user make this request on a cluster with ``cluster_labels``? (See the module.)"""
    if not info.is_resource_request:
        return allow(None, "allow.kubernetes_labels",
                     f"{info.path} names no resource (discovery)")
    if info.verb == "create" and (info.api_group, info.resource) in SELF_REVIEWS:
        return allow(None, "allow.kubernetes_labels",
                     f"{info.resource} answers questions about the user themselves")
    for role in roles:
        if role.broken:
            return deny(role.name, "deny", f"role {role.name!r} is broken: {role.problem}")
        denied_here = role.deny.kubernetes_labels.is_empty or \
            role.deny.kubernetes_labels.matches(cluster_labels)
        for rule in role.deny.kubernetes_resources or ():
            if denied_here and rule.matches(info):
                return deny(role.name, "deny.kubernetes_resources",
                            f"role {role.name!r} denies {info.describe()} "
                            f"({rule.describe()})")
    matching = [r for r in roles if r.allow.kubernetes_labels.matches(cluster_labels)]
    for role in matching:
        rules = role.allow.kubernetes_resources
        if rules is None:
            return allow(role.name, "allow.kubernetes_labels",
                         f"role {role.name!r} matches the cluster and does not restrict "
                         "kubernetes_resources")
        for rule in rules:
            if rule.matches(info):
                return allow(role.name, "allow.kubernetes_resources",
                             f"role {role.name!r} allows {info.describe()} ({rule.describe()})")
    if not matching:
        return deny(None, "allow.kubernetes_labels",
                    "no role's allow.kubernetes_labels match the cluster")
    names = ", ".join(r.name for r in matching)
    return deny(None, "allow.kubernetes_resources",
                f"{info.describe()} is outside the kubernetes_resources of the roles "
                f"matching the cluster ({names})")
