"""Authentication, impersonation and RBAC of the Kubernetes API emulator, with the real
kubectl: what a kube agent that impersonates users meets on a real kube-apiserver.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from k8s_emulator.fixtures import Credentials, KubeAPI

RBAC = "rbac.authorization.k8s.io/v1"


def _whoami(api: KubeAPI, *args: str, kubeconfig: Path | None = None) -> dict[str, Any]:
    out = api.kubectl("auth", "whoami", "-o", "json", *args, kubeconfig=kubeconfig).stdout
    review = json.loads(out)
    assert review["kind"] == "SelfSubjectReview"
    user: dict[str, Any] = review["status"]["userInfo"]
    return user


def _cluster_role(api: KubeAPI, name: str, rules: list[dict[str, Any]]) -> None:
    api.create(
        {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules}
    )


def _bind(
    api: KubeAPI,
    kind: str,
    name: str,
    role: str,
    subject: dict[str, str],
    namespace: str | None = None,
) -> None:
    role_kind = "Role" if kind == "RoleBinding" else "ClusterRole"
    binding: dict[str, Any] = {
        "apiVersion": RBAC,
        "kind": kind,
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [subject],
    }
    api.create(binding)


def _agent(api: KubeAPI) -> Credentials:
    """The kube agent's service account, allowed to impersonate users and groups only."""
    agent = api.service_account("limen", "kube-agent")
    _cluster_role(
        api,
        "limen-impersonator",
        [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}],
    )
    _bind(
        api,
        "ClusterRoleBinding",
        "limen-impersonator",
        "limen-impersonator",
        {"kind": "ServiceAccount", "name": "kube-agent", "namespace": "limen"},
    )
    return agent


def _refused(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    return result.stderr.strip().splitlines()[-1]


def test_whoami_admin_service_account_and_certificate(kube_api_rbac: KubeAPI) -> None:
    api = kube_api_rbac
    assert _whoami(api) == {
        "username": "kubernetes-admin",
        "groups": ["system:masters", "system:authenticated"],
    }
    agent = api.service_account("limen", "kube-agent")
    uid = api.get("serviceaccounts", "kube-agent", "limen")["metadata"]["uid"]  # type: ignore[index]
    assert _whoami(api, kubeconfig=agent.kubeconfig) == {
        "username": "system:serviceaccount:limen:kube-agent",
        "uid": uid,
        "groups": [
            "system:serviceaccounts",
            "system:serviceaccounts:limen",
            "system:authenticated",
        ],
    }
    assert agent.token_file is not None
    assert agent.token_file.read_text() == agent.token
    assert agent.token_file.stat().st_mode & 0o777 == 0o600
    cert = api.certificate_credentials("bob", ["ops", "oncall"])
    assert _whoami(api, kubeconfig=cert.kubeconfig) == {
        "username": "bob",
        "groups": ["ops", "oncall", "system:authenticated"],
    }


def test_whoami_impersonated_with_groups_uid_and_extra(kube_api_rbac: KubeAPI) -> None:
    api = kube_api_rbac
    assert _whoami(
        api, "--as", "alice", "--as-group", "dev", "--as-group", "qa", "--as-uid", "u-1"
    ) == {"username": "alice", "uid": "u-1", "groups": ["dev", "qa", "system:authenticated"]}
    status, review = api.request_as(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        headers={
            "Impersonate-User": "system:serviceaccount:team:bot",
            "Impersonate-Extra-Scopes": "view",
            "Impersonate-Extra-acme.com%2fteam": "a",
        },
    )
    assert status == 201
    assert review["status"]["userInfo"] == {
        "username": "system:serviceaccount:team:bot",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:team", "system:authenticated"],
        "extra": {"scopes": ["view"], "acme.com/team": ["a"]},
    }


def test_unknown_token_and_no_credentials_are_401(kube_api_rbac: KubeAPI, tmp_path: Path) -> None:
    api = kube_api_rbac
    forged = tmp_path / "forged-kubeconfig"
    forged.write_text(api.kubeconfig_path.read_text().replace("kube-api-test-token", "forged"))
    result = api.kubectl("get", "pods", kubeconfig=forged, check=False)
    # kubectl words it after the request that failed first (discovery, when not cached)
    assert _refused(result) in (
        "error: You must be logged in to the server (Unauthorized)",
        "error: You must be logged in to the server "
        "(the server has asked for the client to provide credentials)",
    )
    status, body = api.request_as("GET", "/api/v1/namespaces/default/pods", token=None)
    assert (status, body["reason"], body["message"]) == (401, "Unauthorized", "Unauthorized")
    refused = [e for e in api.audit_events() if e["responseStatus"]["code"] == 401]
    assert refused
    assert all(e["user"] == {} for e in refused)
    assert refused[-1]["requestURI"] == "/api/v1/namespaces/default/pods"
    assert refused[-1]["objectRef"] == {
        "resource": "pods",
        "namespace": "default",
        "apiVersion": "v1",
    }


def test_impersonation_needs_the_impersonate_verb(kube_api_rbac: KubeAPI) -> None:
    api = kube_api_rbac
    agent = api.service_account("limen", "kube-agent")
    api.kubectl("get", "pods")  # discovery cached, so kubectl shows the request's own error
    result = api.kubectl("get", "pods", "--as", "admin", kubeconfig=agent.kubeconfig, check=False)
    assert _refused(result) == (
        'Error from server (Forbidden): users "admin" is forbidden: User '
        '"system:serviceaccount:limen:kube-agent" cannot impersonate resource "users" in API '
        'group "" at the cluster scope'
    )
    # allowed users but not groups: the group is refused, by name
    _cluster_role(
        api,
        "user-impersonator",
        [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}],
    )
    _bind(
        api,
        "ClusterRoleBinding",
        "user-impersonator",
        "user-impersonator",
        {"kind": "ServiceAccount", "name": "kube-agent", "namespace": "limen"},
    )
    result = api.kubectl(
        "get",
        "pods",
        "--as",
        "alice",
        "--as-group",
        "system:masters",
        kubeconfig=agent.kubeconfig,
        check=False,
    )
    assert _refused(result) == (
        'Error from server (Forbidden): groups "system:masters" is forbidden: User '
        '"system:serviceaccount:limen:kube-agent" cannot impersonate resource "groups" in API '
        'group "" at the cluster scope'
    )
    status, body = api.request_as(
        "GET",
        "/api/v1/namespaces/default/pods",
        token=agent.token,
        headers={"Impersonate-User": "alice", "Impersonate-Uid": "1"},
    )
    assert (status, body["message"]) == (
        403,
        (
            'uids.authentication.k8s.io "1" is forbidden: User '
            '"system:serviceaccount:limen:kube-agent" cannot impersonate resource "uids" in API '
            'group "authentication.k8s.io" at the cluster scope'
        ),
    )
    status, body = api.request_as(
        "GET",
        "/api/v1/namespaces/default/pods",
        token=agent.token,
        headers={"Impersonate-User": "alice", "Impersonate-Extra-Scopes": "view"},
    )
    assert (status, body["message"]) == (
        403,
        (
            'userextras.authentication.k8s.io "view" is forbidden: User '
            '"system:serviceaccount:limen:kube-agent" cannot impersonate resource '
            '"userextras/scopes" in API group "authentication.k8s.io" at the cluster scope'
        ),
    )
    refused = [e for e in api.audit_events() if e["responseStatus"]["code"] == 403]
    assert len(refused) == 4
    assert {e["user"]["username"] for e in refused} == {"system:serviceaccount:limen:kube-agent"}
    assert all("impersonatedUser" not in e for e in refused)


def test_groups_without_a_user_are_refused(kube_api_rbac: KubeAPI) -> None:
    status, body = kube_api_rbac.request_as(
        "GET", "/api/v1/pods", headers={"Impersonate-Group": "system:masters"}, raw=True
    )
    assert status == 500
    assert "without impersonating a user" in body


def test_rbac_of_an_impersonated_group(kube_api_rbac: KubeAPI) -> None:
    api = kube_api_rbac
    agent = _agent(api)
    api.create(
        {
            "apiVersion": RBAC,
            "kind": "Role",
            "metadata": {"name": "pod-reader", "namespace": "default"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
            ],
        }
    )
    _bind(
        api,
        "RoleBinding",
        "dev-reads-pods",
        "pod-reader",
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "dev"},
        "default",
    )
    api.run_pod("web")
    api.kubectl("get", "pods")  # discovery cached

    def as_alice(
        *args: str, groups: tuple[str, ...] = ("dev",)
    ) -> subprocess.CompletedProcess[str]:
        extra = [a for g in groups for a in ("--as-group", g)]
        return api.kubectl(
            "--as", "alice", *extra, *args, kubeconfig=agent.kubeconfig, check=False
        )

    listed = as_alice("get", "pods", "-o", "name")
    assert (listed.returncode, listed.stdout) == (0, "pod/web\n")
    assert _refused(as_alice("get", "pods", "-n", "kube-system")) == (
        'Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource '
        '"pods" in API group "" in the namespace "kube-system"'
    )
    assert _refused(as_alice("get", "pods", groups=())) == (
        'Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource '
        '"pods" in API group "" in the namespace "default"'
    )
    assert _refused(as_alice("delete", "pod", "web")) == (
        'Error from server (Forbidden): pods "web" is forbidden: User "alice" cannot delete '
        'resource "pods" in API group "" in the namespace "default"'
    )
    assert _refused(as_alice("get", "secrets")) == (
        'Error from server (Forbidden): secrets is forbidden: User "alice" cannot list resource '
        '"secrets" in API group "" in the namespace "default"'
    )
    assert re.search(
        r'pods "web" is forbidden: User "alice" cannot (get|create) resource '
        r'"pods/exec" in API group "" in the namespace "default"',
        _refused(as_alice("exec", "web", "--", "echo", "hi")),
    )
    assert as_alice("auth", "can-i", "list", "pods").stdout == "yes\n"
    assert as_alice("auth", "can-i", "create", "pods/exec").stdout == "no\n"
    # the subresource is a rule of its own; resourceNames narrow it to one pod
    api.create(
        {
            "apiVersion": RBAC,
            "kind": "Role",
            "metadata": {"name": "exec-web", "namespace": "default"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods/exec"],
                    "resourceNames": ["web"],
                    "verbs": ["get", "create"],
                }
            ],
        }
    )
    _bind(
        api,
        "RoleBinding",
        "dev-exec-web",
        "exec-web",
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "dev"},
        "default",
    )
    executed = as_alice("exec", "web", "--", "echo", "hi")
    assert (executed.returncode, executed.stdout) == (0, "hi\n")
    # what the API server saw: the agent, acting as alice in dev
    seen = [
        e
        for e in api.audit_events()
        if e.get("objectRef", {}).get("subresource") == "exec"
        and e["responseStatus"]["code"] == 101
    ]
    assert len(seen) == 1
    assert seen[0]["user"]["username"] == "system:serviceaccount:limen:kube-agent"
    assert seen[0]["impersonatedUser"] == {
        "username": "alice",
        "groups": ["dev", "system:authenticated"],
    }


def test_cluster_scope_and_discovery(kube_api_rbac: KubeAPI) -> None:
    api = kube_api_rbac
    carol = api.user_credentials("carol", ["viewers"])
    # discovery is open to every authenticated user (system:discovery), namespaces are not
    assert api.kubectl("api-versions", kubeconfig=carol.kubeconfig).stdout.startswith(
        "apiextensions.k8s.io/v1\n"
    )
    assert _refused(api.kubectl("get", "namespaces", kubeconfig=carol.kubeconfig, check=False)) == (
        'Error from server (Forbidden): namespaces is forbidden: User "carol" cannot list '
        'resource "namespaces" in API group "" at the cluster scope'
    )
    _cluster_role(
        api,
        "ns-viewer",
        [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}],
    )
    _bind(
        api,
        "ClusterRoleBinding",
        "viewers-see-ns",
        "ns-viewer",
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "viewers"},
    )
    names = api.kubectl("get", "namespaces", "-o", "name", kubeconfig=carol.kubeconfig).stdout
    assert "namespace/default\n" in names
    status, _ = api.request_as("GET", "/healthz", token=carol.token, raw=True)
    assert status != 403


@pytest.mark.parametrize("authenticate", [False, True])
def test_get_watch_receives_a_change(tmp_path: Path, authenticate: bool) -> None:
    with KubeAPI(tmp_path / "kube", authenticate=authenticate) as api:
        api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}})
        watch = subprocess.Popen(
            api.kubectl_command("get", "configmaps", "-w", "-o", "name"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert watch.stdout is not None
            assert watch.stdout.readline() == "configmap/cfg\n"
            api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}})
            assert watch.stdout.readline() == "configmap/new\n"
        finally:
            watch.terminate()
            watch.communicate(timeout=10)
