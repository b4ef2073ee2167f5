"""A leaf's Kubernetes cluster served by a kube agent run apart from the leaf's auth, reached
by root users through the root's proxy with the real kubectl (real processes).

::

    kubectl ──▶ root (auth, proxy, node) ──cluster link──▶ leaf (auth, proxy, node)
                                                             ▲ reverse tunnel
                               leaf kube agent (limen start --roles kube --proxy LEAF)
                                                             ──▶ the Kubernetes emulator

The leaf trusts the root by a TrustedCluster whose role_map sends root ``ops`` to leaf
``leaf-dev`` (group ``developers`` on ``env: leaf``: pods and configmaps in ``default``). The
kube agent apart learns the root's TLS CA and the role_map from the leaf's auth
(``limen.trust.roots_poller.RemoteTrustCache``), verifies the root user's certificate against
that CA and decides with the mapped role; its events reach the leaf's auth through its outbox:

* ``kubectl get pods`` of root user alice (``lmsh kube login --cluster leaf``) is served as
  alice with the mapped group; the leaf audits the request, written by the agent apart for
  the leaf with ``user_cluster`` root; the root audits the forwarding;
* a root user whose roles map to nothing (carol, role ``stranger``) is refused at the leaf,
  audited there with ``user_cluster`` root, and at the root.

The agent's own refusals (roles mapped to nothing, untrusted or forged CAs, the wrong CA
type, expiry, a certificate routed elsewhere, a trust disabled) and its outbox after a
refused certificate are the unit test ``tests/unit/test_kube_agent_root_users.py``: behind
the leaf's proxy they cannot be reached.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from k8s_emulator.fixtures import KubeAPI
from limen.client.kubeconfig import KubeEntry, merge_entry
from limen.client.profile import ProfileStore
from limen.net.address import parse_address

from .cluster import ClusterFactory, LimenCluster, command, describe, wait_for
from .kube_env import RBAC
from .leaf_people import (
    ROOT_ROLES,
    Person,
    ready_person,
    start_agent_apart,
    trust_root_ops_only,
)

DEADLINE = 30.0
KUBE = "emu-apart"

LEAF_ROLES = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: leaf-dev}
spec:
  allow:
    kubernetes_labels: {env: leaf}
    kubernetes_groups: [developers]
    kubernetes_resources:
    - {kind: configmap, namespace: default, verbs: ['*']}
    - {kind: pod, namespace: default, verbs: ['*']}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: visitor}
spec:
  allow: {node_labels: {'*': '*'}}
"""


def agent_config(kubeconfig: Path) -> str:
    return f"""
kube:
  clusters: [{{name: {KUBE}, labels: {{env: leaf}}, kubeconfig: "{kubeconfig}"}}]
"""


@dataclass
class World:
    root: LimenCluster
    leaf: LimenCluster
    agent: LimenCluster
    api: KubeAPI
    alice: Person
    """Root role ops: leaf-dev on the leaf."""
    carol: Person
    """Root role stranger: not in the role_map."""

    def leaf_audit(self, event_type: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.leaf.audit(event_type)
                if all(e.get(k) == v for k, v in match.items())]


def _listed(person: Person) -> set[str]:
    result = person.lmsh("kube", "ls", "--cluster", "leaf", "-o", "json", check=False)
    if result.returncode != 0:
        return set()
    return {c["name"] for c in json.loads(result.stdout)["items"]}


@pytest.fixture(scope="module")
def world(module_clusters: ClusterFactory,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("leafkubeapart")
    api = KubeAPI(base / "k8s", authenticate=True).start()
    try:
        api.create_namespace("limen")
        account = api.service_account("limen", "kube-agent")
        for document in RBAC:
            api.create(document)
        kubeconfig = base / "agent.kubeconfig"
        shutil.copy(account.kubeconfig, kubeconfig)
        root = module_clusters("root")
        leaf = module_clusters("leaf")
        root.lmctl("apply", "-f", "-", input=ROOT_ROLES)
        leaf.lmctl("apply", "-f", "-", input=LEAF_ROLES)
        trust_root_ops_only(root, leaf)
        agent = start_agent_apart(module_clusters, base, leaf, "kube", agent_config(kubeconfig))
        world = World(root, leaf, agent, api, ready_person(root, "alice", "ops"),
                      ready_person(root, "carol", "stranger"))
        wait_for(lambda: _listed(world.alice) == {KUBE}, DEADLINE,
                 "the leaf's kube cluster (served by the agent apart) listed through the root")
        yield world
    finally:
        api.stop()


def test_kubectl_of_a_root_user_is_served_by_the_agent_apart_audited_at_the_leaf(
        world: World) -> None:
    world.api.create({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": "web", "namespace": "default"},
                      "spec": {"containers": [{"name": "web", "image": "nginx"}]}})
    world.alice.lmsh("kube", "login", "--cluster", "leaf", KUBE)

    def served() -> Any:  # the agent polls the leaf's trust: it may be a poll behind
        result = world.alice.kubectl("get", "pods", "-n", "default", "-o", "name",
                                     check=False)
        return result if result.returncode == 0 else None

    result = wait_for(served, DEADLINE, "kubectl through the root to the agent apart")
    assert "pod/web" in result.stdout, describe(result)
    audited = wait_for(lambda: world.leaf_audit("kube.request", user="alice", success=True,
                                                kube_cluster=KUBE, resource="pods"),
                       15.0, "the agent's kube.request at the leaf")
    event = audited[-1]
    assert (event["cluster"], event["user_cluster"]) == ("leaf", "root")
    assert (event["response_code"], event["verb"]) == (200, "list")
    assert event["kubernetes_groups"] == ["developers"]  # the mapped role's
    assert not str(event["server_id"]).endswith("-kube")  # the agent apart
    forwarded = [e for e in world.root.audit("kube.request", user="alice")
                 if e.get("target_cluster") == "leaf"]
    assert forwarded


def _kube_entry(person: Person, root: LimenCluster) -> None:
    """The kubeconfig entry ``lmsh kube login --cluster leaf`` would write (kubectl's exec
    plugin asks the root for a certificate routed to the leaf whatever the leaf lists)."""
    store = ProfileStore(person.user.home)
    profile = store.current_valid()
    host, port = parse_address(root.listeners["kube"])
    entry = KubeEntry(limen_cluster="leaf", name=KUBE, server=f"https://{host}:{port}",
                      ca_pem=store.ca_path(profile.proxy, profile.cluster).read_bytes(),
                      proxy=profile.proxy, command=command("lmsh"),
                      limen_home=str(person.user.home), leaf="leaf")
    merge_entry(Path(person.env["KUBECONFIG"]), entry)


def test_a_root_user_whose_roles_map_to_nothing_is_refused_at_the_leaf(world: World) -> None:
    listed = world.carol.lmsh("kube", "login", "--cluster", "leaf", KUBE, check=False)
    assert listed.returncode != 0  # the leaf lists nothing for carol
    _kube_entry(world.carol, world.root)
    result = world.carol.kubectl("get", "pods", "-n", "default", check=False)
    assert result.returncode != 0, describe(result)
    assert "pod/web" not in result.stdout
    denied = wait_for(lambda: [e for e in world.leaf_audit("access.denied", user="carol")
                               if e.get("user_cluster") == "root" and e.get("action") == "kube"],
                      15.0, "the leaf's audit of carol's refusal")
    assert "map to no role" in denied[-1]["reason"]
    assert world.leaf_audit("kube.request", user="carol", success=True) == []
    refused = [e for e in world.root.audit("kube.request", user="carol")
               if e.get("target_cluster") == "leaf" and e.get("success") is False]
    assert refused
