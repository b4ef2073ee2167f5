"""The operator end to end: kopf running the operator's registry in a thread, against the
Kubernetes API emulator (``kube_api``: Limen's CRDs, HTTPS, kubeconfig, real kubectl) and a
real ``limen start --random-ports`` (the auth the operator pushes to, inspected with lmctl).

::

    test ──kubernetes client / kubectl apply──▶ kube_api (emulator) ◀──watch/patch── operator
                                                                        │ (thread, kopf)
    test ──lmctl get ... -o json──▶ limen start (auth) ◀──mTLS, origin kubernetes──┘

Waiting is always on a condition with a deadline (``kube_api.wait_for`` / ``wait_for``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from k8s_emulator.fixtures import KubeAPI
from k8s_emulator.loop_garbage import collect_after_kopf
from limen.operator.context import OperatorContext
from limen.operator.main import build_context
from limen.operator.main import run as run_operator
from limen.operator.settings import OperatorConfig

from .cluster import CommandFailed, LimenCluster, clean_env, command, run, wait_for

GROUP, VERSION = "limen.dev", "v1alpha1"
NAMESPACE = "team-a"


class OperatorThread:
    """``limen.operator.main.run`` on its own event loop in a thread (what ``limen operator``
    runs), so the synchronous test and fixtures never block it."""

    def __init__(self, config: OperatorConfig, namespaces: tuple[str, ...] = ()) -> None:
        self.config = config
        self.namespaces = namespaces
        self.ctx: OperatorContext = build_context(config)
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="operator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(run_operator(self.config, ctx=self.ctx, namespaces=self.namespaces,
                                     standalone=True,
                                     stop_flag=self.stop_flag,  # type: ignore[arg-type]
                                     ready_flag=self.ready_flag))  # type: ignore[arg-type]
        except BaseException as err:  # reported by stop()
            self.failure = err

    def start(self) -> OperatorThread:
        self.thread.start()
        wait_for(lambda: self.ready_flag.is_set() or self.failure, 30, "the operator to start")
        assert self.failure is None, self.failure
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the operator did not stop"
        assert self.failure is None, self.failure
        assert collect_after_kopf() == []


@pytest.fixture
def limen(tmp_path: Path) -> Iterator[LimenCluster]:
    cluster = LimenCluster(tmp_path / "limen").start()
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            cluster.kill()


@pytest.fixture
def kube(kube_api: KubeAPI, monkeypatch: pytest.MonkeyPatch) -> KubeAPI:
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig_path))
    kube_api.create_namespace(NAMESPACE)
    kube_api.create_namespace("team-b")
    return kube_api


def config_for(limen: LimenCluster, **changes: Any) -> OperatorConfig:
    values: dict[str, Any] = {"data_dir": limen.data_dir, "resync_seconds": 1.0,
                              "retry_seconds": 0.5, "call_timeout_seconds": 3.0,
                              "delete_deadline_seconds": 4.0, "image": "limen:test"}
    values.update(changes)
    return OperatorConfig(**values)


@pytest.fixture
def operator(kube: KubeAPI, limen: LimenCluster) -> Iterator[OperatorThread]:
    running = OperatorThread(config_for(limen)).start()
    yield running
    running.stop()


# -- helpers -----------------------------------------------------------------------------------


def doc(kind: str, name: str, spec: dict[str, Any], namespace: str = NAMESPACE,
        **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
            "metadata": {"name": name, "namespace": namespace, **metadata}, "spec": spec}


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def wait_status(kube: KubeAPI, resource: str, name: str, check: Callable[[dict[str, Any]], bool],
                namespace: str = NAMESPACE, timeout: float = 20.0,
                message: str = "") -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = kube.get(resource, name, namespace)
        return obj if obj is not None and check(obj) else None

    found: dict[str, Any] = kube.wait_for(probe, timeout, message or f"{resource}/{name} status")
    return found


def ready(obj: dict[str, Any]) -> bool:
    found = conditions(obj)
    return (found.get("Ready", {}).get("status") == "True"
            and obj["status"].get("observedGeneration") == obj["metadata"]["generation"])


def in_limen(limen: LimenCluster, kind: str, name: str) -> dict[str, Any] | None:
    result = limen.lmctl("get", f"{kind}/{name}", "-o", "json", check=False)
    if result.returncode != 0:
        if "not found" in (result.stderr + result.stdout).lower():
            return None
        raise CommandFailed(result.stderr)
    data = json.loads(result.stdout)
    items: list[dict[str, Any]] = data.get("items", [data]) if isinstance(data, dict) else data
    return items[0] if items else None


def events_for(kube: KubeAPI, name: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    return [e for e in kube.list("events", namespace)
            if e.get("involvedObject", {}).get("name") == name]


# -- the Limen kinds ---------------------------------------------------------------------------


KINDS: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
    ("User", "users", "alice", {"name": "alice@example.com", "roles": ["dev"],
                                "traits": {"logins": ["alice"]}},
     {"roles": ["dev", "auditor"]}),
    ("Role", "roles", "dev", {"allow": {"logins": ["ubuntu"]}},
     {"allow": {"logins": ["ubuntu", "admin"]}}),
    ("TrustedCluster", "trustedclusters", "org-a",
     {"enabled": False, "proxy_address": "root.example:3080",
      "token_secret_ref": {"file": "org-a.token"}},
     {"enabled": False, "proxy_address": "root2.example:3080",
      "token_secret_ref": {"file": "org-a.token"}}),
    ("Resource", "resources", "web1", {"kind": "ssh", "address": "10.0.0.5:22"},
     {"kind": "ssh", "address": "10.0.0.6:22"}),
    ("Lock", "locks", "bob-out", {"target": {"user": "bob"}, "message": "INC-1"},
     {"target": {"user": "bob", "node": "web1"}, "message": "INC-1",
      "expires": "2030-01-01T00:00:00Z"}),
    ("OIDCConnector", "oidcconnectors", "corp",
     {"issuer_url": "https://idp.example.com", "client_id": "limen",
      "client_secret_ref": {"env": "LIMEN_SECRET_CORP"},
      "claims_to_roles": [{"claim": "groups", "value": "ops", "roles": ["access"]}]},
     {"issuer_url": "https://idp.example.com", "client_id": "limen",
      "client_secret_ref": {"env": "LIMEN_SECRET_CORP"},
      "claims_to_roles": [{"claim": "groups", "value": "ops*", "roles": ["editor"]}]}),
    ("GitHubConnector", "githubconnectors", "gh",
     {"client_id": "Iv1.limen", "client_secret_ref": {"env": "LIMEN_SECRET_GH"},
      "teams_to_roles": [{"organization": "acme", "team": "ops", "roles": ["access"]}]},
     {"client_id": "Iv1.limen", "client_secret_ref": {"env": "LIMEN_SECRET_GH"},
      "endpoint_url": "https://ghe.example.com",
      "api_endpoint_url": "https://ghe.example.com/api/v3",
      "teams_to_roles": [{"organization": "acme", "team": "*", "roles": ["editor"]}]}),
]


def limen_name(kind: str, name: str, spec: dict[str, Any]) -> str:
    return str(spec.get("name") or f"{NAMESPACE}.{name}")


@pytest.mark.parametrize(("kind", "plural", "name", "spec", "changed"), KINDS,
                         ids=[k[0] for k in KINDS])
def test_each_kind_through_the_kubernetes_client(
        kube: KubeAPI, limen: LimenCluster, operator: OperatorThread, kind: str, plural: str,
        name: str, spec: dict[str, Any], changed: dict[str, Any],
        request: pytest.FixtureRequest) -> None:
    client = kube.api_client()
    request.addfinalizer(client.close)
    api = kubernetes.client.CustomObjectsApi(client)
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural,
                                        doc(kind, name, spec, labels={"env": "dev"}))
    target = limen_name(kind, name, spec)
    obj = wait_status(kube, plural, name, ready)
    assert obj["status"]["limenName"] == target
    assert "limen.dev/finalizer" in obj["metadata"]["finalizers"]
    found = conditions(obj)
    assert {t: c["status"] for t, c in found.items()} == {
        "Ready": "True", "Reconciling": "False", "Stalled": "False", "Valid": "True",
        "Owned": "True"}
    for item in found.values():
        assert set(item) == {"type", "status", "observedGeneration", "lastTransitionTime",
                             "reason", "message"}
    stored = in_limen(limen, kind, target)
    assert stored is not None
    assert stored["metadata"]["labels"]["limen.dev/origin"] == "kubernetes"
    assert stored["metadata"]["labels"]["env"] == "dev"
    assert stored["metadata"]["annotations"]["limen.dev/kubernetes-object"] == (
        f"{plural}/{NAMESPACE}/{name}")
    assert {k: v for k, v in stored["spec"].items() if k != "name"} == {
        k: v for k, v in spec.items() if k != "name"}
    assert obj["spec"] == spec  # the operator never writes spec

    # update: the change reaches Limen; generation 2 observed
    new_spec = {**changed, **({"name": spec["name"]} if "name" in spec else {})}
    api.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name,
                                       {"spec": new_spec})
    obj = wait_status(kube, plural, name, lambda o: ready(o) and o["metadata"]["generation"] == 2)
    assert conditions(obj)["Ready"]["observedGeneration"] == 2
    assert new_spec.items() <= obj["spec"].items()  # a merge patch: other fields stay
    assert (in_limen(limen, kind, target) or {}).get("spec") == obj["spec"]

    # delete: gone from Limen, then from Kubernetes (the finalizer let go)
    api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)
    kube.wait_for(lambda: kube.get(plural, name, NAMESPACE) is None, 20,
                  f"{plural}/{name} to be deleted")
    assert in_limen(limen, kind, target) is None


def test_kubectl_apply_create_update_delete(kube: KubeAPI, limen: LimenCluster,
                                            operator: OperatorThread, tmp_path: Path) -> None:
    """Every kind in one multi-document manifest: kubectl apply, apply a change, delete -f."""
    manifest = tmp_path / "access.yaml"
    docs = [doc(kind, name, spec) for kind, _plural, name, spec, _changed in KINDS]
    manifest.write_text(yaml.safe_dump_all(docs))
    kube.kubectl("apply", "--validate=false", "-f", str(manifest))
    for kind, plural, name, spec, _changed in KINDS:
        wait_status(kube, plural, name, ready)
        stored = in_limen(limen, kind, limen_name(kind, name, spec))
        assert stored is not None
        assert stored["metadata"]["labels"]["limen.dev/origin"] == "kubernetes"
    changed = [doc(kind, name, {**new, **({"name": spec["name"]} if "name" in spec else {})})
               for kind, _plural, name, spec, new in KINDS]
    manifest.write_text(yaml.safe_dump_all(changed))
    kube.kubectl("apply", "--validate=false", "-f", str(manifest))
    for (kind, plural, name, spec, _new), want in zip(KINDS, changed, strict=True):
        obj = wait_status(kube, plural, name,
                          lambda o: ready(o) and o["metadata"]["generation"] == 2)
        assert obj["spec"] == want["spec"]  # kubectl apply replaces what it manages
        assert (in_limen(limen, kind, limen_name(kind, name, spec)) or {}).get(
            "spec") == want["spec"]
    printed = kube.kubectl("get", "lmrole", "-n", NAMESPACE).stdout
    assert "dev" in printed
    assert "True" in printed  # the Ready printer column
    kube.kubectl("delete", "-f", str(manifest), "--wait=false")
    for kind, plural, name, spec, _new in KINDS:
        kube.wait_for(lambda p=plural, n=name: kube.get(p, n, NAMESPACE) is None, 30,
                      f"{plural}/{name} deleted")
        assert in_limen(limen, kind, limen_name(kind, name, spec)) is None


def test_invalid_object_is_stalled_and_never_reaches_limen(
        kube: KubeAPI, limen: LimenCluster, operator: OperatorThread) -> None:
    kube.create(doc("Role", "bad", {"allow": {"node_labels": {"env": "^prod"}}}))
    obj = wait_status(kube, "roles", "bad",
                      lambda o: conditions(o).get("Stalled", {}).get("status") == "True")
    found = conditions(obj)
    assert (found["Valid"]["status"], found["Valid"]["reason"]) == ("False", "Invalid")
    assert found["Valid"]["message"].startswith("spec.allow.node_labels.env: '^prod'")
    assert (found["Ready"]["status"], found["Reconciling"]["status"]) == ("False", "False")
    assert in_limen(limen, "role", f"{NAMESPACE}.bad") is None
    warning = kube.wait_for(lambda: [e for e in events_for(kube, "bad")
                                     if e.get("type") == "Warning"], 20, "a Warning event")
    assert warning[0]["reason"] == "Invalid"
    assert warning[0].get("reportingComponent") == "limen-operator"
    # fixing the object makes it Ready; lastTransitionTime of Valid moves, Owned's appears
    kube.patch("roles", "bad", {"spec": {"allow": {"node_labels": {"env": "^prod$"}}}},
               NAMESPACE)
    obj = wait_status(kube, "roles", "bad", ready)
    assert conditions(obj)["Valid"]["status"] == "True"
    assert in_limen(limen, "role", f"{NAMESPACE}.bad") is not None


def test_objects_not_owned_are_not_touched(kube: KubeAPI, limen: LimenCluster,
                                           operator: OperatorThread, tmp_path: Path) -> None:
    # 1. another operator's object: no finalizer, no status, nothing in Limen
    kube.create(doc("Role", "theirs", {"allow": {"logins": ["x"]}},
                    labels={"limen.dev/operator-id": "blue"}))
    # 2. a Limen object created with lmctl (origin api), declared again in Kubernetes
    (tmp_path / "ops.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "ops"},
         "spec": {"allow": {"logins": ["root"]}}}))
    limen.lmctl("apply", "-f", str(tmp_path / "ops.yaml"))
    kube.create(doc("Role", "ops", {"name": "ops", "allow": {"logins": ["ubuntu"]}}))
    obj = wait_status(kube, "roles", "ops",
                      lambda o: conditions(o).get("Owned", {}).get("status") == "False")
    owned = conditions(obj)["Owned"]
    assert owned["reason"] == "OwnedElsewhere"
    assert "limen.dev/adopt: kubernetes" in owned["message"]
    assert conditions(obj)["Stalled"]["status"] == "True"
    stored = in_limen(limen, "role", "ops")
    assert stored is not None
    assert stored["metadata"]["labels"]["limen.dev/origin"] == "api"
    assert stored["spec"]["allow"]["logins"] == ["root"]
    # the blue object was never looked at (checked after ops: the operator is running)
    theirs = kube.get("roles", "theirs", NAMESPACE)
    assert theirs is not None
    assert "status" not in theirs
    assert not theirs["metadata"].get("finalizers")
    assert in_limen(limen, "role", f"{NAMESPACE}.theirs") is None
    # 3. the adopt annotation hands the Limen object over
    kube.patch("roles", "ops", {"metadata": {"annotations": {"limen.dev/adopt": "kubernetes"}}},
               NAMESPACE)
    obj = wait_status(kube, "roles", "ops", lambda o: ready(o) and conditions(o)[
        "Owned"]["status"] == "True")
    assert conditions(obj)["Owned"]["reason"] in {"Adopted", "Owned"}
    stored = in_limen(limen, "role", "ops")
    assert stored is not None
    assert stored["metadata"]["labels"]["limen.dev/origin"] == "kubernetes"
    assert stored["spec"]["allow"]["logins"] == ["ubuntu"]


def test_status_only_change_does_not_reconcile(kube: KubeAPI, limen: LimenCluster,
                                               kube_api: KubeAPI) -> None:
    # a long resync, so that only watch events can cause reconciles here
    running = OperatorThread(config_for(limen, resync_seconds=3600)).start()
    try:
        created = kube.create(doc("Role", "quiet", {"allow": {"logins": ["a"]}}))
        uid = created["metadata"]["uid"]
        wait_status(kube, "roles", "quiet", ready)
        assert running.ctx.reconciles[uid] == 1
        kube.patch("roles", "quiet", {"status": {"note": "written by someone else"}},
                   NAMESPACE, subresource="status")
        kube.patch("roles", "quiet", {"metadata": {"annotations": {"team": "a"}}}, NAMESPACE)
        # a spec change after them: events of one object are handled in order, so when it is
        # observed the status and annotation changes were handled (and did not reconcile)
        kube.patch("roles", "quiet", {"spec": {"allow": {"logins": ["b"]}}}, NAMESPACE)
        obj = wait_status(kube, "roles", "quiet",
                          lambda o: ready(o) and o["metadata"]["generation"] == 2)
        assert running.ctx.reconciles[uid] == 2
        assert obj["status"]["note"] == "written by someone else"  # other fields are kept
    finally:
        running.stop()


def test_drift_inside_limen_is_corrected_on_resync(kube: KubeAPI, limen: LimenCluster,
                                                   operator: OperatorThread) -> None:
    kube.create(doc("Role", "dev", {"name": "dev", "allow": {"logins": ["ubuntu"]}}))
    obj = wait_status(kube, "roles", "dev", ready)
    since = conditions(obj)["Ready"]["lastTransitionTime"]
    # an administrator edits the role inside Limen (the auth API, origin kubernetes)
    stored = in_limen(limen, "role", "dev")
    assert stored is not None
    stored["spec"]["allow"]["logins"] = ["root"]
    stored["metadata"].pop("resourceVersion", None)
    asyncio.run(_apply_as_admin(limen, stored))
    obj = wait_status(kube, "roles", "dev",
                      lambda o: conditions(o)["Ready"]["reason"] == "DriftCorrected")
    ready_condition = conditions(obj)["Ready"]
    assert ready_condition["status"] == "True"
    assert ready_condition["lastTransitionTime"] == since
    assert "spec.allow.logins" in ready_condition["message"]
    assert in_limen(limen, "role", "dev")["spec"]["allow"]["logins"] == [  # type: ignore[index]
        "ubuntu"]
    kube.wait_for(lambda: any(e["reason"] == "DriftCorrected" for e in events_for(kube, "dev")),
                  20, "the DriftCorrected event")


def test_lmctl_cannot_edit_an_operator_object_until_handed_over_and_back(
        kube: KubeAPI, limen: LimenCluster, operator: OperatorThread, tmp_path: Path) -> None:
    """lmctl and the operator never fight: a plain ``lmctl apply`` of a changed version is
    refused; with ``limen.dev/adopt: api`` it takes the role over (the operator reports
    ``TakenOver`` and leaves lmctl's version alone); applied again without the annotation it
    hands the role back, and the resync restores the CR's spec as drift."""
    created = kube.create(doc("Role", "ops", {"name": "ops", "allow": {"logins": ["ubuntu"]}}))
    uid = created["metadata"]["uid"]
    wait_status(kube, "roles", "ops", ready)
    stored = in_limen(limen, "role", "ops")
    assert stored is not None
    edited = {"apiVersion": stored["apiVersion"], "kind": "Role",
              "metadata": {"name": "ops", "annotations": stored["metadata"]["annotations"]},
              "spec": {**stored["spec"], "allow": {"logins": ["root"]}}}
    path = tmp_path / "ops.yaml"

    # 1. a plain lmctl apply of a changed version is refused: the role is the operator's
    path.write_text(yaml.safe_dump(edited))
    refused = limen.lmctl("apply", "-f", path, check=False)
    assert refused.returncode != 0
    assert "limen.dev/adopt: api" in refused.stderr + refused.stdout
    assert (in_limen(limen, "role", "ops") or {})["spec"]["allow"]["logins"] == ["ubuntu"]

    # 2. handed over to lmctl: reported as TakenOver, and lmctl's version stays
    edited["metadata"]["annotations"] = {**edited["metadata"]["annotations"],
                                         "limen.dev/adopt": "api"}
    path.write_text(yaml.safe_dump(edited))
    limen.lmctl("apply", "-f", path)
    obj = wait_status(kube, "roles", "ops",
                      lambda o: conditions(o).get("Owned", {}).get("reason") == "TakenOver")
    found = conditions(obj)
    assert {t: found[t]["status"] for t in ("Ready", "Stalled", "Owned")} == {
        "Ready": "False", "Stalled": "True", "Owned": "False"}
    seen = operator.ctx.reconciles[uid]
    kube.wait_for(lambda: operator.ctx.reconciles[uid] >= seen + 2, 20, "two more resyncs")
    taken = in_limen(limen, "role", "ops")
    assert taken is not None
    assert taken["metadata"]["labels"]["limen.dev/origin"] == "api"
    assert taken["spec"]["allow"]["logins"] == ["root"]
    kube.wait_for(lambda: any(e["reason"] == "TakenOver" for e in events_for(kube, "ops")),
                  20, "the TakenOver Warning event")

    # 3. handed back (the annotation removed inside Limen, another edit made meanwhile): the
    # resync restores the CR's spec and reports the drift it corrected
    edited["metadata"]["annotations"].pop("limen.dev/adopt")
    edited["spec"]["allow"]["logins"] = ["admin"]
    path.write_text(yaml.safe_dump(edited))
    limen.lmctl("apply", "-f", path)
    obj = wait_status(kube, "roles", "ops", ready)
    found = conditions(obj)
    assert (found["Ready"]["reason"], found["Owned"]["reason"]) == ("DriftCorrected", "Adopted")
    assert "spec.allow.logins" in found["Ready"]["message"]
    assert found["Stalled"]["status"] == "False"
    back = in_limen(limen, "role", "ops")
    assert back is not None
    assert back["metadata"]["labels"]["limen.dev/origin"] == "kubernetes"
    assert back["spec"]["allow"]["logins"] == ["ubuntu"]

    # 4. the CR's deletion deletes the role it owns again
    kube.delete("roles", "ops", NAMESPACE)
    kube.wait_for(lambda: kube.get("roles", "ops", NAMESPACE) is None, 20, "roles/ops deleted")
    assert in_limen(limen, "role", "ops") is None


async def _apply_as_admin(limen: LimenCluster, document: dict[str, Any]) -> None:
    from limen.auth.client import AuthClient
    from limen.ca.host_credentials import HostCredentials

    async with AuthClient(limen.auth, HostCredentials.load(limen.data_dir / "admin")) as client:
        await client.apply([document], origin="kubernetes")


def test_auth_down_then_back(kube: KubeAPI, limen: LimenCluster,
                             operator: OperatorThread) -> None:
    kube.create(doc("Role", "first", {"allow": {"logins": ["a"]}}))
    wait_status(kube, "roles", "first", ready)
    limen.stop()
    kube.create(doc("Role", "second", {"allow": {"logins": ["b"]}}))
    obj = wait_status(kube, "roles", "second", lambda o: conditions(o).get(
        "Ready", {}).get("reason") == "AuthUnreachable", timeout=30)
    found = conditions(obj)
    assert {t: found[t]["status"] for t in ("Ready", "Reconciling", "Stalled")} == {
        "Ready": "False", "Reconciling": "True", "Stalled": "False"}
    # the resync of an applied object notices too
    first = wait_status(kube, "roles", "first", lambda o: conditions(o)["Ready"][
        "reason"] == "AuthUnreachable", timeout=30)
    assert conditions(first)["Owned"]["status"] == "True"  # kept from before
    # the same data directory again (a new port: the operator follows listeners.json)
    limen.process = None
    limen.returncode = None
    limen.start()
    for name in ("first", "second"):
        wait_status(kube, "roles", name, ready, timeout=60)
    assert in_limen(limen, "role", f"{NAMESPACE}.second") is not None


def test_deletion_with_auth_down_completes_after_the_deadline(
        kube: KubeAPI, limen: LimenCluster, operator: OperatorThread) -> None:
    kube.create(doc("Role", "gone", {"allow": {"logins": ["a"]}}))
    kube.create(doc("Role", "forced", {"allow": {"logins": ["a"]}}))
    wait_status(kube, "roles", "gone", ready)
    wait_status(kube, "roles", "forced", ready)
    limen.stop()
    assert kube.delete("roles", "gone", NAMESPACE) is False  # the finalizer holds it
    kube.patch("roles", "forced", {"metadata": {"annotations": {
        "limen.dev/force-delete": "true"}}}, NAMESPACE)
    assert kube.delete("roles", "forced", NAMESPACE) is False
    kube.wait_for(lambda: kube.get("roles", "forced", NAMESPACE) is None, 30,
                  "the forced deletion")
    kube.wait_for(lambda: kube.get("roles", "gone", NAMESPACE) is None, 60,
                  "the deletion after the 4 s deadline")
    def warnings() -> set[str]:
        return {e["reason"] for name in ("gone", "forced") for e in events_for(kube, name)
                if e.get("type") == "Warning"}

    # kopf posts Events in the background: they may land just after the object is gone
    kube.wait_for(lambda: {"ForceDeleted", "DeadlinePassed"} <= warnings(), 20,
                  "the ForceDeleted and DeadlinePassed Warning events")


def test_a_deletion_during_a_resync_is_not_held_back(
        kube: KubeAPI, limen: LimenCluster, operator: OperatorThread) -> None:
    """A CR deleted while its resync timer waits on auth goes within seconds. kopf releases
    the finalizer only once the timer has ended, and by default looks again only after a
    minute when the timer did not end within ten loop cycles."""
    kube.create(doc("Role", "busy", {"allow": {"logins": ["a"]}}))
    wait_status(kube, "roles", "busy", ready)
    assert limen.process is not None
    limen.process.send_signal(signal.SIGSTOP)  # auth accepts nothing, answers nothing
    try:
        before = operator.ctx.auth.calls if operator.ctx.auth else 0
        wait_for(lambda: operator.ctx.auth is not None and operator.ctx.auth.calls > before, 10,
                 "the resync timer to call auth")
        assert kube.delete("roles", "busy", NAMESPACE) is False  # the finalizer holds it
    finally:
        limen.process.send_signal(signal.SIGCONT)
    kube.wait_for(lambda: kube.get("roles", "busy", NAMESPACE) is None, 15,
                  "the deletion (not a minute later)")
    assert in_limen(limen, "role", f"{NAMESPACE}.busy") is None


# -- Cluster -----------------------------------------------------------------------------------


CHILDREN = [("secrets", "main-ca"), ("secrets", "main-proxy-token"),
            ("configmaps", "main-config"), ("persistentvolumeclaims", "main-auth-data"),
            ("deployments", "main-auth"),
            ("services", "main-auth"), ("deployments", "main-proxy"),
            ("services", "main-proxy")]


@pytest.fixture
def cluster_operator(kube: KubeAPI) -> Iterator[OperatorThread]:
    """An operator with no auth API: Clusters need none."""
    running = OperatorThread(OperatorConfig(resync_seconds=2.0, retry_seconds=0.5,
                                            image="limen:test")).start()
    yield running
    running.stop()


def test_cluster_owns_its_children(kube: KubeAPI, cluster_operator: OperatorThread) -> None:
    kube.create_namespace("limen")
    created = kube.create(doc("Cluster", "main", {
        "public_address": "limen.example.com:443",
        "proxy": {"replicas": 2, "service_type": "LoadBalancer"}}, namespace="limen"))
    uid = created["metadata"]["uid"]
    wait_status(kube, "clusters", "main", lambda o: o.get("status", {}).get("caSecret"),
                namespace="limen", timeout=30)
    for resource, name in CHILDREN:
        child = kube.get(resource, name, "limen")
        assert child is not None, (resource, name)
        [owner] = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "Cluster", "main", uid, True)
        assert child["metadata"]["labels"]["app.kubernetes.io/instance"] == "main"
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "limen-operator"
    assert kube.get("services", "main-proxy", "limen")["spec"]["type"] == "LoadBalancer"  # type: ignore[index]
    ca_data = kube.get("secrets", "main-ca", "limen")["data"]  # type: ignore[index]
    token_data = kube.get("secrets", "main-proxy-token", "limen")["data"]  # type: ignore[index]
    obj = kube.get("clusters", "main", "limen")
    assert conditions(obj)["Ready"]["reason"] == "Progressing"

    # a spec change patches the Deployment; the two Secrets stay as they were
    kube.patch("clusters", "main", {"spec": {"proxy": {"replicas": 3}}}, "limen")
    kube.wait_for(lambda: kube.get("deployments", "main-proxy", "limen")["spec"][  # type: ignore[index]
        "replicas"] == 3, 30, "the proxy Deployment to have 3 replicas")
    assert kube.get("secrets", "main-ca", "limen")["data"] == ca_data  # type: ignore[index]
    assert kube.get("secrets", "main-proxy-token", "limen")[  # type: ignore[index]
        "data"] == token_data

    # the pods become ready (what the kubelet and the Deployment controller would report)
    for name, replicas in (("main-auth", 1), ("main-proxy", 3)):
        deployment = kube.get("deployments", name, "limen")
        assert deployment is not None
        kube.patch("deployments", name, {"status": {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
            "availableReplicas": replicas}}, "limen", subresource="status")
    obj = wait_status(kube, "clusters", "main", ready, namespace="limen", timeout=30)
    assert obj["status"]["proxy"] == {"ready": 3, "replicas": 3}
    assert obj["status"]["publicAddress"] == "limen.example.com:443"

    # deleting the Cluster leaves nothing behind (ownerReference garbage collection)
    kube.delete("clusters", "main", "limen")
    kube.wait_for(lambda: kube.get("clusters", "main", "limen") is None, 30, "Cluster deleted")
    kube.wait_for(lambda: all(kube.get(r, n, "limen") is None for r, n in CHILDREN), 30,
                  "the children to be garbage-collected")


# -- the command and the operator's own identity ------------------------------------------------


def test_limen_operator_command_with_its_own_identity(kube: KubeAPI, limen: LimenCluster,
                                                      tmp_path: Path) -> None:
    identity = tmp_path / "identity"
    made = run([command("limen"), "operator", "identity", "--data-dir", limen.data_dir,
                "--out", identity, "--ttl", "24h"], env=limen.env)
    assert "limen-operator-identity" in made.stdout
    env = clean_env(KUBECONFIG=kube.kubeconfig_path, LIMEN_OPERATOR_RESYNC="5s")
    with (tmp_path / "operator.log").open("wb") as log:
        process = subprocess.Popen(
            [command("limen"), "operator", "--auth", limen.auth, "--identity", str(identity),
             "--standalone", "--namespace", NAMESPACE],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        kube.create(doc("Role", "cli", {"allow": {"logins": ["a"]}}))
        kube.create(doc("Role", "elsewhere", {"allow": {"logins": ["a"]}}, namespace="team-b"))
        wait_status(kube, "roles", "cli", ready, timeout=60)
        created = [e for e in limen.audit("role.created") if e.get("name") == f"{NAMESPACE}.cli"]
        assert created
        assert created[0]["user"] == "limen-operator"
        assert created[0].get("origin") == "kubernetes"
        # --namespace: the object in team-b is not watched
        assert "status" not in (kube.get("roles", "elsewhere", "team-b") or {})
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0, (tmp_path / "operator.log").read_text()


def test_two_operators_own_disjoint_sets(kube: KubeAPI, limen: LimenCluster,
                                         operator: OperatorThread) -> None:
    blue = OperatorThread(config_for(limen, operator_id="blue")).start()
    try:
        mine = kube.create(doc("Role", "plain", {"allow": {"logins": ["a"]}}))
        theirs = kube.create(doc("Role", "blue", {"allow": {"logins": ["b"]}},
                                 labels={"limen.dev/operator-id": "blue"}))
        for name in ("plain", "blue"):
            wait_status(kube, "roles", name, ready)
        assert set(operator.ctx.reconciles) >= {mine["metadata"]["uid"]}
        assert theirs["metadata"]["uid"] not in operator.ctx.reconciles
        assert set(blue.ctx.reconciles) == {theirs["metadata"]["uid"]}
        stored = in_limen(limen, "role", f"{NAMESPACE}.blue")
        assert stored is not None
        assert stored["metadata"]["labels"]["limen.dev/operator-id"] == "blue"
    finally:
        blue.stop()
