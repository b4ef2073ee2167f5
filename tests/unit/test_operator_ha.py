"""A Cluster on PostgreSQL with several auth and proxy replicas (issue #17), and the refusal of
several auth replicas on SQLite.

The builders against a golden file (tests/golden/operator_ha_postgres.yaml: the ConfigMap,
Deployments, Services and PodDisruptionBudgets of ``spec.backend.postgres`` with 2 auth and 2
proxy replicas), what auth's limen.yaml means to ``limen.config``, the earlier backend shape,
the CRD's rules as ``limen.api.validation`` mirrors them, the RBAC the new kind needs; then the
Cluster reconciler through the operator's own Kubernetes client against the API emulator
(``kube_api``): the CA key Secret created once and never rewritten, no data PVC, the PDBs and
replicas, Ready at 2/2 + 2/2; a foreign CA key Secret left alone; SQLite with
``auth.replicas: 3`` refused with a clear condition and nothing deployed or scaled."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_reconciling import Reconciling, condition, make_ready

from k8s_emulator.fixtures import KubeAPI
from limen.api.loader import load_text
from limen.api.validation import validate
from limen.auth.ca_key_file import read_ca_key
from limen.config import load_settings
from limen.errors import ValidationFailed
from limen.operator.cluster import _patch_for
from limen.operator.cluster_backend import CA_KEY_FILE, DSN_FILE, SQLITE_SINGLE_AUTH
from limen.operator.cluster_builders import children
from limen.operator.kube import object_path

LOG = logging.getLogger("test")
NS = "limen"
PIN = "sha256:" + "ab" * 32
ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "operator_ha_postgres.yaml"
GOLDEN_HEADER = (
    "# A Cluster on PostgreSQL with 2 auth and 2 proxy replicas "
    "(limen.operator.cluster_builders.children),\n"
    "# checked by tests/unit/test_operator_ha.py. Regenerate: LIMEN_UPDATE_GOLDEN=1 pytest that "
    "file.\n")
POSTGRES = {"postgres": {"dsnSecretRef": {"name": "main-pg", "key": "dsn"}}}


def cluster(backend: dict[str, Any] | None = None, *, auth: int = 2, proxy: int = 2,
            uid: str = "uid-main", generation: int = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {"public_address": "limen.example.com:443",
                            "auth": {"replicas": auth},
                            "proxy": {"replicas": proxy, "service_type": "LoadBalancer"}}
    if backend is not None:
        spec["backend"] = backend
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "main", "namespace": NS, "uid": uid, "generation": generation},
            "spec": spec}


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


class _BlockStrings(yaml.SafeDumper):
    """Multi-line strings (the ConfigMap's limen.yaml) as readable ``|`` blocks."""


_BlockStrings.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


# -- builders ----------------------------------------------------------------------------------


def test_postgres_with_two_auth_and_two_proxies_matches_the_golden_file() -> None:
    objects = children(cluster(POSTGRES), "limen:1.0", 3, ca_pin=PIN)
    text = GOLDEN_HEADER + yaml.dump_all(objects, Dumper=_BlockStrings, sort_keys=True)
    if os.environ.get("LIMEN_UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
    assert list(yaml.safe_load_all(text)) == objects


def test_the_replicated_workloads() -> None:
    objects = by_kind(children(cluster(POSTGRES), "img", 0, ca_pin=PIN))
    assert sorted(objects) == [
        ("ConfigMap", "main-config"), ("Deployment", "main-auth"), ("Deployment", "main-proxy"),
        ("PodDisruptionBudget", "main-auth"), ("PodDisruptionBudget", "main-proxy"),
        ("Service", "main-auth"), ("Service", "main-proxy")]  # no data PVC: state is in PG
    for component in ("auth", "proxy"):
        deployment = objects["Deployment", f"main-{component}"]
        assert deployment["spec"]["replicas"] == 2
        assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
        selector = deployment["spec"]["selector"]["matchLabels"]
        budget = objects["PodDisruptionBudget", f"main-{component}"]
        assert budget["apiVersion"] == "policy/v1"
        assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
        pod = deployment["spec"]["template"]["spec"]
        [term] = pod["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"] == {"labelSelector": {"matchLabels": selector},
                                           "topologyKey": "kubernetes.io/hostname"}
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"][
            "podAntiAffinity"]  # a one-node cluster still runs them all
    auth = objects["Deployment", "main-auth"]["spec"]["template"]["spec"]
    [container] = auth["containers"]
    assert container["readinessProbe"]["httpGet"] == {"scheme": "HTTP", "port": "diag",
                                                      "path": "/readyz?exclude=gitops"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"  # never the backend
    volumes = {v["name"]: v for v in auth["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    assert volumes["backend-dsn"]["secret"] == {
        "secretName": "main-pg", "defaultMode": 0o400,
        "items": [{"key": "dsn", "path": "dsn"}]}
    assert volumes["ca-key"]["secret"] == {"secretName": "main-ca-key", "defaultMode": 0o400}
    [init] = auth["initContainers"]
    for mounted in (container, init):
        paths = {m["mountPath"]: m for m in mounted["volumeMounts"]}
        assert paths[os.path.dirname(DSN_FILE)] == {"name": "backend-dsn", "readOnly": True,
                                                    "mountPath": os.path.dirname(DSN_FILE)}
        assert paths[os.path.dirname(CA_KEY_FILE)]["name"] == "ca-key"
    assert init["args"][-2:] == ["--config", "/etc/limen/limen.yaml"]
    proxy = objects["Deployment", "main-proxy"]["spec"]["template"]["spec"]
    assert not any(v["name"] in ("backend-dsn", "ca-key") for v in proxy["volumes"])


def test_auth_reads_its_backend_from_the_mounted_secrets(tmp_path: Path) -> None:
    objects = by_kind(children(cluster(POSTGRES), "img", 0, ca_pin=PIN))
    path = tmp_path / "limen.yaml"
    path.write_text(objects["ConfigMap", "main-config"]["data"]["limen.yaml"])
    settings = load_settings(path, env={}, overrides={"roles": ["auth"]})
    assert (settings.backend.type, settings.backend.dsn_file,
            settings.backend.ca_key_file) == ("postgres", DSN_FILE, CA_KEY_FILE)
    proxy = load_settings(path, env={}, overrides={"roles": ["proxy"]})
    assert proxy.backend.type == "postgres"  # the proxies open no backend and need no key


def test_the_earlier_backend_shape_deploys_the_same() -> None:
    earlier = {"type": "postgres", "dsn_secret_ref": {"secret": "main-pg", "key": "dsn"}}
    with_type = {"type": "postgres", **POSTGRES}
    expected = children(cluster(POSTGRES), "img", 0, ca_pin=PIN)
    assert children(cluster(earlier), "img", 0, ca_pin=PIN) == expected
    assert children(cluster(with_type), "img", 0, ca_pin=PIN) == expected


def test_sqlite_keeps_one_auth_pod_and_its_volume() -> None:
    for backend in (None, {"type": "sqlite"}):
        objects = by_kind(children(cluster(backend, auth=1), "img", 0, ca_pin=PIN))
        auth = objects["Deployment", "main-auth"]
        assert (auth["spec"]["replicas"], auth["spec"]["strategy"]) == (1, {"type": "Recreate"})
        assert "affinity" not in auth["spec"]["template"]["spec"]
        assert ("PersistentVolumeClaim", "main-auth-data") in objects
        assert ("PodDisruptionBudget", "main-auth") not in objects
        assert ("PodDisruptionBudget", "main-proxy") in objects  # the proxies are stateless
        assert "backend" not in yaml.safe_load(
            objects["ConfigMap", "main-config"]["data"]["limen.yaml"])
    single = by_kind(children(cluster(POSTGRES, auth=1, proxy=1), "img", 0, ca_pin=PIN))
    assert not any(kind == "PodDisruptionBudget" for kind, _ in single)


def test_back_to_sqlite_the_auth_deployment_drops_its_rolling_update() -> None:
    """The API server filled in ``rollingUpdate`` for the PostgreSQL Deployment and refuses it
    next to ``Recreate``: the patch removes it."""
    current = by_kind(children(cluster(POSTGRES), "img", 0, ca_pin=PIN))["Deployment",
                                                                        "main-auth"]
    current["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": "25%", "maxUnavailable": "25%"}
    desired = by_kind(children(cluster(None, auth=1), "img", 0, ca_pin=PIN))["Deployment",
                                                                           "main-auth"]
    patch = _patch_for(current, desired)
    assert patch["spec"]["strategy"] == {"type": "Recreate", "rollingUpdate": None}
    assert desired["spec"]["strategy"] == {"type": "Recreate"}  # the desired object unchanged
    proxy = by_kind(children(cluster(POSTGRES), "img", 0, ca_pin=PIN))["Deployment",
                                                                      "main-proxy"]
    changed = by_kind(children(cluster(POSTGRES, proxy=3), "img", 0, ca_pin=PIN))[
        "Deployment", "main-proxy"]
    proxy["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": "25%"}
    assert _patch_for(proxy, changed)["spec"]["strategy"] == {"type": "RollingUpdate"}


def cluster_problems(backend: dict[str, Any]) -> list[str]:
    text = yaml.safe_dump({"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
                           "metadata": {"name": "main"},
                           "spec": {"public_address": "x.example", "backend": backend}})
    try:
        validate(load_text(text, "clusters/main.yaml"))
    except ValidationFailed as err:
        return [f"{e.path}: {e.reason}" for e in err.errors]
    return []


@pytest.mark.parametrize(("backend", "problem"), [
    (POSTGRES, None),
    ({"type": "postgres", **POSTGRES}, None),
    ({"type": "sqlite"}, None),
    ({"type": "postgres"}, "spec.backend.dsn_secret_ref: required for a postgres backend"),
    ({"type": "sqlite", **POSTGRES},
     "spec.backend.type: postgres is a PostgreSQL backend; drop type sqlite"),
    ({**POSTGRES, "type": "postgres", "dsn_secret_ref": {"secret": "a", "key": "b"}},
     "spec.backend.dsn_secret_ref: give the connection string once, in "
     "postgres.dsnSecretRef"),
    ({"postgres": {"dsnSecretRef": {"name": "main-pg"}}}, "spec.backend.postgres.dsnSecretRef"),
    ({"postgres": {}}, "spec.backend.postgres"),
    ({"postgres": {"dsnSecretRef": {"name": "a", "key": "b", "value": "c"}}},
     "spec.backend.postgres.dsnSecretRef"),
], ids=["postgres", "postgres-typed", "sqlite", "no-dsn", "sqlite-and-postgres", "two-dsns",
        "no-key", "no-ref", "unknown-field"])
def test_the_crd_rules_as_limen_checks_them(backend: dict[str, Any],
                                            problem: str | None) -> None:
    problems = cluster_problems(backend)
    if problem is None:
        assert problems == []
    else:
        assert any(p.startswith(problem) for p in problems), problems


def test_the_crd_carries_the_same_rules() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "limen.dev_clusters.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    backend = spec["properties"]["backend"]
    assert "default" not in backend["properties"]["type"]  # postgres alone means PostgreSQL
    assert backend["properties"]["postgres"]["properties"]["dsnSecretRef"]["required"] == [
        "name", "key"]
    assert [r["message"] for r in backend["x-kubernetes-validations"]] == [
        "a postgres backend needs postgres.dsnSecretRef",
        "postgres is a PostgreSQL backend; drop type sqlite",
        "give the connection string once, in postgres.dsnSecretRef"]


def test_rbac_lets_the_operator_write_every_kind_it_builds() -> None:
    [role] = [d for d in yaml.safe_load_all((ROOT / "manifests" / "base" / "rbac.yaml")
                                            .read_text()) if d["kind"] == "ClusterRole"]
    rules = role["rules"]
    allowed = {(group, resource): set(rule["verbs"]) for rule in rules
               for group in rule["apiGroups"] for resource in rule["resources"]}
    for obj in children(cluster(POSTGRES), "img", 0, ca_pin=PIN):
        path = object_path(obj["kind"], NS)
        group = "" if path.startswith("/api/v1/") else path.split("/")[2]
        assert {"get", "create", "patch"} <= allowed[group, path.rsplit("/", 1)[1]], obj["kind"]


# -- the reconciler against the API emulator --------------------------------------------------




async def test_the_operator_deploys_auth_replicas_on_postgres(
        kube_api: KubeAPI, operator_kube: Reconciling, tmp_path: Path) -> None:
    body = await operator_kube.run(cluster(POSTGRES))
    assert condition(body, "Valid")["status"] == "True"
    assert body["status"]["auth"] == {"ready": 0, "replicas": 2}

    key_secret = kube_api.get("secrets", "main-ca-key", NS)
    assert key_secret is not None
    [owner] = key_secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Cluster", "uid-main", True)
    key_file = tmp_path / "key"
    key_file.write_bytes(base64.b64decode(key_secret["data"]["key"]))
    key_file.chmod(0o400)
    key = read_ca_key(key_file)  # what auth reads from backend.ca_key_file: 32 bytes
    assert len(key) == 32

    for component in ("auth", "proxy"):
        deployment = kube_api.get("deployments", f"main-{component}", NS)
        assert deployment is not None
        assert deployment["spec"]["replicas"] == 2
        budget = kube_api.get("poddisruptionbudgets", f"main-{component}", NS)
        assert budget is not None
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["metadata"]["ownerReferences"][0]["uid"] == "uid-main"
    assert kube_api.get("persistentvolumeclaims", "main-auth-data", NS) is None

    # Ready once both have their replicas and the DSN Secret exists; the key is never rewritten
    make_ready(kube_api, "main-auth", 2)
    make_ready(kube_api, "main-proxy", 2)
    body["metadata"]["generation"] = 2
    body = await operator_kube.run(body)
    waiting = condition(body, "Ready")
    assert (waiting["status"], waiting["reason"], waiting["message"]) == (
        "False", "WaitingForSecret", "the Secret main-pg (spec.backend.postgres.dsnSecretRef) "
        "does not exist: auth's pods wait for it")
    encoded = base64.b64encode(b"host=db.internal dbname=limen").decode()
    kube_api.create({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "main-pg", "namespace": NS},
                     "data": {"url": encoded}})
    body = await operator_kube.run(body)
    assert condition(body, "Ready")["message"].startswith("the Secret main-pg has no key dsn")
    kube_api.patch("secrets", "main-pg", {"data": {"dsn": encoded}}, NS)
    body = await operator_kube.run(body)
    ready = condition(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Available")
    assert body["status"]["auth"] == {"ready": 2, "replicas": 2}
    again = kube_api.get("secrets", "main-ca-key", NS)
    assert again is not None
    assert (again["data"], again["metadata"]["resourceVersion"]) == (
        key_secret["data"], key_secret["metadata"]["resourceVersion"])

    # scaling auth changes the replicas only (no new pod template: no restart of the others)
    template = kube_api.get("deployments", "main-auth", NS)
    assert template is not None
    body["spec"]["auth"]["replicas"] = 3
    body["metadata"]["generation"] = 3
    body = await operator_kube.run(body)
    scaled = kube_api.get("deployments", "main-auth", NS)
    assert scaled is not None
    assert scaled["spec"]["replicas"] == 3
    assert scaled["spec"]["template"] == template["spec"]["template"]


async def test_a_foreign_ca_key_secret_is_left_alone(kube_api: KubeAPI,
                                                     operator_kube: Reconciling) -> None:
    mine = {"key": base64.b64encode(b"not the operator's").decode()}
    kube_api.create({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "main-ca-key", "namespace": NS}, "data": mine})
    body = await operator_kube.run(cluster(POSTGRES))
    owned = condition(body, "Owned")
    assert (owned["status"], owned["reason"]) == ("False", "NotOwned")
    assert "Secret main-ca-key" in owned["message"]
    assert kube_api.get("deployments", "main-auth", NS) is None
    kept = kube_api.get("secrets", "main-ca-key", NS)
    assert kept is not None
    assert kept["data"] == mine


async def test_several_auth_replicas_on_sqlite_are_refused(kube_api: KubeAPI,
                                                           operator_kube: Reconciling) -> None:
    body = await operator_kube.run(cluster(None, auth=3))
    valid = condition(body, "Valid")
    assert (valid["status"], valid["reason"]) == ("False", "Invalid")
    assert valid["message"] == f"spec.auth.replicas: {SQLITE_SINGLE_AUTH}"
    assert SQLITE_SINGLE_AUTH == ("auth.replicas > 1 needs spec.backend.postgres: SQLite is a "
                                  "single-process store")
    assert condition(body, "Stalled")["status"] == "True"
    assert condition(body, "Ready")["status"] == "False"
    assert kube_api.get("deployments", "main-auth", NS) is None
    assert kube_api.get("secrets", "main-ca", NS) is None

    # a running SQLite cluster asked for more auth replicas keeps its one pod
    running = await operator_kube.run(cluster(None, auth=1, uid="uid-main"))
    assert condition(running, "Valid")["status"] == "True"
    running["spec"]["auth"]["replicas"] = 2
    running["metadata"]["generation"] = 2
    running = await operator_kube.run(running)
    assert condition(running, "Valid")["message"] == f"spec.auth.replicas: {SQLITE_SINGLE_AUTH}"
    deployment = kube_api.get("deployments", "main-auth", NS)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 1


async def test_a_dsn_the_operator_cannot_mount_is_refused(kube_api: KubeAPI,
                                                          operator_kube: Reconciling) -> None:
    body = await operator_kube.run(cluster({"type": "postgres",
                                            "dsn_secret_ref": {"env": "PG_DSN"}}))
    valid = condition(body, "Valid")
    assert valid["status"] == "False"
    assert "give spec.backend.postgres.dsnSecretRef {name, key}" in valid["message"]
    assert kube_api.get("secrets", "main-ca-key", NS) is None
