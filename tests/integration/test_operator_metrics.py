"""``limen operator --diag-addr``: the operator (kopf, in a thread, against the Kubernetes API
emulator and a real ``limen start``) serves ``/metrics`` and ``/readyz``; each reconcile counts
in ``limen_operator_reconciles_total{kind, outcome}``: ``ok`` when a Role reaches Limen,
``error`` while Limen's auth is stopped (kopf retries it)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from k8s_emulator.fixtures import KubeAPI
from k8s_emulator.loop_garbage import collect_after_kopf
from limen.operator.main import run as run_operator
from limen.operator.settings import OperatorConfig
from ports import free_port

from .cluster import LimenCluster, wait_for
from .diag_scrape import readyz, scrape, value

NAMESPACE = "team-m"


class Operator:
    """``limen.operator.main.run`` with a diagnostics listener, on its own loop in a thread."""

    def __init__(self, limen: LimenCluster) -> None:
        self.config = OperatorConfig(data_dir=limen.data_dir, resync_seconds=60.0,
                                     retry_seconds=0.5, call_timeout_seconds=2.0,
                                     delete_deadline_seconds=4.0, image="limen:test")
        self.diag = f"127.0.0.1:{free_port()}"
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="operator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(run_operator(self.config, namespaces=(NAMESPACE,), standalone=True,
                                     stop_flag=self.stop_flag,  # type: ignore[arg-type]
                                     ready_flag=self.ready_flag,  # type: ignore[arg-type]
                                     diag_addr=self.diag))
        except BaseException as err:  # reported by stop()
            self.failure = err

    def start(self) -> Operator:
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
        cluster.kill()


@pytest.fixture
def operator(kube_api: KubeAPI, limen: LimenCluster,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Operator]:
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig_path))
    kube_api.create_namespace(NAMESPACE)
    running = Operator(limen).start()
    yield running
    running.stop()


def _role(name: str) -> dict[str, object]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Role",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"allow": {"logins": ["nobody"]}}}


def test_reconciles_are_counted_by_kind_and_outcome(kube_api: KubeAPI, limen: LimenCluster,
                                                    operator: Operator,
                                                    request: pytest.FixtureRequest) -> None:
    assert wait_for(lambda: readyz(operator.diag)[0] == 200 and readyz(operator.diag), 15.0,
                    "the operator's readiness") == (200, "ready\nok kube-api\n")
    client = kube_api.api_client()
    request.addfinalizer(client.close)
    api = kubernetes.client.CustomObjectsApi(client)
    api.create_namespaced_custom_object("limen.dev", "v1alpha1", NAMESPACE, "roles",
                                        _role("observed"))
    wait_for(lambda: value(scrape(operator.diag), "limen_operator_reconciles_total",
                           kind="Role", outcome="ok") >= 1, 20.0, "an ok reconcile")
    limen.stop()  # auth gone: the next reconcile raises and kopf retries it
    api.create_namespaced_custom_object("limen.dev", "v1alpha1", NAMESPACE, "roles",
                                        _role("unreachable"))
    wait_for(lambda: value(scrape(operator.diag), "limen_operator_reconciles_total",
                           kind="Role", outcome="error") >= 1, 20.0, "a failed reconcile")
