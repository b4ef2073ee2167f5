"""How a Cluster's replicated pods stay available (pure: dicts in, dicts out).

::

    PodDisruptionBudget <name>-auth / <name>-proxy   when the Deployment runs more than one
                                                     pod: maxUnavailable 1, so a node drain
                                                     evicts them one at a time
    podAntiAffinity (preferred, weight 100,          proxies always, auth on PostgreSQL: the
      topologyKey kubernetes.io/hostname)            scheduler spreads them over nodes when it
                                                     can (preferred: a one-node cluster still
                                                     runs them all)
    auth readinessProbe  GET /v1/ready on 3026       ready while its backend answers
                                                     (limen.auth.http.readiness): a replica
                                                     that lost PostgreSQL leaves the Service

Called by ``limen.operator.cluster_builders``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from limen.auth.http.readiness import READY_PATH

__all__ = ["HOSTNAME_TOPOLOGY", "auth_readiness_probe", "disruption_budget", "spread_by_host"]

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


def auth_readiness_probe() -> dict[str, Any]:
    """Auth is ready while its backend answers (HTTPS on the join listener, which asks for
    no client certificate; the kubelet does not verify the server's)."""
    return {"httpGet": {"scheme": "HTTPS", "port": "auth-join", "path": READY_PATH},
            "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 2}
