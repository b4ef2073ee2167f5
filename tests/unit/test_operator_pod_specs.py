"""Every pod the operator writes (auth with its init container, proxy, db agents) passes Pod
Security "restricted" and has what it needs to run with a read-only root filesystem: a tmp
emptyDir and TMPDIR, a data volume with the data directory made inside it, default resource
requests (the spec's when given), liveness probes on auth and the proxy. The pods running for
real: tests/integration/test_operator_pods_run.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import pytest

from limen.operator.cluster_builders import (
    DATA_DIR,
    DEFAULT_RESOURCES,
    TMP_DIR,
    VOLUME_DIR,
    children,
)
from limen.operator.db_agent import db_children

PIN = "sha256:" + "ab" * 32
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def cluster(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "edge", "namespace": "team-a", "uid": "uid-edge"},
            "spec": {"public_address": "limen.example.com:443", "db": {"replicas": 1},
                     **spec}}


def pods(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod templates by component."""
    objects = [*children(body, "img:1", 0, ca_pin=PIN), *db_children(body, "img:1",
                                                                      ca_pin=PIN)]
    return {o["metadata"]["labels"]["app.kubernetes.io/component"]:
            o["spec"]["template"]["spec"] for o in objects if o["kind"] == "Deployment"}


def containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers") or ()
    yield from pod["containers"]


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What Pod Security "restricted" (v1.30: baseline plus the restricted checks) refuses."""
    found: list[str] = []
    security = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(flag)
    for volume in pod.get("volumes") or ():
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    for container in containers(pod):
        mine = container.get("securityContext") or {}
        name = container["name"]
        if mine.get("privileged"):
            found.append(f"{name}: privileged")
        if mine.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = mine.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or ()):
            found.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or ()) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities")
        if not mine.get("runAsNonRoot", security.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot")
        if mine.get("runAsUser", security.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (mine.get("seccompProfile") or security.get("seccompProfile") or {})
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile RuntimeDefault or Localhost")
        if any(port.get("hostPort") for port in container.get("ports") or ()):
            found.append(f"{name}: hostPort")
    return found


def test_every_pod_passes_pod_security_restricted() -> None:
    found = pods(cluster())
    assert sorted(found) == ["auth", "db", "proxy"]
    for component, pod in found.items():
        assert restricted_violations(pod) == [], component
        assert pod["automountServiceAccountToken"] is False  # none calls Kubernetes


def test_the_checker_finds_what_restricted_refuses() -> None:
    pod = pods(cluster())["proxy"]
    del pod["securityContext"]["seccompProfile"]
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert restricted_violations(pod) == [
        "volume host: ['hostPath']", "proxy: allowPrivilegeEscalation must be false",
        "proxy: seccompProfile RuntimeDefault or Localhost"]


@pytest.mark.parametrize("component", ["auth", "proxy", "db"])
def test_every_container_has_a_writable_tmp_and_a_data_volume(component: str) -> None:
    pod = pods(cluster())[component]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in containers(pod):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts[TMP_DIR]["name"]], container["name"]
        assert {"name": "TMPDIR", "value": TMP_DIR} in container["env"], container["name"]
        # the data directory is made by limen inside the volume, never the volume's root
        assert not mounts[VOLUME_DIR].get("readOnly")
        args = container["args"]
        assert args[args.index("--data-dir") + 1] == DATA_DIR
        assert PurePosixPath(VOLUME_DIR) in PurePosixPath(DATA_DIR).parents
        assert DATA_DIR not in mounts
    kind = "persistentVolumeClaim" if component == "auth" else "emptyDir"
    assert kind in volumes["data"]


def test_default_requests_and_the_spec_resources() -> None:
    found = pods(cluster())
    for component, pod in found.items():
        for container in containers(pod):
            assert container["resources"] == DEFAULT_RESOURCES[component], component
    mine = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    found = pods(cluster(auth={"resources": mine}, proxy={"resources": mine}))
    for component in ("auth", "proxy"):
        assert all(c["resources"] == mine for c in containers(found[component]))
    assert found["db"]["containers"][0]["resources"] == DEFAULT_RESOURCES["db"]


@pytest.mark.parametrize(("component", "port", "ready"), [
    ("auth", 3000, "/readyz?exclude=gitops"), ("proxy", 3001, "/readyz"), ("db", 3002, "/readyz")])
def test_every_pod_is_probed_on_its_diagnostics_listener(component: str, port: int,
                                                         ready: str) -> None:
    [container] = pods(cluster())[component]["containers"]
    assert {"name": "diag", "containerPort": port} in container["ports"]
    assert container["args"][-2:] == ["--diag-addr", f"0.0.0.0:{port}"]
    probe = container["livenessProbe"]
    assert probe["httpGet"] == {"scheme": "HTTP", "port": "diag", "path": "/healthz"}
    assert probe["failureThreshold"] * probe["periodSeconds"] >= 30  # not on one slow answer
    assert container["readinessProbe"]["httpGet"] == {"scheme": "HTTP", "port": "diag",
                                                      "path": ready}
