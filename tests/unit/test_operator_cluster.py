"""Cluster: the pure builders of its children, then the handler against an in-memory
stand-in for the few Kubernetes verbs it uses (the end-to-end test runs it against the API
server fixture)."""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from limen.ca.authority import CertAuthorityType
from limen.config import load_settings
from limen.operator.ca_secret import read_secret_data
from limen.operator.cluster import ROTATION_ANNOTATION, ClusterReconciler, _patch_for
from limen.operator.cluster_builders import (
    CA_REVISION_ANNOTATION,
    CONFIG_HASH_ANNOTATION,
    children,
    limen_config,
    readiness,
)
from limen.operator.conditions import find
from limen.operator.context import OperatorContext
from limen.operator.kube import KubeError, object_path
from limen.operator.settings import OperatorConfig

LOG = logging.getLogger("test")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PIN = "sha256:" + "ab" * 32


def cluster(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "main", "namespace": "limen", "uid": "uid-main",
                         "generation": 1, **meta},
            "spec": spec or {"public_address": "limen.example.com:443",
                             "proxy": {"replicas": 2, "service_type": "LoadBalancer"}}}


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


# -- builders ----------------------------------------------------------------------------------


def test_every_child_is_owned_and_labelled() -> None:
    objects = children(cluster(), "img:1", 0, ca_pin=PIN)
    assert sorted(by_kind(objects)) == [
        ("ConfigMap", "main-config"), ("Deployment", "main-auth"), ("Deployment", "main-proxy"),
        ("PersistentVolumeClaim", "main-auth-data"),
        ("PodDisruptionBudget", "main-proxy"),  # two proxies: evicted one at a time
        ("Service", "main-auth"), ("Service", "main-proxy")]
    for obj in objects:
        meta = obj["metadata"]
        assert meta["namespace"] == "limen"
        assert meta["ownerReferences"] == [{
            "apiVersion": "limen.dev/v1alpha1", "kind": "Cluster", "name": "main",
            "uid": "uid-main", "controller": True, "blockOwnerDeletion": True}]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "limen"
        assert labels["app.kubernetes.io/instance"] == "main"
        assert labels["app.kubernetes.io/managed-by"] == "limen-operator"
        assert labels["app.kubernetes.io/part-of"] == "limen"
        assert labels["app.kubernetes.io/component"] in {"auth", "proxy", "config"}


def test_workloads_follow_the_spec() -> None:
    objects = by_kind(children(cluster(), "img:1", 3, ca_pin=PIN))
    auth, proxy = objects["Deployment", "main-auth"], objects["Deployment", "main-proxy"]
    assert auth["spec"]["replicas"] == 1
    assert auth["spec"]["strategy"] == {"type": "Recreate"}
    assert proxy["spec"]["replicas"] == 2
    for deployment in (auth, proxy):
        template = deployment["spec"]["template"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= (
            template["metadata"]["labels"].items())
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert template["spec"]["containers"][0]["image"] == "img:1"
    assert auth["spec"]["template"]["metadata"]["annotations"][CA_REVISION_ANNOTATION] == "3"
    assert auth["spec"]["template"]["spec"]["containers"][0]["args"][-4:] == [
        "--roles", "auth", "--diag-addr", "0.0.0.0:3000"]
    init = auth["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"][:2] == ["operator", "seed-ca"]
    assert objects["Service", "main-proxy"]["spec"]["type"] == "LoadBalancer"
    assert [p["port"] for p in objects["Service", "main-proxy"]["spec"]["ports"]] == [
        3080, 3023, 3024, 5433, 3036, 3026]
    assert objects["Service", "main-auth"]["spec"]["type"] == "ClusterIP"


def test_image_from_spec_wins() -> None:
    body = cluster({"public_address": "x.example", "proxy": {"image": "mine:2"}})
    proxy = by_kind(children(body, "img:1", 0, ca_pin=PIN))["Deployment", "main-proxy"]
    assert proxy["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:2"


def test_config_change_rolls_the_pods() -> None:
    def hash_of(body: dict[str, Any]) -> str:
        deployment = by_kind(children(body, "img", 0, ca_pin=PIN))["Deployment", "main-proxy"]
        return str(deployment["spec"]["template"]["metadata"]["annotations"][
            CONFIG_HASH_ANNOTATION])

    first = hash_of(cluster())
    assert hash_of(cluster()) == first
    assert hash_of(cluster({"public_address": "other.example:443"})) != first


def test_limen_config_is_a_valid_limen_yaml(tmp_path: Path) -> None:
    body = cluster({"public_address": "limen.example.com:443", "second_factor": "off",
                    "cluster_name": "prod",
                    "gitops": {"repo": "https://git.example/a.git", "branch": "main",
                               "poll_interval": "1m",
                               "credentials_ref": {"secret": "git", "key": "token"}}})
    path = tmp_path / "limen.yaml"
    configmap = by_kind(children(body, "img", 0, ca_pin=PIN))["ConfigMap", "main-config"]
    path.write_text(configmap["data"]["limen.yaml"])
    settings = load_settings(path, env={})
    assert settings.cluster.name == "prod"
    assert settings.cluster.second_factor == "off"
    assert settings.cluster.public_address == "limen.example.com:443"
    assert settings.listeners.auth == "0.0.0.0:3025"
    assert settings.gitops.source == "https://git.example/a.git"
    assert settings.gitops.interval_seconds == 60
    assert settings.gitops.credentials_file == "/etc/limen/gitops/token"
    assert limen_config(cluster())["cluster"]["name"] == "main"


def test_readiness_counts_only_current_pods() -> None:
    deployment = {"metadata": {"generation": 2}, "spec": {"replicas": 2},
                  "status": {"observedGeneration": 2, "readyReplicas": 2,
                             "updatedReplicas": 1}}
    assert readiness(deployment) == (1, 2)
    deployment["status"]["observedGeneration"] = 1
    assert readiness(deployment) == (0, 2)
    assert readiness(None) == (0, 0)


def test_patch_ignores_server_defaults_but_not_changes() -> None:
    desired = by_kind(children(cluster(), "img", 0, ca_pin=PIN))["Deployment", "main-proxy"]
    current = copy.deepcopy(desired)
    current["spec"]["revisionHistoryLimit"] = 10
    current["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    current["metadata"]["labels"]["extra"] = "x"
    assert _patch_for(current, desired) == {}
    current["spec"]["replicas"] = 5
    assert _patch_for(current, desired) == {"spec": desired["spec"]}


# -- the handler -------------------------------------------------------------------------------


class MemoryKube:
    """create / get / merge_patch / delete on a dict, with resourceVersion and uids."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.writes: list[tuple[str, str]] = []

    def _key(self, kind: str, namespace: str, name: str) -> str:
        return object_path(kind, namespace, name)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get(self._key(kind, namespace, name))
        return copy.deepcopy(found) if found else None

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = self._key(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in self.objects:
            raise KubeError(409, "exists")
        self.version += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.objects[key] = stored
        self.writes.append(("create", key))
        return copy.deepcopy(stored)

    async def merge_patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any],
                          *, subresource: str = "") -> dict[str, Any]:
        key = self._key(kind, namespace, name)
        current = self.objects[key]
        expected = (patch.get("metadata") or {}).get("resourceVersion")
        if expected and expected != current["metadata"]["resourceVersion"]:
            raise KubeError(409, "conflict")
        _merge(current, patch)
        self.version += 1
        current["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(("patch", key))
        return copy.deepcopy(current)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.objects.pop(self._key(kind, namespace, name), None)


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class Harness:
    def __init__(self) -> None:
        self.kube = MemoryKube()
        self.now = T0
        self.events: list[tuple[str, str, str]] = []
        self.ctx = OperatorContext(config=OperatorConfig(image="img:1"),
                                   kube=self.kube,  # type: ignore[arg-type]
                                   clock=lambda: self.now,
                                   post_event=lambda _b, t, r, m: self.events.append((t, r, m)))
        self.reconciler = ClusterReconciler(self.ctx)

    async def reconcile(self, body: dict[str, Any]) -> dict[str, Any]:
        patch = kopf.Patch()
        await self.reconciler.reconcile(body, patch, LOG, retry=True)
        body.setdefault("status", {}).update(dict(patch.get("status") or {}))
        return body

    def secret(self) -> dict[str, Any]:
        return self.kube.objects[object_path("Secret", "limen", "main-ca")]

    def deployment(self, name: str) -> dict[str, Any]:
        return self.kube.objects[object_path("Deployment", "limen", name)]


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    found = find(body["status"]["conditions"], type_)
    assert found is not None
    return dict(found)


async def test_creates_the_ca_secret_once_and_every_child() -> None:
    h = Harness()
    body = await h.reconcile(cluster())
    secret = h.secret()
    cluster_name, cas = read_secret_data(secret["data"])
    assert cluster_name == "main"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-main"
    assert len(h.kube.objects) == 11  # 4 Secrets (CA, proxy, db and kube tokens), 7 children
    assert body["status"]["publicAddress"] == "limen.example.com:443"
    assert body["status"]["caSecret"] == "main-ca"
    ready = condition(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Progressing")
    assert condition(body, "Reconciling")["status"] == "True"
    # a second pass changes nothing, above all not the CA
    writes = len(h.kube.writes)
    await h.reconcile(body)
    assert len(h.kube.writes) == writes
    assert read_secret_data(h.secret()["data"])[1][CertAuthorityType.TLS].fingerprint == (
        cas[CertAuthorityType.TLS].fingerprint)


async def test_ready_when_the_deployments_are() -> None:
    h = Harness()
    body = await h.reconcile(cluster())
    for name, replicas in (("main-auth", 1), ("main-proxy", 2)):
        h.deployment(name)["metadata"]["generation"] = 1
        h.deployment(name)["status"] = {"observedGeneration": 1, "readyReplicas": replicas,
                                        "updatedReplicas": replicas}
    body = await h.reconcile(body)
    assert condition(body, "Ready")["status"] == "True"
    assert condition(body, "Reconciling")["status"] == "False"
    assert body["status"]["proxy"] == {"ready": 2, "replicas": 2}


async def test_spec_change_patches_the_deployment() -> None:
    h = Harness()
    body = await h.reconcile(cluster())
    body["spec"]["proxy"]["replicas"] = 4
    body["metadata"]["generation"] = 2
    body = await h.reconcile(body)
    assert h.deployment("main-proxy")["spec"]["replicas"] == 4
    assert body["status"]["observedGeneration"] == 2


async def test_foreign_objects_are_left_alone() -> None:
    h = Harness()
    await h.kube.create({"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": "main-proxy", "namespace": "limen"},
                         "spec": {"type": "ClusterIP"}})
    body = await h.reconcile(cluster())
    owned = condition(body, "Owned")
    assert (owned["status"], owned["reason"]) == ("False", "NotOwned")
    assert "Service main-proxy" in owned["message"]
    assert condition(body, "Stalled")["status"] == "True"
    assert h.kube.objects[object_path("Service", "limen", "main-proxy")]["spec"] == {
        "type": "ClusterIP"}


async def test_invalid_and_unsupported_specs_are_stalled() -> None:
    h = Harness()
    body = await h.reconcile(cluster({"public_address": "x", "proxy": {"replicas": 0}}))
    assert condition(body, "Valid")["status"] == "False"
    assert "spec.proxy.replicas" in condition(body, "Valid")["message"]
    body = await h.reconcile(cluster({"public_address": "x", "auth": {"replicas": 2}}))
    assert condition(body, "Valid")["message"] == (
        "spec.auth.replicas: auth.replicas > 1 needs spec.backend.postgres: SQLite is a "
        "single-process store")
    body = await h.reconcile(cluster({"public_address": "x", "backend": {
        "type": "postgres", "dsn_secret_ref": {"file": "/etc/dsn"}}}))
    assert "give spec.backend.postgres.dsnSecretRef" in condition(body, "Valid")["message"]
    assert h.kube.objects == {}


async def test_ca_rotation_then_finish_after_the_grace_period() -> None:
    h = Harness()
    body = await h.reconcile(cluster())
    _, before = read_secret_data(h.secret()["data"])
    body["spec"]["ca_rotation"] = {"type": "user", "nonce": "one", "grace_period": "1h"}
    body["metadata"]["generation"] = 2
    body = await h.reconcile(body)
    _, rotated = read_secret_data(h.secret()["data"])
    user = rotated[CertAuthorityType.USER]
    assert user.fingerprint != before[CertAuthorityType.USER].fingerprint
    assert len(user.additional_trusted) == 1
    assert rotated[CertAuthorityType.HOST].fingerprint == (
        before[CertAuthorityType.HOST].fingerprint)
    state = json.loads(h.secret()["metadata"]["annotations"][ROTATION_ANNOTATION])
    assert (state["nonce"], state["phase"], state["revision"]) == ("one", "Rotating", 1)
    assert body["status"]["caRotation"]["phase"] == "Rotating"
    assert h.deployment("main-auth")["spec"]["template"]["metadata"]["annotations"][
        CA_REVISION_ANNOTATION] == "1"
    assert h.events[-1][:2] == ("Normal", "CARotationRotating")
    # the same nonce again: nothing more happens before the grace period ends
    h.now = T0 + timedelta(minutes=59)
    body = await h.reconcile(body)
    assert len(read_secret_data(h.secret()["data"])[1][CertAuthorityType.USER]
               .additional_trusted) == 1
    h.now = T0 + timedelta(hours=1)
    body = await h.reconcile(body)
    _, done = read_secret_data(h.secret()["data"])
    assert done[CertAuthorityType.USER].additional_trusted == ()
    assert done[CertAuthorityType.USER].fingerprint == user.fingerprint
    assert body["status"]["caRotation"]["phase"] == "Completed"
    assert h.deployment("main-auth")["spec"]["template"]["metadata"]["annotations"][
        CA_REVISION_ANNOTATION] == "2"


async def test_deployment_event_refreshes_the_owner_status() -> None:
    h = Harness()
    body = await h.reconcile(cluster())
    stored = copy.deepcopy(body)
    h.kube.objects[object_path("Cluster", "limen", "main")] = stored
    for name, replicas in (("main-auth", 1), ("main-proxy", 2)):
        h.deployment(name)["status"] = {"readyReplicas": replicas, "updatedReplicas": replicas}
    await h.reconciler.deployment_changed(h.deployment("main-proxy"), LOG)
    refreshed = h.kube.objects[object_path("Cluster", "limen", "main")]
    assert condition(refreshed, "Ready")["status"] == "True"
    assert refreshed["status"]["caSecret"] == "main-ca"


def test_builder_output_is_plain_yaml() -> None:
    text = yaml.safe_dump_all(children(cluster(), "img", 0, ca_pin=PIN))
    assert list(yaml.safe_load_all(text)) == children(cluster(), "img", 0, ca_pin=PIN)


@pytest.mark.parametrize("kind", ["Secret", "ConfigMap", "Service", "PersistentVolumeClaim",
                                  "Deployment", "Cluster"])
def test_object_paths(kind: str) -> None:
    path = object_path(kind, "ns", "x")
    assert path.endswith("/namespaces/ns/" + path.split("/")[-2] + "/x")
    assert path.startswith("/api/v1/" if kind in {"Secret", "ConfigMap", "Service",
                                                  "PersistentVolumeClaim"} else "/apis/")
