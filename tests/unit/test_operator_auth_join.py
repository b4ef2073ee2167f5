"""The operator's Cluster children expose auth's join listener: auth's pod listens on 3025 (the
auth API, a client certificate required) and 3027 (``/v1/join`` only), its ClusterIP Service
exposes both, and the proxy pods are told both addresses (``LIMEN_AUTH_SERVER``,
``LIMEN_AUTH_JOIN``), which their ``limen.yaml`` plus environment turn into the settings a
joining proxy reads. Pure builders, no Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from limen.config import load_settings
from limen.operator.cluster_builders import children

PIN = "sha256:" + "cd" * 32
BODY = {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "main", "namespace": "limen", "uid": "uid-main", "generation": 1},
        "spec": {"public_address": "limen.example.com:443"}}


def _objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o
            for o in children(BODY, "img:1", 0, ca_pin=PIN)}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_auth_service_and_pod_expose_the_join_listener() -> None:
    objects = _objects()
    service = objects["Service", "main-auth"]["spec"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["ports"]] == [
        ("auth", 3025, "auth"), ("auth-join", 3027, "auth-join")]
    assert service["type"] == "ClusterIP"
    ports = _container(objects["Deployment", "main-auth"])["ports"]
    assert [(p["name"], p["containerPort"]) for p in ports] == [
        ("auth", 3025), ("auth-join", 3027), ("diag", 3000)]
    proxy_ports = [p["port"] for p in objects["Service", "main-proxy"]["spec"]["ports"]]
    assert 3025 not in proxy_ports
    assert 3027 not in proxy_ports
    assert 3026 in proxy_ports  # the proxy's Kubernetes front


def test_auth_binds_it_and_the_proxies_join_there(tmp_path: Path) -> None:
    objects = _objects()
    config = tmp_path / "limen.yaml"
    config.write_text(objects["ConfigMap", "main-config"]["data"]["limen.yaml"])
    auth = load_settings(config, env={})
    assert (auth.listeners.auth, auth.listeners.auth_join) == ("0.0.0.0:3025", "0.0.0.0:3027")
    env = {e["name"]: e.get("value") for e in
           _container(objects["Deployment", "main-proxy"])["env"]}
    assert env["LIMEN_AUTH_SERVER"] == "main-auth.limen.svc:3025"
    assert env["LIMEN_AUTH_JOIN"] == "main-auth.limen.svc:3027"
    proxy = load_settings(config, env={k: v for k, v in env.items() if v is not None})
    assert (proxy.join.auth_server, proxy.join.auth_join) == (
        "main-auth.limen.svc:3025", "main-auth.limen.svc:3027")
