"""Kubernetes through Limen with the real kubectl (issue #15), against a single-node
``limen start --roles auth,proxy,node,kube`` and the project's Kubernetes API emulator
(``kube_env``): ``lmsh kube ls``, ``lmsh kube login`` (the kubeconfig entry with the exec
plugin), ``kubectl get``, ``get -w`` receiving a change, ``apply``, switching contexts between
two kube clusters, ``lmsh kube logout``; each request audited as ``kube.request``.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .cluster import describe
from .kube_env import KubeEnv, start_kube_env


@pytest.fixture(scope="module")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    yield from start_kube_env(tmp_path_factory.mktemp("kube"))


def test_ls_shows_the_clusters_the_roles_admit(kube_env: KubeEnv) -> None:
    listed = json.loads(kube_env.alice.lmsh("kube", "ls", "-o", "json").stdout)["items"]
    assert [(c["name"], c["kubernetes_groups"]) for c in listed] == [("emu", ["developers"])]
    text = kube_env.olga.lmsh("kube", "ls").stdout
    assert "emu-ops" in text and "operators" in text


def test_kubectl_get_and_apply_through_limen(kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    config = yaml.safe_load(alice.kubeconfig.read_text())
    assert config["current-context"] == "kubetest-emu"
    kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "seen", "namespace": "default"},
                         "data": {"k": "v"}})
    out = alice.kubectl("get", "configmaps", "-o", "name").stdout
    assert "configmap/seen" in out
    manifest = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "applied", "namespace": "default"},
                               "data": {"by": "alice"}})
    alice.kubectl("apply", "--validate=false", "-f", "-", input=manifest)
    assert (kube_env.api.get("configmaps", "applied", "default") or {})["data"] == \
        {"by": "alice"}
    events = kube_env.wait_audit("alice's list audited", user="alice", verb="list",
                                 resource="configmaps")
    assert events[-1]["response_code"] == 200
    assert events[-1]["kubernetes_user"] == "alice"
    assert events[-1]["kubernetes_groups"] == ["developers"]
    assert events[-1]["kube_cluster"] == "emu"


def test_watch_receives_a_change(kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "listed", "namespace": "default"}})
    watch = subprocess.Popen(
        ["kubectl", "get", "configmaps", "-w", "-o", "name"], env=alice.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert watch.stdout is not None
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            ready, _, _ = select.select([watch.stdout], [], [], deadline - time.monotonic())
            if not ready:
                break
            line = watch.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if line.strip() == "configmap/listed":  # listed: the watch starts from there on
                kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "watched", "namespace": "default"}})
            if "configmap/watched" in line:
                break
        found = "configmap/watched" in lines
    finally:
        watch.terminate()
        _out, err = watch.communicate(timeout=10)
    assert found, (lines, err)


def test_contexts_switch_between_clusters_and_logout(kube_env: KubeEnv,
                                                     tmp_path: Path) -> None:
    olga = kube_env.olga
    olga.lmsh("kube", "login", "emu-ops")
    assert olga.kubectl("get", "secrets", "-n", "kube-system").returncode == 0
    olga.kubectl("config", "use-context", "kubetest-emu-ops")
    result = olga.lmsh("kube", "login", "emu", check=False)
    assert result.returncode == 1, describe(result)
    assert "may not use kube cluster emu" in result.stderr or "emu" in result.stderr
    olga.lmsh("kube", "logout")
    config = yaml.safe_load(olga.kubeconfig.read_text())
    assert not [c for c in config["contexts"] if c["name"].startswith("kubetest-")]
