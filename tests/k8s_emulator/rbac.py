"""RBAC for the Kubernetes API emulator: ``rbac.authorization.k8s.io/v1`` as kube-apiserver
evaluates it, and the bootstrap policy a fresh cluster has.

Used by ``apiserver.py`` in the authenticated mode (every request, and through
``impersonation.py`` every impersonation) and by ``fixtures.py`` (the bootstrap objects are
created when that mode starts). Roles and bindings are ordinary stored objects, so tests and
clients create, change and delete them through the API like any other.

A request is allowed when the user is in ``system:masters``, or a ClusterRoleBinding (any
namespace) or a RoleBinding in the request's namespace binds a subject matching the user
(``User`` by name, ``Group`` by group, ``ServiceAccount`` by its
``system:serviceaccount:NS:NAME`` username) to a Role or ClusterRole with a matching rule:
verb (or ``*``), apiGroup (or ``*``), resource (``*``, ``pods``, ``pods/exec`` or
``*/exec``), and resourceNames if any (which never match a request without a name: list,
create); non-resource requests match ``nonResourceURLs`` exactly or by a ``/prefix*``.
Aggregated ClusterRoles (``aggregationRule``) are not aggregated.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .requestinfo import Attributes
from .store import ObjectStore
from .users import ALL_AUTHENTICATED, MASTERS, UserInfo, service_account_user

__all__ = ["RBACAuthorizer", "bootstrap_policy"]

RBAC_GROUP = "rbac.authorization.k8s.io"
_API_VERSION = f"{RBAC_GROUP}/v1"


def _rules(store: ObjectStore, plural: str, namespace: str | None, name: str) -> list[Any]:
    rtype = store.find_type(RBAC_GROUP, "v1", plural)
    objs = store.list(rtype, namespace, fields=lambda o: o["metadata"]["name"] == name)
    return list(objs[0].get("rules") or []) if objs else []


def _subject_matches(subject: Mapping[str, Any], user: UserInfo, binding_ns: str | None) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == user.username
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_ns or ""
        return bool(name) and service_account_user(namespace, str(name)) == user.username
    return False


def _has(values: Any, wanted: str) -> bool:
    return isinstance(values, list) and ("*" in values or wanted in values)


def _resource_matches(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    combined = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    for resource in rule.get("resources") or ():
        if resource in ("*", combined):
            return True
        if attrs.subresource and resource == f"*/{attrs.subresource}":
            return True
    return False


def _rule_allows(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        return any(
            url == "*"
            or url == attrs.path
            or (url.endswith("*") and attrs.path.startswith(url[:-1]))
            for url in rule.get("nonResourceURLs") or ()
        )
    if not _has(rule.get("apiGroups"), attrs.api_group) or not _resource_matches(rule, attrs):
        return False
    names = rule.get("resourceNames") or ()
    return not names or (bool(attrs.name) and attrs.name in names)


class RBACAuthorizer:
    """Decides from the Roles, ClusterRoles and bindings stored in ``store``."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def allowed(self, attrs: Attributes) -> bool:
        if MASTERS in attrs.user.groups:
            return True
        return any(_rule_allows(rule, attrs) for rule in self._granted(attrs))

    def _granted(self, attrs: Attributes) -> Iterator[Mapping[str, Any]]:
        store, user = self.store, attrs.user
        cluster_bindings = store.find_type(RBAC_GROUP, "v1", "clusterrolebindings")
        for binding in store.list(cluster_bindings, None):
            ref = binding.get("roleRef") or {}
            if ref.get("kind") == "ClusterRole" and any(
                _subject_matches(s, user, None) for s in binding.get("subjects") or ()
            ):
                yield from _rules(store, "clusterroles", None, ref.get("name", ""))
        if not attrs.namespace:
            return
        bindings = store.find_type(RBAC_GROUP, "v1", "rolebindings")
        for binding in store.list(bindings, attrs.namespace):
            ref = binding.get("roleRef") or {}
            if not any(
                _subject_matches(s, user, attrs.namespace) for s in binding.get("subjects") or ()
            ):
                continue
            if ref.get("kind") == "ClusterRole":
                yield from _rules(store, "clusterroles", None, ref.get("name", ""))
            elif ref.get("kind") == "Role":
                yield from _rules(store, "roles", attrs.namespace, ref.get("name", ""))


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": _API_VERSION,
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "rules": rules,
    }


def _binding(name: str, *groups: str) -> dict[str, Any]:
    return {
        "apiVersion": _API_VERSION,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": g} for g in groups],
    }


def bootstrap_policy() -> list[dict[str, Any]]:
    """The part of kube-apiserver's bootstrap policy that clients rely on: ``cluster-admin``
    for ``system:masters``, discovery, ``/version`` and the self reviews (``kubectl auth
    whoami``, ``kubectl auth can-i``) for every authenticated user."""
    info = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
    return [
        _cluster_role(
            "cluster-admin",
            [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        ),
        _binding("cluster-admin", MASTERS),
        _cluster_role(
            "system:discovery",
            [
                {
                    "nonResourceURLs": [
                        "/api",
                        "/api/*",
                        "/apis",
                        "/apis/*",
                        "/openapi",
                        "/openapi/*",
                        *info,
                    ],
                    "verbs": ["get"],
                }
            ],
        ),
        _binding("system:discovery", ALL_AUTHENTICATED),
        _cluster_role(
            "system:basic-user",
            [
                {
                    "apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"],
                },
                {
                    "apiGroups": ["authentication.k8s.io"],
                    "resources": ["selfsubjectreviews"],
                    "verbs": ["create"],
                },
            ],
        ),
        _binding("system:basic-user", ALL_AUTHENTICATED),
        _cluster_role("system:public-info-viewer", [{"nonResourceURLs": info, "verbs": ["get"]}]),
        _binding("system:public-info-viewer", ALL_AUTHENTICATED, "system:unauthenticated"),
    ]
