"""Locks on Kubernetes access, end to end (a cluster with its kube agent in front of the
project's API emulator, ``kube_env``): an open ``kubectl exec`` of a ``lock: strict`` user ends
within 2 s of ``lmctl lock --user``, audited with the lock's name; new requests are refused
with ``locked: <message>``; lifting the lock restores access."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from .cluster import describe, wait_for
from .kube_env import KubeEnv, KubePerson, start_kube_env

ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: kube-lock-strict}
spec:
  options: {lock: strict}
  allow:
    kubernetes_labels: {env: dev}
    kubernetes_groups: [developers]
    kubernetes_resources:
    - {kind: pod, namespace: default, verbs: ['*']}
"""


@pytest.fixture(scope="module")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    yield from start_kube_env(tmp_path_factory.mktemp("kubelocks"))


def test_a_lock_ends_an_open_kubectl_exec_and_refuses_new_requests(kube_env: KubeEnv) -> None:
    kube_env.cluster.lmctl("apply", "-f", "-", input=ROLE)
    kara = KubePerson(kube_env.cluster.signed_up_user("kara", roles=["kube-lock-strict"]))
    kara.user.login()
    kara.lmsh("kube", "login", "emu")
    kube_env.api.run_pod("sleeper")
    session = subprocess.Popen(
        ["kubectl", "exec", "sleeper", "--", "sh", "-c", "echo started; sleep 60"],
        env=kara.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert session.stdout is not None
        assert session.stdout.readline() == b"started\n"
        name = kube_env.cluster.lmctl("lock", "--user", "kara", "--message", "rotating keys")
        locked_at = time.monotonic()
        wait_for(lambda: session.poll() is not None, 2.0, "the exec to be ended")
        assert time.monotonic() - locked_at <= 2.0
        ended = wait_for(lambda: [e for e in kube_env.cluster.audit("access.denied",
                                                                    user="kara")
                                  if e.get("lock") == name.stdout.strip()], 10.0,
                         "the ending audited")
        assert ended[0]["kube_cluster"] == "emu"
        refused = kara.kubectl("get", "pods", check=False)
        assert refused.returncode != 0, describe(refused)
        assert "locked: rotating keys" in refused.stderr, describe(refused)
        kube_env.cluster.lmctl("rm", f"lock/{name.stdout.strip()}")
        assert "sleeper" in kara.kubectl("get", "pods").stdout
    finally:
        session.kill()
        session.communicate()
