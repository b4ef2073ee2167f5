"""manifests/: the kustomize base and overlays build with kubectl's kustomize, hold what the
operator needs, and the Argo CD health check (Lua, run by a real Lua interpreter) reads the
status the operator writes."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from limen.operator.conditions import Check, Observation, build_status
from limen.operator.settings import FINALIZER

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
LUA = shutil.which("lua5.4") or shutil.which("lua")
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (scripts/test installs it)")
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def find(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_base_has_everything_the_operator_needs() -> None:
    objects = kustomize(MANIFESTS / "base")
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["ClusterRole", "ClusterRoleBinding"] + ["CustomResourceDefinition"] * 8 + [
        "Deployment", "Namespace", "ServiceAccount"]
    crds = {o["metadata"]["name"]: o for o in find(objects, "CustomResourceDefinition")}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        assert crds[crd["metadata"]["name"]]["spec"] == crd["spec"]
    [deployment] = find(objects, "Deployment")
    assert deployment["metadata"]["namespace"] == "limen-system"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "limen-operator"
    assert pod["containers"][0]["args"] == ["operator"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["LIMEN_OPERATOR_STANDALONE"] == "true"
    assert env["LIMEN_OPERATOR_IDENTITY"] == "/var/run/limen/identity"
    # no fixed auth address: the operator derives it from the Cluster it deploys, whatever its
    # name (limen.operator.deployed_auth)
    assert "LIMEN_AUTH_ADDRESS" not in env
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_rbac_allows_status_and_metadata_but_not_updates() -> None:
    objects = kustomize(MANIFESTS / "base")
    [role] = find(objects, "ClusterRole")
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    for plural in ("users", "roles", "trustedclusters", "resources", "clusters"):
        assert rules["limen.dev", plural] == {"get", "list", "watch", "patch"}
        assert rules["limen.dev", f"{plural}/status"] == {"get", "patch"}
    # patches only: never a whole object; update only on clusters/finalizers, which the API
    # server asks of whoever sets blockOwnerDeletion on an ownerReference to a Cluster
    assert rules["limen.dev", "clusters/finalizers"] == {"update"}
    assert "update" not in set().union(*(verbs for key, verbs in rules.items()
                                         if key != ("limen.dev", "clusters/finalizers")))
    # children go with ownerReferences; the kube agent's cluster-scoped RBAC cannot
    rbac = {("rbac.authorization.k8s.io", r) for r in ("clusterroles", "clusterrolebindings")}
    assert "delete" not in set().union(*(v for k, v in rules.items() if k not in rbac))
    assert all("delete" in rules[key] for key in rbac)
    assert rules["", "users"] == rules["", "groups"] == {"impersonate"}
    assert {"create"} <= rules["", "events"]
    assert {"create", "patch"} <= rules["apps", "deployments"]
    [binding] = find(objects, "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == "limen-system"


def test_sync_waves_order_namespace_rbac_then_operator() -> None:
    objects = kustomize(MANIFESTS / "base")
    waves = {o["kind"]: int(o["metadata"].get("annotations", {}).get(
        "argocd.argoproj.io/sync-wave", 0)) for o in objects}
    assert waves["Namespace"] < waves["ServiceAccount"] <= waves["ClusterRole"] < (
        waves["Deployment"])


def test_overlays() -> None:
    namespaced = find(kustomize(MANIFESTS / "overlays" / "namespaced"), "Deployment")[0]
    env = {e["name"]: e["value"]
           for e in namespaced["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LIMEN_OPERATOR_NAMESPACES"] == "team-a,team-b"
    blue = kustomize(MANIFESTS / "overlays" / "second-operator")
    assert not find(blue, "CustomResourceDefinition")
    [deployment] = find(blue, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["LIMEN_OPERATOR_ID"] == "blue"
    assert deployment["metadata"]["name"] == "limen-operator-blue"
    assert pod["serviceAccountName"] == "limen-operator-blue"
    assert pod["volumes"][0]["secret"]["secretName"] == "limen-operator-identity-blue"
    [binding] = find(blue, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "limen-operator"
    assert binding["subjects"][0]["name"] == "limen-operator-blue"


# -- Argo CD health ----------------------------------------------------------------------------


def to_lua(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{json.dumps(k)}] = {to_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    return json.dumps(value)


def health(obj: dict[str, Any]) -> dict[str, str]:
    assert LUA is not None, "no Lua interpreter: scripts/test installs lua5.4 for this check"
    script = (MANIFESTS / "argocd" / "health.lua").read_text()
    program = (f"obj = {to_lua(obj)}\nlocal hs = (function()\n{script}\nend)()\n"
               'print(hs.status .. "\\n" .. (hs.message or ""))\n')
    result = subprocess.run([LUA, "-"], input=program, capture_output=True, text=True,
                            check=False, timeout=30)
    assert result.returncode == 0, result.stderr
    status, message = result.stdout.split("\n", 1)
    return {"status": status, "message": message.rstrip("\n")}


def role(generation: int, observation: Observation | None,
         observed: int | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "limen.dev/v1alpha1", "kind": "Role",
                           "metadata": {"name": "dev", "generation": generation,
                                        "finalizers": [FINALIZER]}}
    if observation is not None:
        obj["status"] = build_status(None, observation, observed or generation, T0)
    return obj


VALID, OWNED = Check(True, "Valid"), Check(True, "Owned")


@pytest.mark.parametrize(("obj", "status", "message"), [
    (role(1, None), "Progressing", "Waiting for the Limen operator"),
    (role(2, Observation(Check(True, "Applied", "Role/dev created"), VALID, OWNED), 1),
     "Progressing", "Waiting for the Limen operator to process generation 2"),
    (role(1, Observation(Check(True, "Applied", "Role/dev created"), VALID, OWNED)),
     "Healthy", "Applied: Role/dev created"),
    (role(1, Observation(Check(False, "AuthUnreachable", "down"), VALID, OWNED,
                         reconciling=True)), "Progressing", "AuthUnreachable: down"),
    (role(1, Observation(Check(False, "Invalid", "spec.x: bad"),
                         Check(False, "Invalid", "spec.x: bad"), Check(None, "NotChecked"),
                         stalled=True)), "Degraded", "Invalid: spec.x: bad"),
], ids=["no-status", "old-generation", "ready", "reconciling", "stalled"])
def test_argocd_health(obj: dict[str, Any], status: str, message: str) -> None:
    assert health(obj) == {"status": status, "message": message}


def test_argocd_cm_embeds_the_same_lua() -> None:
    config = yaml.safe_load((MANIFESTS / "argocd" / "argocd-cm.yaml").read_text())
    assert config["data"]["resource.customizations.health.limen.dev_*"] == (
        MANIFESTS / "argocd" / "health.lua").read_text()
