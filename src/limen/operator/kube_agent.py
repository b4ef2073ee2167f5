"""The kube agent a Cluster runs for the Kubernetes cluster it is deployed in (pure: dicts in,
dicts out).

``spec.kube: {enabled: true, replicas: 1, name: NAME, labels: {k: v}, image: ...}``. For a
Cluster ``main`` in namespace ``limen``::

    Secret             main-kube-token    the static token the kube agent joins with (created
                                          once by ``limen.operator.cluster`` whatever
                                          spec.kube says, never rebuilt; auth reads it from
                                          ``auth.kube_token_file``)
    ServiceAccount     main-kube-agent    the agent's identity at its API server
    ClusterRole        limen-limen-main-kube-agent
                                          verbs [impersonate] on users, groups and
                                          serviceaccounts (core group), nothing else
    ClusterRoleBinding limen-limen-main-kube-agent
                                          that ClusterRole to that ServiceAccount
    ConfigMap          main-kube-config   the agent's limen.yaml: ``kube.clusters``: this
                                          Kubernetes cluster as ``spec.kube.name`` (default
                                          metadata.name) with ``spec.kube.labels``, reached in
                                          the cluster (no kubeconfig: the pod's service account);
                                          ``kube.resources: []`` (it serves no other cluster)
    Deployment         main-kube          ``limen start --roles kube --proxy
                                          main-proxy.limen.svc:3080 --ca-pin <TLS CA pin>``,
                                          the token in LIMEN_TOKEN, the ServiceAccount's token
                                          mounted (the only Limen pod that calls Kubernetes);
                                          probes on the diag port (3003: ready once a tunnel
                                          to a proxy is up)

The agent forwards each user's request with its own token plus ``Impersonate-User`` /
``Impersonate-Group`` computed by Limen's RBAC, so what a user may do in Kubernetes is what the
impersonated user and groups are bound to; the agent's account itself may do nothing else.

Namespaced objects carry the Cluster's controller ``ownerReference``. The ClusterRole and its
binding are cluster-scoped, where an owner reference to a namespaced Cluster is not allowed:
they are named after the Cluster's namespace and name (one pair per Cluster), labelled with
both (:func:`owns_cluster_scoped`), deleted by ``limen.operator.cluster`` when the Cluster is
deleted (its delete handler, run while kopf's finalizer holds the Cluster) or its kube agent
disabled. Disabled later: the Deployment is scaled to 0, not deleted. Called by
``limen.operator.cluster``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from limen.api.loader import SourceDocument
from limen.api.resources import API_GROUP, API_VERSION, Kind
from limen.api.validation import validate
from limen.errors import ValidationFailed
from limen.operator.agent_workload import AgentWorkload, agent_config_map, agent_deployment
from limen.operator.cluster_builders import (
    ClusterNames,
    child_metadata,
    cluster_spec,
    common_labels,
    token_secret,
)

__all__ = ["CLUSTER_NAMESPACE_LABEL", "IMPERSONATE_RULES", "kube_agent_config",
           "kube_children", "kube_cluster_name", "kube_enabled", "kube_problem",
           "kube_rbac", "kube_rbac_name", "kube_token_secret", "owns_cluster_scoped"]

COMPONENT = "kube"
CLUSTER_NAMESPACE_LABEL = f"{API_GROUP}/cluster-namespace"
"""On the cluster-scoped objects: the namespace of the Cluster they belong to (its name is in
``app.kubernetes.io/instance``)."""
IMPERSONATE_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"],
     "verbs": ["impersonate"]},
]
"""The kube agent's only permission: act as the user and groups Limen decided."""
RBAC_API = "rbac.authorization.k8s.io"


def kube_enabled(body: Mapping[str, Any]) -> bool:
    """``spec.kube.enabled`` (False when ``spec.kube`` is absent)."""
    return bool((cluster_spec(body).get("kube") or {}).get("enabled", False))


def kube_replicas(body: Mapping[str, Any]) -> int:
    """The agent's replicas: ``spec.kube.replicas`` when enabled, else 0."""
    return int((cluster_spec(body).get("kube") or {}).get("replicas", 1)) \
        if kube_enabled(body) else 0


def kube_cluster_name(body: Mapping[str, Any]) -> str:
    """The name this Kubernetes cluster is registered under: ``spec.kube.name``, else the
    Cluster's ``metadata.name``."""
    return str((cluster_spec(body).get("kube") or {}).get("name") or body["metadata"]["name"])


def _served_cluster(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"name": kube_cluster_name(body),
            "labels": dict((cluster_spec(body).get("kube") or {}).get("labels") or {}),
            "description": f"the Kubernetes cluster of Cluster {meta['namespace']}/{meta['name']}"}


def kube_problem(body: Mapping[str, Any]) -> str | None:
    """Why ``spec.kube`` cannot be the agent's served cluster (the check the agent makes at
    start, made before anything is deployed), or None."""
    if not kube_enabled(body):
        return None
    served = _served_cluster(body)
    document = {"apiVersion": API_VERSION, "kind": Kind.RESOURCE.value,
                "metadata": {"name": served["name"], "labels": served["labels"]},
                "spec": {"kind": "kube", "description": served["description"]}}
    try:
        validate([SourceDocument("<spec.kube>", 0, 1, document)])
    except ValidationFailed as err:
        return "; ".join(f"spec.kube: {e.path}: {e.reason}" for e in err.errors)
    return None


def kube_agent_config(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``limen.yaml`` of the kube agent (``limen.config``: the ``kube`` section)."""
    return {"kube": {"resources": [], "clusters": [_served_cluster(body)]}}


def kube_token_secret(body: Mapping[str, Any], token: str) -> dict[str, Any]:
    """The Secret holding the static token the kube agent joins with (created once, never
    rewritten: a new token would stop the agent from joining again)."""
    return token_secret(body, ClusterNames(body["metadata"]["name"]).kube_token, COMPONENT,
                        token)


def kube_rbac_name(body: Mapping[str, Any]) -> str:
    """``limen-<namespace>-<name>-kube-agent``: the ClusterRole and ClusterRoleBinding of one
    Cluster (cluster-scoped, so the namespace is in the name)."""
    meta = body["metadata"]
    return f"limen-{meta['namespace']}-{meta['name']}-kube-agent"


def _cluster_scoped_metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    labels = {**common_labels(body, COMPONENT),
              CLUSTER_NAMESPACE_LABEL: str(body["metadata"]["namespace"])}
    return {"name": kube_rbac_name(body), "labels": labels}


def owns_cluster_scoped(obj: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """Is the cluster-scoped ``obj`` this Cluster's (its labels name the Cluster's namespace
    and name, and this operator wrote it)?"""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    want = _cluster_scoped_metadata(body)["labels"]
    return all(labels.get(key) == want[key] for key in (
        "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
        "app.kubernetes.io/component", CLUSTER_NAMESPACE_LABEL))


def kube_rbac(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ClusterRole allowing impersonation only, and its binding to the agent's account."""
    names = ClusterNames(body["metadata"]["name"])
    role = {"apiVersion": f"{RBAC_API}/v1", "kind": "ClusterRole",
            "metadata": _cluster_scoped_metadata(body),
            "rules": [dict(rule) for rule in IMPERSONATE_RULES]}
    binding = {"apiVersion": f"{RBAC_API}/v1", "kind": "ClusterRoleBinding",
               "metadata": _cluster_scoped_metadata(body),
               "roleRef": {"apiGroup": RBAC_API, "kind": "ClusterRole",
                           "name": kube_rbac_name(body)},
               "subjects": [{"kind": "ServiceAccount", "name": names.kube_agent_account,
                             "namespace": body["metadata"]["namespace"]}]}
    return [role, binding]


def _service_account(body: Mapping[str, Any]) -> dict[str, Any]:
    names = ClusterNames(body["metadata"]["name"])
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": child_metadata(body, names.kube_agent_account, COMPONENT)}


def _workload(body: Mapping[str, Any]) -> AgentWorkload:
    names = ClusterNames(body["metadata"]["name"])
    return AgentWorkload(COMPONENT, deployment=names.kube, config_map=names.kube_config,
                         token_secret=names.kube_token, replicas=kube_replicas(body),
                         config=kube_agent_config(body),
                         service_account=names.kube_agent_account)  # its API credential


def kube_children(body: Mapping[str, Any], default_image: str, *,
                  ca_pin: str) -> list[dict[str, Any]]:
    """The kube agent's namespaced objects (ServiceAccount, ConfigMap, Deployment), in
    creation order; none unless ``spec.kube.enabled``. ``ca_pin``: the TLS CA's pin, checked
    when it joins. The cluster-scoped RBAC: :func:`kube_rbac`."""
    if not kube_enabled(body):
        return []
    image = (cluster_spec(body).get("kube") or {}).get("image") or default_image
    agent = _workload(body)
    return [_service_account(body), agent_config_map(body, agent),
            agent_deployment(body, agent, str(image), ca_pin)]
