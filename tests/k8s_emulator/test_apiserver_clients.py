"""Real clients against the Kubernetes API emulator: kubectl, the ``kubernetes`` Python client
and a kopf operator, over HTTPS with the fixture's kubeconfig; and its throughput.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest

from k8s_emulator.fixtures import KubeAPI
from k8s_emulator.loop_garbage import collect_after_kopf

EXAMPLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata:
  name: dev
spec:
  allow:
    logins: [root, admin]
---
apiVersion: limen.dev/v1alpha1
kind: User
metadata:
  name: alice
spec:
  roles: [dev]
"""


def test_kubectl_apply_get_delete(kube_api: KubeAPI, tmp_path: Path) -> None:
    example = tmp_path / "crds-example.yaml"
    example.write_text(EXAMPLE)
    applied = kube_api.kubectl("apply", "--validate=false", "-f", str(example)).stdout
    assert applied.splitlines() == ["role.limen.dev/dev created", "user.limen.dev/alice created"]
    again = kube_api.kubectl("apply", "--validate=false", "-f", str(example)).stdout
    assert again.splitlines() == ["role.limen.dev/dev unchanged", "user.limen.dev/alice unchanged"]
    kube_api.patch(
        "lmrole",
        "dev",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        subresource="status",
    )
    roles = kube_api.kubectl("get", "lmrole").stdout.splitlines()  # the CRD's printer columns
    assert roles[0].split() == ["NAME", "LOGINS", "READY", "AGE"]
    assert roles[1].split()[:4] == ["dev", "[root", "admin]", "True"]
    category = kube_api.kubectl("get", "limen").stdout  # every kind in the "limen" category
    assert "role.limen.dev/dev" in category
    assert "user.limen.dev/alice" in category
    shown = json.loads(kube_api.kubectl("get", "roles.limen.dev", "dev", "-o", "json").stdout)
    assert shown["metadata"]["generation"] == 1
    assert shown["status"]["conditions"][0]["status"] == "True"
    # like a real cluster, kubectl knows the short name "lmrole", not "lmroles"
    unknown = kube_api.kubectl("get", "lmroles", check=False)
    assert unknown.returncode != 0
    assert 'resource type "lmroles"' in unknown.stderr
    deleted = kube_api.kubectl("delete", "-f", str(example)).stdout
    assert deleted.splitlines() == [
        'role.limen.dev "dev" deleted',
        'user.limen.dev "alice" deleted',
    ]
    assert "No resources found" in kube_api.kubectl("get", "limen").stderr


def test_kubernetes_client(kube_api: KubeAPI) -> None:
    client = kube_api.api_client()
    try:
        custom = kubernetes.client.CustomObjectsApi(client)
        args = ("limen.dev", "v1alpha1", "default", "roles")
        body = {
            "apiVersion": "limen.dev/v1alpha1",
            "kind": "Role",
            "metadata": {"name": "ops"},
            "spec": {"allow": {"logins": ["ops"]}},
        }
        created = custom.create_namespaced_custom_object(*args, body)
        assert created["metadata"]["generation"] == 1
        listed = custom.list_namespaced_custom_object(*args)
        assert listed["kind"] == "RoleList"
        assert [i["metadata"]["name"] for i in listed["items"]] == ["ops"]
        status = {
            "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}
        }
        patched = custom.patch_namespaced_custom_object_status(*args, "ops", status)
        assert patched["status"]["observedGeneration"] == 1
        assert patched["metadata"]["generation"] == 1
        custom.delete_namespaced_custom_object(*args, "ops")
        with pytest.raises(kubernetes.client.ApiException) as missing:
            custom.get_namespaced_custom_object(*args, "ops")
        assert missing.value.status == 404

        core = kubernetes.client.CoreV1Api(client)
        secret = kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="ca"), string_data={"tls.crt": "PEM"}
        )
        core.create_namespaced_secret("default", secret)
        assert core.read_namespaced_secret("ca", "default").data == {"tls.crt": "UEVN"}
        assert [s.metadata.name for s in core.list_namespaced_secret("default").items] == ["ca"]
        core.patch_namespaced_secret("ca", "default", {"metadata": {"labels": {"a": "b"}}})
        assert core.read_namespaced_secret("ca", "default").metadata.labels == {"a": "b"}
        assert core.delete_namespaced_secret("ca", "default")["status"] == "Success"
        apps = kubernetes.client.AppsV1Api(client)
        deployment = apps.create_namespaced_deployment(
            "default",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "auth"},
                "spec": {
                    "selector": {"matchLabels": {"app": "auth"}},
                    "template": {
                        "metadata": {"labels": {"app": "auth"}},
                        "spec": {"containers": [{"name": "auth", "image": "limen"}]},
                    },
                },
            },
        )
        assert deployment.metadata.generation == 1
    finally:
        client.close()


def test_kopf_operator_runs_handlers_and_finalizers(
    kube_api: KubeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig_path))
    registry = kopf.OperatorRegistry()
    calls: list[tuple[str, str]] = []

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create("limen.dev", "v1alpha1", "roles", id="created", registry=registry)
    def created(name: str, body: kopf.Body, **_: Any) -> dict[str, bool]:
        calls.append(("create", name))
        kopf.info(body, reason="Accepted", message="the role is accepted")  # a core v1 Event
        return {"accepted": True}  # kopf stores it in status.created through /status

    @kopf.on.delete("limen.dev", "v1alpha1", "roles", id="deleted", registry=registry)
    def deleted(name: str, **_: Any) -> None:  # a deletion handler makes kopf add a finalizer
        calls.append(("delete", name))

    stop, ready, failures = threading.Event(), threading.Event(), []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    standalone=True,
                    clusterwide=True,
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
        except BaseException as e:  # reported by the test below
            failures.append(e)

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "kopf did not start"
        kube_api.create(
            {
                "apiVersion": "limen.dev/v1alpha1",
                "kind": "Role",
                "metadata": {"name": "dev"},
                "spec": {},
            }
        )
        handled = kube_api.wait_for(
            lambda: (r := kube_api.get("lmrole", "dev")) and "created" in r.get("status", {}) and r,
            timeout=20,
            message="kopf's create handler",
        )
        assert handled["status"]["created"] == {"accepted": True}
        assert handled["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        assert kube_api.delete("lmrole", "dev") is False  # kopf's finalizer holds it
        kube_api.wait_for(
            lambda: kube_api.get("lmrole", "dev") is None,
            timeout=20,
            message="the deletion to complete",
        )
        assert calls == [("create", "dev"), ("delete", "dev")]
        events = kube_api.wait_for(
            lambda: kube_api.list("events", "default"), timeout=20, message="kopf's events"
        )
        assert events[0]["involvedObject"]["name"] == "dev"
        assert events[0]["reason"] == "Accepted"
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert failures == []
    assert collect_after_kopf() == []


def test_500_objects_created_and_listed_quickly(kube_api: KubeAPI) -> None:
    context = ssl.create_default_context(cafile=str(kube_api.ca_file))
    connection = http.client.HTTPSConnection(
        kube_api.url.removeprefix("https://"), context=context, timeout=10
    )
    path = "/apis/limen.dev/v1alpha1/namespaces/default/users"
    started, cpu_started = time.monotonic(), time.process_time()
    try:
        for i in range(500):
            body = {
                "apiVersion": "limen.dev/v1alpha1",
                "kind": "User",
                "metadata": {"name": f"user-{i:03}"},
                "spec": {"roles": ["dev"]},
            }
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 201
        connection.request("GET", path)
        listed = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu_started
    assert [i["metadata"]["name"] for i in listed["items"]] == [f"user-{i:03}" for i in range(500)]
    # CPU time of this process (client and emulator), so a loaded machine does not fail it;
    # re-scanning the request log on every request (kmock's default) took minutes here.
    assert cpu < 10, f"500 creates and a list took {cpu:.1f} s of CPU ({elapsed:.1f} s)"
