"""How a Cluster's replicated pods stay available (pure: dicts in, dicts out).

::

    PodDisruptionBudget <name>-auth / <name>-proxy   when the Deployment runs more than one
                                                     pod: maxUnavailable 1, so a node drain
                                                     evicts them one at a time
    podAntiAffinity (preferred, weight 100,          proxies always, auth on PostgreSQL: the
      topologyKey kubernetes.io/hostname)            scheduler spreads them over nodes when it
                                                     can (preferred: a one-node cluster still
                                                     runs them all)
    diagnostics listener (limen.diag)                plain HTTP on the pod's port ``diag``:
                                                     auth 3000, proxy 3001, db agents 3002,
                                                     the kube agent 3003
                                                     (apart, so pods sharing one network, as
                                                     on a test's kubelet, do not collide)
    readinessProbe       GET /readyz on diag         auth: its backend answers and it holds
                                                     its CAs (gitops excluded: a broken Git
                                                     remote must not empty the Service); the
                                                     proxy: auth answers, its listeners
                                                     accept; a db or kube agent: a tunnel
                                                     is up
    livenessProbe        GET /healthz on diag        the event loop answers; depends on no
                                                     other process, so an auth outage
                                                     restarts nothing

Called by ``limen.operator.cluster_builders``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DIAG_PORTS", "HOSTNAME_TOPOLOGY", "diag_args",
           "diag_port", "disruption_budget", "liveness_probe", "readiness_probe",
           "spread_by_host"]

DIAG_PORTS = {"auth": 3000, "proxy": 3001, "db": 3002, "kube": 3003}
"""The diagnostics listener's port per component (container port ``diag``)."""
READYZ_EXCLUDES = {"auth": "?exclude=gitops"}

HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"


def disruption_budget(metadata: Mapping[str, Any],
                      selector: Mapping[str, str]) -> dict[str, Any]:
    """A PodDisruptionBudget letting one pod of ``selector`` go at a time."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": dict(metadata),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}}}


def spread_by_host(selector: Mapping[str, str]) -> dict[str, Any]:
    """A pod ``affinity`` preferring nodes that run no other pod of ``selector``."""
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100,
        "podAffinityTerm": {"labelSelector": {"matchLabels": dict(selector)},
                            "topologyKey": HOSTNAME_TOPOLOGY}}]}}


def diag_args(component: str) -> list[str]:
    """``limen start`` flags: the diagnostics listener on every address of the pod."""
    return ["--diag-addr", f"0.0.0.0:{DIAG_PORTS[component]}"]


def diag_port(component: str) -> dict[str, Any]:
    """The container port the probes and a Prometheus ServiceMonitor/PodMonitor use."""
    return {"name": "diag", "containerPort": DIAG_PORTS[component]}


def readiness_probe(component: str) -> dict[str, Any]:
    """``GET /readyz`` on the diag port (see the module doc)."""
    return {"httpGet": {"scheme": "HTTP", "port": "diag",
                        "path": "/readyz" + READYZ_EXCLUDES.get(component, "")},
            "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 2}


def liveness_probe() -> dict[str, Any]:
    """``GET /healthz`` on the diag port: alive while its event loop answers."""
    return {"httpGet": {"scheme": "HTTP", "port": "diag", "path": "/healthz"},
            "initialDelaySeconds": 10, "periodSeconds": 20, "timeoutSeconds": 5,
            "failureThreshold": 3}
