"""The kube agent a Cluster runs for the Kubernetes cluster it is in (``spec.kube``,
``limen.operator.kube_agent``).

The builders: the ClusterRole grants ``impersonate`` on users, groups and serviceaccounts and
nothing else, bound to the agent's own ServiceAccount; the agent's pod runs with that account's
token, its limen.yaml serves only this cluster through the in-cluster account; auth reads the
kube token. Then the Cluster reconciler through the operator's own Kubernetes client against
the API emulator (``kube_api``): every object created, the readiness in the status, disabling
(scaled to 0, the RBAC deleted), the delete handler, a foreign ClusterRole left alone, a bad
spec stalled before anything is deployed."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_reconciling import Reconciling, condition, make_ready

from k8s_emulator.fixtures import KubeAPI
from limen.api.schemas import with_defaults
from limen.config import load_settings
from limen.operator.cluster_builders import KUBE_TOKEN_FILE, children
from limen.operator.kube import object_path
from limen.operator.kube_agent import (
    IMPERSONATE_RULES,
    kube_agent_config,
    kube_children,
    kube_rbac,
    kube_rbac_name,
    owns_cluster_scoped,
)

LOG = logging.getLogger("test")
NS = "limen"
PIN = "sha256:" + "cd" * 32
RBAC_NAME = "limen-limen-main-kube-agent"


def cluster(kube: dict[str, Any] | None = None, uid: str = "uid-main",
            generation: int = 1, namespace: str = NS) -> dict[str, Any]:
    spec: dict[str, Any] = {"public_address": "limen.example.com:443"}
    if kube is not None:
        spec["kube"] = kube
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "main", "namespace": namespace, "uid": uid,
                         "generation": generation},
            "spec": spec}


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


# -- builders ----------------------------------------------------------------------------------


def test_the_cluster_role_allows_impersonate_and_nothing_else() -> None:
    role, binding = kube_rbac(cluster({"enabled": True}))
    assert role == {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": role["metadata"],
        "rules": [{"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"],
                   "verbs": ["impersonate"]}]}
    assert role["rules"] == IMPERSONATE_RULES
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": RBAC_NAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "main-kube-agent",
                                    "namespace": NS}]
    for obj in (role, binding):
        meta = obj["metadata"]
        assert meta["name"] == RBAC_NAME
        assert "namespace" not in meta
        assert "ownerReferences" not in meta
        assert meta["labels"]["limen.dev/cluster-namespace"] == NS
        assert meta["labels"]["app.kubernetes.io/instance"] == "main"
        assert owns_cluster_scoped(obj, cluster())
        assert not owns_cluster_scoped(obj, cluster(namespace="other"))
    # one pair per Cluster: the namespace is in the name
    assert kube_rbac_name(cluster(namespace="team-b")) == "limen-team-b-main-kube-agent"


def test_the_agent_pod_runs_with_its_service_account_and_probes_on_diag() -> None:
    objects = by_kind(kube_children(cluster({"enabled": True, "replicas": 2}), "img",
                                    ca_pin=PIN))
    assert set(objects) == {("ServiceAccount", "main-kube-agent"),
                            ("ConfigMap", "main-kube-config"), ("Deployment", "main-kube")}
    for obj in objects.values():
        [owner] = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("Cluster", "uid-main",
                                                                       True)
    deployment = objects["Deployment", "main-kube"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "main-kube-agent"
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    args = container["args"]
    assert args[args.index("--roles") + 1] == "kube"
    assert args[args.index("--proxy") + 1] == "main-proxy.limen.svc:3080"
    assert args[args.index("--ca-pin") + 1] == PIN
    assert args[args.index("--diag-addr") + 1] == "0.0.0.0:3003"
    assert container["ports"] == [{"name": "diag", "containerPort": 3003}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["env"][-1] == {"name": "LIMEN_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "main-kube-token", "key": "token"}}}
    assert "--token" not in args


def test_no_kube_agent_unless_enabled() -> None:
    assert kube_children(cluster(), "img", ca_pin=PIN) == []
    assert kube_children(cluster({"replicas": 3}), "img", ca_pin=PIN) == []
    assert with_defaults("Cluster", {"kube": {}})["kube"] == {"enabled": False, "replicas": 1}
    image = by_kind(kube_children(cluster({"enabled": True, "image": "kube:2"}), "img",
                                  ca_pin=PIN))["Deployment", "main-kube"]
    assert image["spec"]["template"]["spec"]["containers"][0]["image"] == "kube:2"


def test_the_agents_limen_yaml_serves_this_cluster_in_cluster(tmp_path: Path) -> None:
    path = tmp_path / "limen.yaml"
    for kube, name, labels in (({"enabled": True}, "main", {}),
                               ({"enabled": True, "name": "prod-k8s",
                                 "labels": {"env": "prod"}}, "prod-k8s", {"env": "prod"})):
        config_map = by_kind(kube_children(cluster(kube), "img", ca_pin=PIN))[
            "ConfigMap", "main-kube-config"]
        assert yaml.safe_load(config_map["data"]["limen.yaml"]) == kube_agent_config(
            cluster(kube))
        path.write_text(config_map["data"]["limen.yaml"])
        settings = load_settings(path, env={}, overrides={"roles": ["kube"]})
        assert settings.kube.resources == ()  # no other cluster's Resource
        [served] = settings.kube.clusters
        assert (served["name"], served["labels"]) == (name, labels)
        assert "kubeconfig" not in served  # the pod's service account


def test_auth_reads_the_kube_token(tmp_path: Path) -> None:
    objects = by_kind(children(cluster(), "img", 0, ca_pin=PIN))
    (tmp_path / "limen.yaml").write_text(objects["ConfigMap", "main-config"]["data"][
        "limen.yaml"])
    assert load_settings(tmp_path / "limen.yaml", env={}).auth.kube_token_file == \
        KUBE_TOKEN_FILE
    auth = objects["Deployment", "main-auth"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in auth["volumes"]}
    mount = next(m for m in auth["containers"][0]["volumeMounts"] if m["name"] == "kube-token")
    assert volumes["kube-token"]["secret"] == {"secretName": "main-kube-token",
                                               "defaultMode": 0o400}
    assert (f"{mount['mountPath']}/token", mount["readOnly"]) == (KUBE_TOKEN_FILE, True)


def test_cluster_scoped_paths() -> None:
    assert object_path("ClusterRole", "", "x") == \
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/x"
    assert object_path("ClusterRoleBinding", "ignored") == \
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
    assert object_path("ServiceAccount", NS, "a") == "/api/v1/namespaces/limen/serviceaccounts/a"


# -- the reconciler against the API emulator --------------------------------------------------




async def test_the_operator_deploys_the_kube_agent_and_its_rbac(
        kube_api: KubeAPI, operator_kube: Reconciling) -> None:
    body = await operator_kube.run(cluster({"enabled": True, "labels": {"env": "prod"}}))
    assert condition(body, "Ready")["reason"] == "Progressing"
    assert body["status"]["kube"] == {"ready": 0, "replicas": 1}

    secret = kube_api.get("secrets", "main-kube-token", NS)
    assert secret is not None
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-main"
    assert len(base64.b64decode(secret["data"]["token"])) >= 32
    account = kube_api.get("serviceaccounts", "main-kube-agent", NS)
    assert account is not None
    assert account["metadata"]["ownerReferences"][0]["uid"] == "uid-main"
    role = kube_api.get("clusterroles", RBAC_NAME, None)
    binding = kube_api.get("clusterrolebindings", RBAC_NAME, None)
    assert role is not None
    assert binding is not None
    assert role["rules"] == IMPERSONATE_RULES
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "main-kube-agent",
                                    "namespace": NS}]
    deployment = kube_api.get("deployments", "main-kube", NS)
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "main-kube-agent"

    # a role widened by hand is put back at the next reconcile
    kube_api.patch("clusterroles", RBAC_NAME, {"rules": [
        *IMPERSONATE_RULES, {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]})
    for name in ("main-auth", "main-proxy", "main-kube"):
        make_ready(kube_api, name, 1)
    body = await operator_kube.run(body)
    widened = kube_api.get("clusterroles", RBAC_NAME, None)
    assert widened is not None
    assert widened["rules"] == IMPERSONATE_RULES
    ready = condition(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Available")
    assert "the kube agent" in ready["message"]

    # disabled: scaled to 0, not deleted; the impersonation grant goes; the token stays
    body["spec"]["kube"]["enabled"] = False
    body["metadata"]["generation"] = 2
    body = await operator_kube.run(body)
    scaled = kube_api.get("deployments", "main-kube", NS)
    assert scaled is not None
    assert scaled["spec"]["replicas"] == 0
    assert kube_api.get("clusterroles", RBAC_NAME, None) is None
    assert kube_api.get("clusterrolebindings", RBAC_NAME, None) is None
    assert body["status"].get("kube") is None
    again = kube_api.get("secrets", "main-kube-token", NS)
    assert again is not None
    assert again["data"] == secret["data"]


async def test_the_delete_handler_removes_the_cluster_scoped_rbac(
        kube_api: KubeAPI, operator_kube: Reconciling) -> None:
    body = await operator_kube.run(cluster({"enabled": True}))
    assert kube_api.get("clusterroles", RBAC_NAME, None) is not None
    await operator_kube.reconciler.delete_kube_rbac(body, LOG)
    assert kube_api.get("clusterroles", RBAC_NAME, None) is None
    assert kube_api.get("clusterrolebindings", RBAC_NAME, None) is None


async def test_a_foreign_cluster_role_is_left_alone(kube_api: KubeAPI,
                                                    operator_kube: Reconciling) -> None:
    foreign_rules = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    kube_api.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                     "metadata": {"name": RBAC_NAME}, "rules": foreign_rules})
    body = await operator_kube.run(cluster({"enabled": True}))
    owned = condition(body, "Owned")
    assert (owned["status"], owned["reason"]) == ("False", "NotOwned")
    assert f"ClusterRole {RBAC_NAME}" in owned["message"]
    assert condition(body, "Stalled")["status"] == "True"
    role = kube_api.get("clusterroles", RBAC_NAME, None)
    assert role is not None
    assert role["rules"] == foreign_rules
    # neither disabling nor deleting the Cluster deletes what is not its own
    await operator_kube.reconciler.delete_kube_rbac(body, LOG)
    assert kube_api.get("clusterroles", RBAC_NAME, None) is not None


@pytest.mark.parametrize("kube", [{"enabled": True, "labels": {"bad key!": "x"}},
                                  {"enabled": True, "name": "Not_A_Name"}],
                         ids=["label", "name"])
async def test_a_bad_kube_spec_is_stalled_before_anything_is_deployed(
        kube_api: KubeAPI, operator_kube: Reconciling, kube: dict[str, Any]) -> None:
    body = await operator_kube.run(cluster(kube))
    valid = condition(body, "Valid")
    assert (valid["status"], valid["reason"]) == ("False", "Invalid")
    assert "kube" in valid["message"]
    assert kube_api.get("deployments", "main-kube", NS) is None
    assert kube_api.get("clusterroles", RBAC_NAME, None) is None
