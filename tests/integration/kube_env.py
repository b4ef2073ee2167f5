"""A Limen cluster with a kube agent in front of the project's Kubernetes API emulator,
shared by the Kubernetes end-to-end tests of one module (``kube_env``).

::

    kubectl (kubeconfig from lmsh kube login, exec plugin kube_credentials_main.py)
        ──▶ proxy kube front (random port) ──▶ reverse tunnel ──▶ kube agent (in the cluster
            process, --roles ...,kube) ──▶ tests/k8s_emulator over HTTPS, as the agent's
            kubeconfig says, with Impersonate-User / Impersonate-Group

The emulator authenticates and authorizes like kube-apiserver: the kube agent is the service
account ``limen/kube-agent``, bound to a ClusterRole allowing ``impersonate`` only; the group
``developers`` may use configmaps, secrets and pods in ``default``, ``operators`` everything.
Kube clusters: ``emu`` (``env: dev``, from the agent's own config ``kube.clusters``, its
kubeconfig by path) and ``emu-ops`` (``env: ops``, a Resource applied with lmctl whose
``kubeconfig_ref`` names a file in the agent's secrets directory). People: ``alice`` (role
``kube-dev``: group ``developers`` on ``env: dev``, configmaps, pods and namespaces in
``default`` only, secrets denied) and ``olga`` (role ``kube-ops``: every object on
``env: ops``). Each person has their own ``HOME`` and ``KUBECONFIG``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k8s_emulator.fixtures import KubeAPI

from .cluster import LimenCluster, LimenUser, command, run, wait_for

ROLES = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: kube-dev}
spec:
  allow:
    kubernetes_labels: {env: dev}
    kubernetes_groups: [developers]
    kubernetes_resources:
    - {kind: configmap, namespace: default, verbs: ['*']}
    - {kind: pod, namespace: default, verbs: ['*']}
    - {kind: namespace, namespace: default, verbs: [get]}
    rules:
    - {resources: [session], verbs: [list, read],
       where: 'contains(session.participants, user.metadata.name)'}
  deny:
    kubernetes_resources: [{kind: secret}]
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: kube-ops}
spec:
  allow:
    kubernetes_labels: {env: ops}
    kubernetes_groups: [operators]
"""

OPS_CLUSTER = """
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {name: emu-ops, labels: {env: ops, served-by: cluster}}
spec: {kind: kube, kubeconfig_ref: {file: emu-ops.kubeconfig}, description: the emulator}
"""


def cluster_config(kubeconfig: Path) -> str:
    return f"""
kube:
  resources: [{{labels: {{served-by: cluster}}}}]
  clusters: [{{name: emu, labels: {{env: dev}}, kubeconfig: "{kubeconfig}",
               description: the emulator}}]
"""


@dataclass
class KubePerson:
    user: LimenUser

    @property
    def kubeconfig(self) -> Path:
        return self.user.home / "kubeconfig"

    @property
    def env(self) -> dict[str, str]:
        return {**self.user.env, "HOME": str(self.user.home),
                "KUBECONFIG": str(self.kubeconfig)}

    def lmsh(self, *args: str, check: bool = True) -> Any:
        return run([command("lmsh"), *args], env=self.env, check=check)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> Any:
        return run(["kubectl", "--request-timeout=20s", *args], env=self.env, check=check,
                   input=input)


@dataclass
class KubeEnv:
    cluster: LimenCluster
    api: KubeAPI
    alice: KubePerson
    olga: KubePerson

    def audit(self, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.cluster.audit("kube.request")
                if all(e.get(k) == v for k, v in match.items())]

    def wait_audit(self, what: str, **match: Any) -> list[dict[str, Any]]:
        return wait_for(lambda: self.audit(**match), 15.0, what)


RBAC = [
    # the kube agent's service account may impersonate, and nothing else
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "limen-impersonator"},
     "rules": [{"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"],
                "verbs": ["impersonate"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "limen-impersonator"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "limen-impersonator"},
     "subjects": [{"kind": "ServiceAccount", "name": "kube-agent", "namespace": "limen"}]},
    # what the impersonated groups may do: developers in default, operators everything
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
     "metadata": {"name": "developer", "namespace": "default"},
     "rules": [{"apiGroups": [""], "resources": ["configmaps", "secrets", "pods", "pods/log",
                                                 "pods/exec", "pods/attach",
                                                 "pods/portforward"],
                "verbs": ["*"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "developers", "namespace": "default"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "developer"},
     "subjects": [{"kind": "Group", "name": "developers",
                   "apiGroup": "rbac.authorization.k8s.io"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "everything"},
     "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "operators"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "everything"},
     "subjects": [{"kind": "Group", "name": "operators",
                   "apiGroup": "rbac.authorization.k8s.io"}]},
]


def start_kube_env(root: Path, extra_config: str = "") -> Iterator[KubeEnv]:
    """``extra_config``: more of the cluster's ``limen.yaml`` (e.g. its listeners)."""
    api = KubeAPI(root / "k8s", authenticate=True).start()
    cluster: LimenCluster | None = None
    try:
        api.create_namespace("limen")
        agent = api.service_account("limen", "kube-agent")
        for document in RBAC:
            api.create(document)
        config = root / "limen.yaml"
        config.write_text(cluster_config(agent.kubeconfig) + extra_config)
        cluster = LimenCluster(root / "cluster", "kubetest",
                               ["--roles", "auth,proxy,node,kube", "-c", str(config)])
        secrets = cluster.data_dir / "secrets"
        secrets.mkdir(parents=True, mode=0o700)
        shutil.copy(agent.kubeconfig, secrets / "emu-ops.kubeconfig")
        files = root / "resources"
        files.mkdir()
        (files / "roles.yaml").write_text(ROLES)
        (files / "clusters.yaml").write_text(OPS_CLUSTER)
        # applied offline before the first start, so that the kube agent's first heartbeat
        # already carries emu-ops (applied after, it waits for the next one, ~10 s)
        cluster.lmctl("apply", "-f", files)
        cluster.start()
        alice = KubePerson(cluster.signed_up_user("alice", roles=["kube-dev"]))
        olga = KubePerson(cluster.signed_up_user("olga", roles=["kube-ops"]))
        for person in (alice, olga):
            person.user.login()
        wait_for(lambda: {c["name"] for c in json.loads(
            olga.lmsh("kube", "ls", "-o", "json").stdout)["items"]} == {"emu-ops"},
            30.0, "the kube agent to heartbeat the declared kube cluster")
        yield KubeEnv(cluster, api, alice, olga)
    finally:
        try:
            if cluster is not None:
                cluster.stop()
        finally:
            if cluster is not None:
                cluster.kill()
            api.stop()
