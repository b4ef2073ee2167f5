"""The pods the operator creates really start: the operator reconciles a Cluster against the
Kubernetes API emulator (``kube_api``), and each container of the Deployments it wrote runs
the way the kubelet would run it (``tests/integration/kubelet.py``):

- as its ``runAsUser`` 10001 (group 10001, supplementary group the ``fsGroup``), no privilege
  escalation, no capability;
- its volumes as the kubelet prepares them: the data PVC's root and the emptyDirs owned by
  root with group 10001 (2775 / 2777, setgid), Secrets and ConfigMaps in the atomic-writer
  layout with their ``defaultMode`` and the group bits;
- the root filesystem read-only (a private mount namespace: ``mount -o remount,bind,ro /``),
  nothing writable but the spec's volumes;
- only the spec's env (``valueFrom`` Secret keys resolved) on top of the image's, and only its
  mounts; the Services' DNS names resolve to the pods' shared network namespace.

The limen installation is this virtualenv, used in place: ``/root`` (where a pyenv interpreter
lives) is not traversable by uid 10001, so each pod covers such directories with an overlay
whose top is 0755 (nothing is copied). Needs root; skipped otherwise.

Asserted: the auth pod's init container seeds the CAs and exits 0; auth comes up (its
listeners.json, its readiness and liveness probes pass) with its data directory its own, 0700,
inside the volume the kubelet gave to root:10001; the operator calls it at the address it
derived from the Cluster's name (``edge-auth.team-a.svc:3025``) with the identity it signed
from the CA Secret; the proxy comes up, joins auth (auth audits the join of a proxy), passes its
probes and its tunnel listener answers; the db agent joins through the proxy; every container
stops cleanly on SIGTERM; a new auth pod starts on the same volume after the kubelet gave the
whole of it to the group again. And the old layout (the PVC mounted at the data directory
itself) is refused with a clear error, not a traceback.
"""

from __future__ import annotations

import copy
import http.client
import json
import logging
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from k8s_emulator.fixtures import KubeAPI
from limen.operator.availability import DIAG_PORTS
from limen.operator.cluster_builders import DATA_DIR, PORTS, VOLUME_DIR

from .cluster import wait_for
from .kubelet import POD_IP, Pod, PodNetwork, http_status, unavailable
from .operator_render import Rendered

CANNOT_RUN_PODS = unavailable()
pytestmark = pytest.mark.skipif(CANNOT_RUN_PODS is not None, reason=str(CANNOT_RUN_PODS))

LOG = logging.getLogger("test")
NS = "team-a"
NAME = "edge"  # not "limen": every address must follow the Cluster's own name
START_TIMEOUT = 20.0


def cluster_body() -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": NAME, "namespace": NS, "uid": "uid-edge", "generation": 1},
            "spec": {"public_address": "limen.example.com:443",
                     "proxy": {"replicas": 1, "service_type": "ClusterIP"},
                     "db": {"replicas": 1}}}


@pytest.fixture
def network() -> Iterator[PodNetwork]:
    with PodNetwork() as shared:
        yield shared


def audit_events(data_dir: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for day in sorted((data_dir / "log" / "events").glob("*.jsonl")):
        events += [json.loads(line) for line in day.read_text(encoding="utf-8").splitlines()
                   if line.strip()]
    return events


def joins(data_dir: Path, role: str) -> list[dict[str, Any]]:
    return [e for e in audit_events(data_dir)
            if e.get("event") == "join" and e.get("role") == role and e.get("success")]


def describe(pods: list[Pod]) -> str:
    return "\n".join(f"--- {c.log.name}:\n{c.output()[-3000:]}"
                     for pod in pods for c in pod.started)


def up(pod: Pod, container: str, condition: Callable[[], object], what: str) -> None:
    """Wait for ``condition`` while the container runs (it must still run then)."""
    process = pod.started[-1]
    wait_for(lambda: condition() or not process.running(), START_TIMEOUT, what)
    assert process.running(), f"{pod.name}/{container} exited while waiting for {what}"
    assert condition(), what


def mode_and_owner(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid


def start_auth(rendered: Rendered, network: PodNetwork, workdir: Path) -> tuple[Pod, Path]:
    auth = rendered.pod(network, "auth", workdir)
    auth.run_init()
    auth.start("auth")
    data = auth.host_path("auth", DATA_DIR)
    up(auth, "auth", lambda: (data / "listeners.json").exists(), "auth's listeners.json")
    return auth, data


def call_auth_as_the_operator(rendered: Rendered, network: PodNetwork) -> int | None:
    """``GET /v1/ping`` on the auth API with what the operator derived for this Cluster: the
    address of its auth Service and an identity signed by its CA Secret (mutual TLS, the
    auth certificate checked against the Service name)."""
    endpoint = rendered.ctx.deployed.endpoint()
    host, port = endpoint.address.rsplit(":", 1)
    with network.connect(int(port)) as sock:
        return http_status(sock, "/v1/ping", endpoint.credentials.client_ssl(), host)


def request_text(network: PodNetwork, port: int, path: str) -> tuple[int, str]:
    """``GET path`` over plain HTTP (the diagnostics listener), as Prometheus scrapes it."""
    with network.connect(port) as sock:
        connection = http.client.HTTPConnection("127.0.0.1", port)
        connection.sock = sock
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            return answer.status, answer.read().decode()
        finally:
            connection.close()


def proxy_set(rendered: Rendered, network: PodNetwork) -> list[dict[str, Any]]:
    """``GET /v1/presence/proxies`` on the auth API, as the operator (see above)."""
    endpoint = rendered.ctx.deployed.endpoint()
    host, port = endpoint.address.rsplit(":", 1)
    with network.connect(int(port)) as sock:
        connection = http.client.HTTPSConnection(host)
        connection.sock = endpoint.credentials.client_ssl().wrap_socket(
            sock, server_hostname=host)
        try:
            connection.request("GET", "/v1/presence/proxies")
            body = connection.getresponse().read()
        finally:
            connection.close()
    answer = json.loads(body)
    return list(answer.get("items", []))


def test_the_generated_pods_start_and_the_proxy_joins(kube_api: KubeAPI, network: PodNetwork,
                                                      tmp_path: Path) -> None:
    rendered = Rendered(kube_api, cluster_body())
    pods: list[Pod] = []
    try:
        auth, data = start_auth(rendered, network, tmp_path)
        pods.append(auth)
        up(auth, "auth", lambda: auth.probe("auth", "readinessProbe"), "auth's readiness")
        assert auth.probe("auth", "livenessProbe")
        # the data directory is limen's own (0700) inside the volume the kubelet prepared
        volume = auth.host_path("auth", VOLUME_DIR)
        assert mode_and_owner(volume) == (0o2775, 0, 10001)
        assert mode_and_owner(data) == (0o700, 10001, 10001)
        assert all(mode_and_owner(key)[0] == 0o600 for key in (data / "admin").iterdir())

        # the operator reaches this Cluster's auth at <name>-auth.<namespace>.svc
        assert rendered.ctx.deployed.endpoint().address == f"{NAME}-auth.{NS}.svc:3025"
        assert call_auth_as_the_operator(rendered, network) == 200

        proxy = rendered.pod(network, "proxy", tmp_path)
        pods.append(proxy)
        proxy.start("proxy")
        up(proxy, "proxy", lambda: joins(data, "proxy"), "the proxy's join, audited by auth")
        up(proxy, "proxy", lambda: proxy.probe("proxy", "readinessProbe"), "proxy readiness")
        assert proxy.probe("proxy", "livenessProbe")
        with network.connect(PORTS["tunnel"]):
            pass  # the tunnel listener answers
        # the replica announces its own pod's address to agents, not the Service's
        announced = wait_for(lambda: proxy_set(rendered, network), START_TIMEOUT,
                             "the proxy's announcement")
        assert [p["tunnel_address"] for p in announced] == [f"{POD_IP}:{PORTS['tunnel']}"]

        db = rendered.pod(network, "db", tmp_path)
        pods.append(db)
        db.start("db")
        up(db, "db", lambda: joins(data, "db"), "the db agent's join (through the proxy)")
        up(db, "db", lambda: db.probe("db", "readinessProbe"), "the db agent's tunnel (readiness)")
        assert db.probe("db", "livenessProbe")
        # Prometheus scrapes the proxy's diag port: the db agent's tunnel is counted there
        status, text = request_text(network, DIAG_PORTS["proxy"], "/metrics")
        assert status == 200
        assert 'limen_tunnel_agents_connected{proxy="' in text

        stopped = {pod.name: pod.stop() for pod in reversed(pods)}
        assert all(code == 0 for codes in stopped.values() for code in codes.values()), stopped

        # a new auth pod: the kubelet gives the whole volume to the group again (our data
        # directory 2770, files 0660); auth takes its directory back to 0700 and starts
        again, data = start_auth(rendered, network, tmp_path)
        pods.append(again)
        assert mode_and_owner(data) == (0o700, 10001, 10001)
        assert again.stop()["auth"] == 0
    except AssertionError as err:
        raise AssertionError(f"{err}\n{describe(pods)}") from None
    finally:
        for pod in pods:
            pod.stop()


def test_a_volume_root_as_data_directory_is_refused_clearly(
        kube_api: KubeAPI, network: PodNetwork, tmp_path: Path) -> None:
    """The layout the operator used before: the PVC mounted at the data directory itself.
    Auth cannot make the kubelet's root:10001 2775 directory private: it stops with a clear
    error (no traceback), and changes nothing."""
    rendered = Rendered(kube_api, cluster_body())
    deployment = copy.deepcopy(rendered.objects["Deployment", f"{NAME}-auth"])
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    for mount in container["volumeMounts"]:
        if mount["name"] == "data":
            mount["mountPath"] = DATA_DIR
    auth = rendered.pod(network, "auth", tmp_path, deployment)
    started = auth.start("auth")
    wait_for(lambda: not started.running(), START_TIMEOUT, "auth to stop")
    output = started.output()
    assert auth.stop() == {"auth": 1}, output
    assert "Traceback" not in output
    assert f"{DATA_DIR} belongs to uid 0" in output, output
    assert "other users have access to it (mode 2775)" in output, output
    assert mode_and_owner(auth.host_path("auth", DATA_DIR)) == (0o2775, 0, 10001)
