"""The monitoring manifests: the example Grafana dashboard (manifests/grafana) asks only for
metrics Limen exposes (every ``limen_*`` name in its queries is a sample name of a family in a
process's registry, suffixes by type), and the kustomize monitoring overlay builds with
kubectl's kustomize: the operator's Deployment with its diag port and readiness probe, a
Service and ServiceMonitor for it, a PodMonitor for the Clusters' pods on their diag port."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from limen.diag import Metrics
from limen.operator.availability import DIAG_PORTS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "manifests" / "grafana" / "limen-dashboard.json"
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "unknown": ("",),
            "histogram": ("_bucket", "_count", "_sum", "_created")}


def exposed_names() -> set[str]:
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def queries(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [q for value in node.values() for q in queries(value)]
    if isinstance(node, list):
        return [q for value in node for q in queries(value)]
    return []


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = queries(dashboard["panels"])
    assert len(exprs) >= 15
    used = {name for expr in exprs for name in re.findall(r"\blimen_[a-z_]+", expr)}
    assert used - exposed_names() == set()
    # every family Limen exposes is on the dashboard, but for the version
    families = {f.name for f in Metrics().registry.collect()} - {"limen_build_info"}
    shown = {f for f in families if any(n.startswith(f) for n in used)}
    assert shown == families
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])


def test_the_monitoring_overlay_builds() -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is missing (scripts/test installs it)"
    built = subprocess.run([kubectl, "kustomize", str(ROOT / "manifests" / "overlays" /
                                                      "monitoring")],
                           capture_output=True, text=True, check=True, timeout=60).stdout
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(built) if o}
    deployment = objects["Deployment", "limen-operator"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "diag", "containerPort": 3000} in container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LIMEN_OPERATOR_DIAG_ADDR"] == "0.0.0.0:3000"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "diag"}
    service = objects["Service", "limen-operator-metrics"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()
    monitor = objects["ServiceMonitor", "limen-operator"]
    assert monitor["metadata"]["namespace"] == "limen-system"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "diag"
    pods = objects["PodMonitor", "limen-clusters"]
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] == "diag"
    assert pods["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "limen", "app.kubernetes.io/managed-by": "limen-operator"}
    assert sorted(DIAG_PORTS) == ["auth", "db", "kube", "proxy"]
