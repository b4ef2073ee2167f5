"""A kube agent run apart from auth (``limen start --roles kube --token T --ca-pin P --proxy
WEB``), reached only through its reverse tunnel: it joins with a ``kube`` token, serves the
kube Resource its selector matches (its kubeconfig named by ``kubeconfig_ref`` in the agent's
own secrets directory), audits through auth, and kubectl works through it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import LimenCluster, wait_for
from .kube_env import KubeEnv, start_kube_env

RESOURCE = """
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {name: emu-apart, labels: {env: dev, served-by: apart}}
spec: {kind: kube, kubeconfig_ref: {file: emu.kubeconfig}}
"""


@pytest.fixture(scope="module")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    yield from start_kube_env(tmp_path_factory.mktemp("kubeapart"))


@pytest.fixture
def agent(kube_env: KubeEnv, tmp_path: Path) -> Iterator[LimenCluster]:
    resource = tmp_path / "emu-apart.yaml"
    resource.write_text(RESOURCE)
    kube_env.cluster.lmctl("apply", "-f", resource)
    token = kube_env.cluster.lmctl_json("tokens", "add", "--type", "kube", "--ttl", "5m")
    config = tmp_path / "agent.yaml"
    config.write_text("kube: {resources: [{labels: {served-by: apart}}]}\n")
    process = LimenCluster(tmp_path / "agent", "kubetest", [
        "--roles", "kube", "-c", str(config), "--proxy", kube_env.cluster.web,
        "--token", token["token"], "--ca-pin", token["ca_pin"]])
    secrets = process.data_dir / "secrets"
    secrets.mkdir(parents=True, mode=0o700)
    shutil.copy(kube_env.cluster.data_dir / "secrets" / "emu-ops.kubeconfig",
                secrets / "emu.kubeconfig")
    try:
        yield process.start()
    finally:
        try:
            process.stop()
        finally:
            process.kill()
            kube_env.cluster.lmctl("rm", "resource/emu-apart")


def test_an_agent_apart_serves_kubectl(kube_env: KubeEnv, agent: LimenCluster) -> None:
    alice = kube_env.alice

    def listed() -> bool:
        items = json.loads(alice.lmsh("kube", "ls", "-o", "json").stdout)["items"]
        return "emu-apart" in {c["name"] for c in items}

    wait_for(listed, 30.0, "the agent's heartbeat of emu-apart")
    alice.lmsh("kube", "login", "emu-apart")
    kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "apart", "namespace": "default"}})
    assert "configmap/apart" in alice.kubectl("get", "configmaps", "-o", "name").stdout
    served = kube_env.wait_audit("the request audited", kube_cluster="emu-apart",
                                 verb="list")
    assert not served[-1]["server_id"].endswith("-kube")  # the agent apart, not the cluster's
