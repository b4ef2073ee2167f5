"""The operator's kube agent, run for real: the operator reconciles a Cluster with
``spec.kube.enabled`` against the Kubernetes API emulator with RBAC (``kube_api_rbac``), and
the tests' kubelet (``tests/integration/kubelet.py``) runs the auth, proxy and kube agent
pods it wrote.

The kube agent's pod gets what the ServiceAccount admission plugin and the kubelet give a pod
of ``serviceAccountName: home-kube-agent``: a token of that account (minted by the emulator)
and the API server's CA at ``/var/run/secrets/kubernetes.io/serviceaccount``, and
``KUBERNETES_SERVICE_HOST``/``_PORT`` naming the API server, which the pod network reaches
through a forward to the emulator (``netns_forward``). The ClusterRole and binding the
operator wrote are the only grants that account has.

Asserted: the agent joins with the kube token auth reads (auth audits the join of role kube),
its readiness probe passes (a tunnel to the proxy); ``lmsh kube ls`` lists the Kubernetes
cluster under ``spec.kube.name`` (its heartbeat); after ``lmsh kube login``, ``kubectl get
pods`` (in the pod network) reaches the emulator through the proxy's kube front and the agent,
Limen audits the ``kube.request``, and the emulator saw the agent's account impersonating the
Limen user and the role's group. The agent's own token can do nothing else: listing secrets
or pods with it is refused 403 by the emulator's RBAC (and in its audit log). Needs root (the
kubelet); skipped otherwise.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from k8s_emulator.fixtures import KubeAPI
from limen.operator.cluster_builders import DATA_DIR, PORTS

from .cluster import COMMAND_TIMEOUT, LimenUser, clean_env, command, describe, wait_for
from .kubelet import Pod, PodNetwork, unavailable
from .netns_forward import NetnsForward
from .operator_render import Rendered

CANNOT_RUN_PODS = unavailable()
pytestmark = pytest.mark.skipif(CANNOT_RUN_PODS is not None, reason=str(CANNOT_RUN_PODS))

LOG = logging.getLogger("test")
NS = "team-k"
NAME = "home"
KUBE_NAME = "home-k8s"
AGENT_ACCOUNT = f"{NAME}-kube-agent"
API_PORT = 6443
"""The API server's port in the pod network (forwarded to the emulator)."""
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
START_TIMEOUT = 20.0

ROLE = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: kube-home}
spec:
  allow:
    kubernetes_labels: {env: home}
    kubernetes_groups: [viewers]
    kubernetes_resources:
    - {kind: pod, namespace: default, verbs: [get, list]}
"""

EMULATOR_RBAC = [  # what the impersonated group may do: read pods in default
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
     "metadata": {"name": "pod-reader", "namespace": "default"},
     "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "viewers", "namespace": "default"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                 "name": "pod-reader"},
     "subjects": [{"kind": "Group", "name": "viewers",
                   "apiGroup": "rbac.authorization.k8s.io"}]},
]


def cluster_body() -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": NAME, "namespace": NS, "uid": "uid-home", "generation": 1},
            "spec": {"public_address": f"127.0.0.1:{PORTS['web']}",
                     "kube": {"enabled": True, "name": KUBE_NAME,
                              "labels": {"env": "home"}}}}


def admitted(api: KubeAPI, rendered: Rendered) -> tuple[dict[str, Any],
                                                        dict[tuple[str, str], dict[str, Any]],
                                                        str]:
    """The kube agent's Deployment as the ServiceAccount admission plugin and the kubelet
    run it: its account's token and the API server's CA mounted at the well-known directory,
    the API server's address in the environment. Returns the Deployment, the objects its
    volumes come from, and the token."""
    deployment = copy.deepcopy(rendered.objects["Deployment", f"{NAME}-kube"])
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == AGENT_ACCOUNT
    assert pod["automountServiceAccountToken"] is True
    token = api.service_account(NS, AGENT_ACCOUNT).token  # the operator's ServiceAccount
    secret = f"{AGENT_ACCOUNT}-token"
    objects = {**rendered.objects, ("Secret", secret): {"data": {
        "token": base64.b64encode(token.encode()).decode(),
        "ca.crt": base64.b64encode(api.ca_file.read_bytes()).decode(),
        "namespace": base64.b64encode(NS.encode()).decode()}}}
    pod["volumes"].append({"name": "kube-api-access",
                           "secret": {"secretName": secret, "defaultMode": 0o644}})
    [container] = pod["containers"]
    container["volumeMounts"].append({"name": "kube-api-access",
                                      "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True})
    container["env"] += [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                         {"name": "KUBERNETES_SERVICE_PORT", "value": str(API_PORT)}]
    return deployment, objects, token


def in_network(network: PodNetwork, argv: Sequence[str | os.PathLike[str]], *,
               env: dict[str, str], input: str | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in the pods' network (where the Services' addresses answer)."""
    result = subprocess.run(["nsenter", f"--net={network.path}", "--", *map(str, argv)],
                            env=env, input=input, capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT, check=False)
    if check and result.returncode != 0:
        raise AssertionError(describe(result))
    return result


class PodNetworkUser(LimenUser):
    """A person whose ``lmsh`` and ``kubectl`` run in the pods' network."""

    def __init__(self, name: str, home: Path, network: PodNetwork) -> None:
        super().__init__(name, home, f"127.0.0.1:{PORTS['web']}")
        self.network = network

    @property
    def kube_env(self) -> dict[str, str]:
        return {**self.env, "HOME": str(self.home), "KUBECONFIG": str(self.home / "kubeconfig")}

    def lmsh(self, *args: str, input: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return in_network(self.network, [command("lmsh"), *args], env=self.kube_env,
                          input=input, check=check)

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return in_network(self.network, ["kubectl", "--request-timeout=20s", *args],
                          env=self.kube_env)


def lmctl(network: PodNetwork, auth_data: Path, *args: str | os.PathLike[str]) -> Any:
    """``lmctl --auth <auth's Service port> -i <auth's admin identity> ARGS -o json`` in the
    pods' network (never offline on auth's data directory)."""
    result = in_network(network, [command("lmctl"), "--auth", f"127.0.0.1:{PORTS['auth']}",
                                  "-i", auth_data / "admin", *args, "-o", "json"],
                        env=clean_env())
    return json.loads(result.stdout)


def joins(data_dir: Path, role: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for day in sorted((data_dir / "log" / "events").glob("*.jsonl")):
        events += [json.loads(line) for line in day.read_text(encoding="utf-8").splitlines()
                   if line.strip()]
    return [e for e in events
            if e.get("event") == "join" and e.get("role") == role and e.get("success")]


def up(pod: Pod, condition: Callable[[], object], what: str) -> None:
    """Wait for ``condition`` while the pod's last container runs (it must still run)."""
    process = pod.started[-1]
    wait_for(lambda: condition() or not process.running(), START_TIMEOUT, what)
    assert process.running(), f"{pod.name} exited while waiting for {what}"
    assert condition(), what


@pytest.fixture
def network() -> Iterator[PodNetwork]:
    with PodNetwork() as shared:
        yield shared


def test_the_operators_kube_agent_serves_kubectl_by_impersonation_only(
        kube_api_rbac: KubeAPI, network: PodNetwork, tmp_path: Path) -> None:
    api = kube_api_rbac
    for document in EMULATOR_RBAC:
        api.create(document)
    api.create({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"containers": [{"name": "main", "image": "nginx"}]}})
    rendered = Rendered(api, cluster_body())
    deployment, objects, agent_token = admitted(api, rendered)
    port = int(api.url.rsplit(":", 1)[1])
    pods: list[Pod] = []
    try:
        with NetnsForward(network.path, API_PORT, ("127.0.0.1", port)):
            auth = rendered.pod(network, "auth", tmp_path)
            pods.append(auth)
            auth.run_init()
            data = auth.host_path("auth", DATA_DIR)
            proxy = rendered.pod(network, "proxy", tmp_path)
            agent = rendered.pod(network, "kube", tmp_path, deployment, objects)
            # one after the other: a proxy or agent that cannot reach what it joins exits (the
            # kubelet would restart it)
            auth.start("auth")
            up(auth, lambda: auth.probe("auth", "readinessProbe"), "auth's readiness")
            pods.append(proxy)
            proxy.start("proxy")
            up(proxy, lambda: proxy.probe("proxy", "readinessProbe"), "proxy readiness")
            pods.append(agent)
            agent.start("kube")
            up(agent, lambda: joins(data, "kube"), "the kube agent's join (through the proxy)")
            assert joins(data, "kube")[-1]["token_id"] == "static-kube-token"
            up(agent, lambda: agent.probe("kube", "readinessProbe"), "the agent's tunnel")
            assert agent.probe("kube", "livenessProbe")

            # a Limen user whose role grants the group "viewers" on env: home
            (tmp_path / "role.yaml").write_text(ROLE)
            lmctl(network, data, "apply", "-f", tmp_path / "role.yaml")
            link = lmctl(network, data, "users", "add", "alice", "--roles", "kube-home")
            alice = PodNetworkUser("alice", tmp_path / "alice", network)
            alice.signup(link["url"])
            alice.login()

            def listed() -> list[dict[str, Any]]:
                items = json.loads(alice.lmsh("kube", "ls", "-o", "json").stdout)["items"]
                return [c for c in items if c["name"] == KUBE_NAME]

            [served] = wait_for(listed, START_TIMEOUT, "the agent's heartbeat of home-k8s")
            assert served["labels"] == {"env": "home"}
            alice.lmsh("kube", "login", KUBE_NAME)
            assert alice.kubectl("get", "pods", "-o", "name").stdout.split() == ["pod/web"]
            # Limen audited it: alice, served by the agent as alice in group viewers
            def served_requests() -> list[dict[str, Any]]:
                items = lmctl(network, data, "audit", "search", "--type", "kube.request",
                              "--user", "alice")["items"]
                return [e for e in items if e.get("kube_cluster") == KUBE_NAME
                        and e.get("verb") == "list" and e.get("success")]

            request = wait_for(served_requests, START_TIMEOUT, "kube.request of alice")[0]
            assert (request["kubernetes_user"], request["kubernetes_groups"],
                    request["response_code"]) == ("alice", ["viewers"], 200)
            assert agent.stop() == {"kube": 0}  # SIGTERM: a clean exit

        # the emulator saw the agent's account acting as alice in group viewers
        seen = [e for e in api.audit_events()
                if (e.get("impersonatedUser") or {}).get("username") == "alice"]
        assert seen, api.audit_events()[-5:]
        assert seen[-1]["user"]["username"] == f"system:serviceaccount:{NS}:{AGENT_ACCOUNT}"
        assert "viewers" in seen[-1]["impersonatedUser"]["groups"]
        assert seen[-1]["verb"] == "list"
        assert seen[-1]["responseStatus"]["code"] == 200
        # the agent's own token may do nothing but impersonate: refused, and audited so
        paths = (f"/api/v1/namespaces/{NS}/secrets", "/api/v1/namespaces/default/pods",
                 "/api/v1/pods")
        for path in paths:
            status, _ = api.request_as("GET", path, token=agent_token)
            assert status == 403, path
        refused = [e for e in api.audit_events()
                   if e["user"].get("username") == f"system:serviceaccount:{NS}:{AGENT_ACCOUNT}"
                   and e["requestURI"] in paths]
        assert [(e["requestURI"], e["responseStatus"]["code"]) for e in refused] == [
            (path, 403) for path in paths]
    except AssertionError as err:
        logs = "\n".join(f"--- {c.log.name}:\n{c.output()[-3000:]}"
                         for pod in pods for c in pod.started)
        raise AssertionError(f"{err}\n{logs}") from None
    finally:
        for pod in reversed(pods):
            pod.stop()
