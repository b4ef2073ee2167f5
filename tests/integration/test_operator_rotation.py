"""The operator forwards a Cluster CR's phased ``spec.rotation`` to a real auth: kopf running
the operator's registry in a thread against the Kubernetes API emulator, and a real
``limen start --random-ports`` named ``test`` (the auth of the Cluster CR ``limen/test``,
reached through ``--data-dir``), inspected with lmctl.

::

    test ──patch Cluster limen/test spec.rotation──▶ emulator ◀──watch/patch── operator
                                                                │ Cluster document "test"
    test ──lmctl status / get / audit──▶ auth ◀──mTLS apply────┘ (origin kubernetes)
                                          └─ auth's reconciler moves the host CA

One test, in order (one cluster and one operator: a few seconds): init (two host keys, the CR
shows init), update_clients (auth follows), a jump (refused: the CR's condition and status,
and auth's ``ca.rotation`` audit event), the same CA type in ``spec.ca_rotation`` (refused,
nothing forwarded), the requests dropped (the document is gone from auth; the phase stays),
a document of that name applied by an admin (not overwritten).
Waiting is on conditions with deadlines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k8s_emulator.fixtures import KubeAPI

from .cluster import LimenCluster
from .test_operator_e2e import OperatorThread, conditions, config_for, doc, wait_status

NAMESPACE = "limen"
DEADLINE = 30.0
ACTOR = "cluster-document:kubernetes"
"""The user of the ca.rotation events a document the operator applied causes."""


@pytest.fixture
def limen(tmp_path: Path) -> Iterator[LimenCluster]:
    cluster = LimenCluster(tmp_path / "limen").start()  # cluster name "test"
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            cluster.kill()


@pytest.fixture
def operator(kube_api: KubeAPI, limen: LimenCluster,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[OperatorThread]:
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig_path))
    kube_api.create_namespace(NAMESPACE)
    running = OperatorThread(config_for(limen)).start()
    yield running
    running.stop()


def _host(phase: str, rid: str = "host-1") -> dict[str, Any]:
    return {"id": rid, "type": "host", "mode": "manual", "phase": phase}


def _rotation_condition(obj: dict[str, Any]) -> dict[str, Any]:
    return conditions(obj).get("RotationRequest") or {}


def _settled(kube: KubeAPI, name: str, state: str, reason: str,
             phase: str) -> dict[str, Any]:
    """The CR once its status shows the host request in ``state`` for ``phase`` and the
    condition ``reason``, for its current generation."""
    def check(obj: dict[str, Any]) -> bool:
        entry = (obj.get("status", {}).get("rotation") or {}).get("host") or {}
        found = _rotation_condition(obj)
        return (entry.get("state") == state and entry.get("phase") == phase
                and found.get("reason") == reason
                and found.get("observedGeneration") == obj["metadata"]["generation"])
    try:
        return wait_status(kube, "clusters", name, check, namespace=NAMESPACE,
                           timeout=DEADLINE,
                           message=f"Cluster {name}: host request {phase} {state} ({reason})")
    except TimeoutError as err:
        last = (kube.get("clusters", name, NAMESPACE) or {}).get("status")
        raise AssertionError(f"{err}; its status: {json.dumps(last, indent=1)}") from None


def _host_keys(limen: LimenCluster) -> list[str]:
    return list(limen.lmctl_json("auth", "export", "--type", "host")["ssh_public_keys"])


def _document(limen: LimenCluster) -> dict[str, Any] | None:
    result = limen.lmctl("get", "cluster/test", "-o", "json", check=False)
    if result.returncode != 0:
        assert "not found" in (result.stdout + result.stderr).lower(), result.stderr
        return None
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_phased_rotation_declared_on_the_cluster_cr(kube_api: KubeAPI, limen: LimenCluster,
                                                    operator: OperatorThread) -> None:
    kube = kube_api
    assert len(_host_keys(limen)) == 1
    kube.create(doc("Cluster", "test", {"public_address": "limen.example.com:443",
                                        "rotation": [_host("init")]}, namespace=NAMESPACE))

    # init: auth holds the document (only the rotation), the host CA two keys, the CR says so
    obj = _settled(kube, "test", "Reached", "Applied", "init")
    assert obj["status"]["rotation"]["host"]["caPhase"] == "init"
    assert limen.status()["ca_rotation"]["host"]["phase"] == "init"
    assert len(_host_keys(limen)) == 2
    stored = _document(limen)
    assert stored is not None
    assert stored["spec"] == {"public_address": "limen.example.com:443",
                              "rotation": [_host("init")]}
    assert stored["metadata"]["labels"]["limen.dev/origin"] == "kubernetes"
    assert stored["metadata"]["annotations"]["limen.dev/kubernetes-object"] == (
        "clusters/limen/test")
    wait_status(kube, "clusters", "test",
                lambda o: o["status"].get("caPhases", {}).get("host") == "init",
                namespace=NAMESPACE, timeout=DEADLINE, message="caPhases.host init")

    # the next phase: auth follows; re-reconciling the same requests applies nothing
    kube.patch("clusters", "test", {"spec": {"rotation": [_host("update_clients")]}},
               NAMESPACE)
    _settled(kube, "test", "Reached", "Applied", "update_clients")
    assert limen.status()["ca_rotation"]["host"]["phase"] == "update_clients"
    revision = (_document(limen) or {})["metadata"]["resourceVersion"]
    kube.patch("clusters", "test", {"spec": {"proxy": {"replicas": 2}}}, NAMESPACE)
    wait_status(kube, "clusters", "test", lambda o: o["status"].get("observedGeneration")
                == o["metadata"]["generation"], namespace=NAMESPACE, timeout=DEADLINE)
    assert (_document(limen) or {})["metadata"]["resourceVersion"] == revision
    moves = [(e["from"], e["to"], e["via"], e["request_id"], e["user"])
             for e in limen.audit("ca.rotation") if e["success"]]
    assert moves == [("standby", "init", "cluster document", "host-1", ACTOR),
                     ("init", "update_clients", "cluster document", "host-1", ACTOR)]

    # a jump (update_clients straight to rollback is allowed; to standby is not): refused
    kube.patch("clusters", "test", {"spec": {"rotation": [_host("standby")]}}, NAMESPACE)
    obj = _settled(kube, "test", "Refused", "Refused", "standby")
    found = _rotation_condition(obj)
    assert found["status"] == "False"
    assert "the host CA is in phase update_clients" in found["message"]
    assert "update_clients" in obj["status"]["rotation"]["host"]["message"]
    assert limen.status()["ca_rotation"]["host"]["phase"] == "update_clients"
    [refused] = [e for e in limen.audit("ca.rotation") if not e["success"]]
    assert (refused["request_id"], refused["to"], refused["via"], refused["user"]) == (
        "host-1", "standby", "cluster document", ACTOR)
    assert "update_clients" in refused["reason"]
    assert any(e.get("reason") == "RotationRefused" for e in kube.list("events", NAMESPACE)
               if e.get("involvedObject", {}).get("name") == "test")

    # spec.ca_rotation for the same CA type in the same CR: refused, nothing forwarded
    kube.patch("clusters", "test", {"spec": {
        "rotation": [_host("update_servers")],
        "ca_rotation": {"type": "host", "nonce": "n1"}}}, NAMESPACE)
    obj = wait_status(kube, "clusters", "test",
                      lambda o: _rotation_condition(o).get("reason") == "MixedRotation",
                      namespace=NAMESPACE, timeout=DEADLINE, message="MixedRotation")
    assert _rotation_condition(obj)["status"] == "False"
    assert "do not mix" in _rotation_condition(obj)["message"]
    assert (_document(limen) or {})["spec"]["rotation"] == [_host("standby")]
    assert limen.status()["ca_rotation"]["host"]["phase"] == "update_clients"

    # the requests dropped: the document leaves auth; the rotation under way stays where it is
    kube.patch("clusters", "test", {"spec": {"rotation": None, "ca_rotation": None}},
               NAMESPACE)
    obj = wait_status(kube, "clusters", "test",
                      lambda o: _rotation_condition(o).get("reason") == "Removed"
                      and "rotation" not in o["status"],
                      namespace=NAMESPACE, timeout=DEADLINE, message="requests removed")
    assert _document(limen) is None
    assert limen.status()["ca_rotation"]["host"]["phase"] == "update_clients"

    # a Cluster document of that name applied by an admin with lmctl is not the CR's to
    # overwrite: refused, the document left as it is
    mine = {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "test"},
            "spec": {"public_address": "admin.example.com:443"}}
    limen.lmctl("apply", "-f", "-", input=json.dumps(mine))
    kube.patch("clusters", "test", {"spec": {"rotation": [_host("update_servers")]}},
               NAMESPACE)
    obj = wait_status(kube, "clusters", "test",
                      lambda o: _rotation_condition(o).get("reason") == "OwnedElsewhere",
                      namespace=NAMESPACE, timeout=DEADLINE, message="OwnedElsewhere")
    assert "limen.dev/adopt" in _rotation_condition(obj)["message"]
    assert (_document(limen) or {})["spec"] == mine["spec"]
    assert limen.status()["ca_rotation"]["host"]["phase"] == "update_clients"
