"""Kubernetes requests and ``kubernetes_resources`` (``limen.rbac.kube_request``,
``limen.rbac.kube_resources``): what a request path asks for, as the kube-apiserver reads it,
and the per-request decision over a user's roles (deny first, one matching role must allow,
a role without the field allows every object, discovery is open to anyone the cluster admits).
"""

from __future__ import annotations

from typing import Any

import pytest

from limen.api.resources import Resource
from limen.errors import BadParameter
from limen.rbac.kube_request import request_info
from limen.rbac.kube_resources import kind_matches
from limen.rbac.roleset import RoleSet

DEV = {"env": "dev"}


def _role(name: str, allow: dict[str, Any] | None = None,
          deny: dict[str, Any] | None = None) -> Resource:
    spec: dict[str, Any] = {}
    if allow is not None:
        spec["allow"] = allow
    if deny is not None:
        spec["deny"] = deny
    return Resource.from_document({"apiVersion": "limen.dev/v1alpha1", "kind": "Role",
                                   "metadata": {"name": name}, "spec": spec})


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/api/v1/namespaces/dev/pods", {}, ("list", "pods", "", "dev", "")),
    ("GET", "/api/v1/namespaces/dev/pods", {"watch": ["true"]},
     ("watch", "pods", "", "dev", "")),
    ("GET", "/api/v1/watch/namespaces/dev/pods", {}, ("watch", "pods", "", "dev", "")),
    ("GET", "/apis/apps/v1/namespaces/dev/deployments/web", {},
     ("get", "deployments", "", "dev", "web")),
    ("POST", "/api/v1/namespaces/dev/pods/web/exec", {}, ("exec", "pods", "exec", "dev", "web")),
    ("GET", "/api/v1/namespaces/dev/pods/web/portforward", {},
     ("portforward", "pods", "portforward", "dev", "web")),
    ("GET", "/api/v1/namespaces/dev/pods/web/log", {"follow": ["true"]},
     ("get", "pods", "log", "dev", "web")),
    ("GET", "/api/v1/namespaces/dev", {}, ("get", "namespaces", "", "dev", "dev")),
    ("PUT", "/api/v1/namespaces/dev/finalize", {}, ("update", "namespaces", "finalize", "dev",
                                                    "dev")),
    ("GET", "/api/v1/nodes", {}, ("list", "nodes", "", "", "")),
    ("DELETE", "/api/v1/namespaces/dev/pods", {}, ("deletecollection", "pods", "", "dev", "")),
    ("PATCH", "/api/v1/namespaces/dev/pods/web", {}, ("patch", "pods", "", "dev", "web")),
    ("GET", "/version", {}, ("get", "", "", "", "")),
    ("GET", "/apis/apps/v1", {}, ("get", "", "", "", "")),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_request_info(method: str, path: str, query: dict[str, list[str]],
                      expected: tuple[str, ...]) -> None:
    info = request_info(method, path, query)
    assert (info.verb, info.resource, info.subresource, info.namespace, info.name) == expected


@pytest.mark.parametrize("path", ["/api/v1/namespaces/dev/pods/a%2Fb",
                                  "/api/v1/namespaces/%2e%2e/pods", "/api/v1/namespaces/x%00"])
def test_a_segment_the_server_could_read_otherwise_is_refused(path: str) -> None:
    with pytest.raises(BadParameter, match="invalid path segment"):
        request_info("GET", path)


def test_kinds_match_singular_and_plural() -> None:
    assert kind_matches("pod", "pods")
    assert kind_matches("Pods", "pods")
    assert kind_matches("ingress", "ingresses")
    assert kind_matches("networkpolicy",
                                                                 "networkpolicies")
    assert kind_matches("*", "secrets")
    assert not kind_matches("pod", "secrets")


def _check(roles: list[Resource], method: str, path: str,
           traits: dict[str, list[str]] | None = None) -> tuple[bool, str]:
    decision = RoleSet.from_roles(roles, traits or {}).check_kube_request(
        DEV, request_info(method, path))
    return decision.allowed, decision.rule


def test_rules_restrict_kind_namespace_name_and_verbs() -> None:
    viewer = _role("viewer", {"kubernetes_labels": DEV, "kubernetes_groups": ["view"],
                              "kubernetes_resources": [
                                  {"kind": "pod", "namespace": "team-*",
                                   "verbs": ["get", "list", "watch"]},
                                  {"kind": "deployment", "namespace": "team-a",
                                   "name": "web-*"}]})
    assert _check([viewer], "GET", "/api/v1/namespaces/team-a/pods") == \
        (True, "allow.kubernetes_resources")
    assert _check([viewer], "GET", "/api/v1/namespaces/prod/pods")[0] is False
    assert _check([viewer], "DELETE", "/api/v1/namespaces/team-a/pods/x") == \
        (False, "allow.kubernetes_resources")
    assert _check([viewer], "GET", "/api/v1/namespaces/team-a/secrets")[0] is False
    assert _check([viewer], "PATCH", "/apis/apps/v1/namespaces/team-a/deployments/web-1")[0]
    assert not _check([viewer], "PATCH", "/apis/apps/v1/namespaces/team-a/deployments/db")[0]
    # a name pattern other than '*' never covers a collection (lists are not filtered)
    assert not _check([viewer], "GET", "/apis/apps/v1/namespaces/team-a/deployments")[0]
    # cluster-scoped objects only under namespace '*'
    assert not _check([viewer], "GET", "/api/v1/nodes")[0]
    assert _check([viewer], "GET", "/version") == (True, "allow.kubernetes_labels")


def test_a_role_without_the_field_allows_every_object_and_deny_wins() -> None:
    everything = _role("all", {"kubernetes_labels": DEV, "kubernetes_groups": ["admins"]})
    no_secrets = _role("no-secrets", deny={"kubernetes_resources": [{"kind": "secret"}]})
    assert _check([everything], "GET", "/api/v1/nodes") == (True, "allow.kubernetes_labels")
    assert _check([everything, no_secrets], "GET", "/api/v1/namespaces/a/secrets/x") == \
        (False, "deny.kubernetes_resources")
    scoped_deny = _role("no-prod-secrets", deny={"kubernetes_labels": {"env": "prod"},
                                                 "kubernetes_resources": [{"kind": "secret"}]})
    assert _check([everything, scoped_deny], "GET", "/api/v1/namespaces/a/secrets/x")[0]


def test_namespaces_template_from_traits_and_a_namespace_object_matches_itself() -> None:
    team = _role("team", {"kubernetes_labels": DEV, "kubernetes_groups": ["edit"],
                          "kubernetes_resources": [
                              {"kind": "*", "namespace": "{{external.team}}-*"}]})
    traits = {"team": ["blue"]}
    assert _check([team], "GET", "/api/v1/namespaces/blue-dev/pods", traits)[0]
    assert not _check([team], "GET", "/api/v1/namespaces/red-dev/pods", traits)[0]
    assert _check([team], "GET", "/api/v1/namespaces/blue-dev", traits)[0]
    # a trait value is literal text: '*' as a team never widens the pattern
    assert not _check([team], "GET", "/api/v1/namespaces/red-dev/pods", {"team": ["*"]})[0]


def test_no_role_matching_the_cluster_denies() -> None:
    prod = _role("prod", {"kubernetes_labels": {"env": "prod"}, "kubernetes_groups": ["x"]})
    assert _check([prod], "GET", "/api/v1/namespaces/a/pods") == \
        (False, "allow.kubernetes_labels")


def test_questions_about_oneself_are_open_to_anyone_admitted() -> None:
    narrow = _role("narrow", {"kubernetes_labels": DEV, "kubernetes_groups": ["view"],
                              "kubernetes_resources": [{"kind": "pod", "namespace": "a"}]})
    assert _check([narrow], "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews")[0]
    assert _check([narrow], "POST",
                  "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")[0]
    assert not _check([narrow], "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews")[0]
    assert not _check([narrow], "DELETE",
                      "/apis/authentication.k8s.io/v1/selfsubjectreviews/x")[0]
