"""The ConfigMap and Deployment of an agent a Cluster runs (db agents, the kube agent): pure,
dicts in, dicts out.

::

    AgentWorkload(component, names, replicas, config, service_account)
        ──▶ agent_config_map()   ConfigMap <config_map>: the agent's limen.yaml
        ──▶ agent_deployment()   Deployment <deployment>: ``limen start --config ... --roles
                                 <component> --proxy <proxy Service>:3080 --ca-pin <pin>``, the
                                 join token in LIMEN_TOKEN (from <token_secret>), probes on
                                 the component's diag port, a read-only root with emptyDirs
                                 for the data volume and /tmp; the config's hash on the pod
                                 template, so a changed config rolls the pods

An agent with no ``service_account`` gets no Kubernetes credential at all
(``automountServiceAccountToken: false``). Called by ``limen.operator.db_agent`` and
``limen.operator.kube_agent``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from limen.operator.availability import diag_args, diag_port, liveness_probe, readiness_probe
from limen.operator.cluster_builders import (
    CONFIG_DIR,
    CONFIG_HASH_ANNOTATION,
    DATA_DIR,
    TOKEN_KEY,
    child_metadata,
    common_labels,
    container_security_context,
    default_resources,
    pod_security_context,
    pod_selector,
    proxy_web_address,
    scratch_env,
    scratch_mounts,
    tmp_volume,
)

__all__ = ["AgentWorkload", "agent_config_map", "agent_deployment"]


@dataclass(frozen=True)
class AgentWorkload:
    """What differs between the agents' workloads."""

    component: str
    """The ``--roles`` value, the pods' component label and the diag port's owner."""
    deployment: str
    config_map: str
    token_secret: str
    replicas: int
    config: Mapping[str, Any]
    """The agent's ``limen.yaml``."""
    service_account: str | None = None
    """The ServiceAccount whose token is mounted (None: the agent never calls Kubernetes)."""

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()[:16]


def agent_config_map(body: Mapping[str, Any], agent: AgentWorkload) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": child_metadata(body, agent.config_map, agent.component),
            "data": {"limen.yaml": yaml.safe_dump(dict(agent.config), sort_keys=True)}}


def _container(body: Mapping[str, Any], agent: AgentWorkload, image: str,
               ca_pin: str) -> dict[str, Any]:
    return {
        "name": agent.component, "image": image,
        "args": ["start", "--config", f"{CONFIG_DIR}/limen.yaml", "--data-dir", DATA_DIR,
                 "--roles", agent.component, "--proxy", proxy_web_address(body),
                 "--ca-pin", ca_pin, *diag_args(agent.component)],
        "env": [*scratch_env(), {"name": "LIMEN_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": agent.token_secret, "key": TOKEN_KEY}}}],
        "ports": [diag_port(agent.component)],
        "readinessProbe": readiness_probe(agent.component),  # a tunnel to a proxy is up
        "livenessProbe": liveness_probe(),
        "resources": default_resources(agent.component),
        "volumeMounts": [{"name": "config", "mountPath": f"{CONFIG_DIR}/limen.yaml",
                          "subPath": "limen.yaml", "readOnly": True},
                         *scratch_mounts()],
        "securityContext": container_security_context(),
    }


def agent_deployment(body: Mapping[str, Any], agent: AgentWorkload, image: str,
                     ca_pin: str) -> dict[str, Any]:
    pod: dict[str, Any] = {"securityContext": pod_security_context()}
    if agent.service_account:
        pod["serviceAccountName"] = agent.service_account
    pod["automountServiceAccountToken"] = agent.service_account is not None
    pod["containers"] = [_container(body, agent, image, ca_pin)]
    pod["volumes"] = [{"name": "config", "configMap": {"name": agent.config_map}},
                      {"name": "data", "emptyDir": {}}, tmp_volume()]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": child_metadata(body, agent.deployment, agent.component),
        "spec": {
            "replicas": agent.replicas,
            "strategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": pod_selector(body, agent.component)},
            "template": {
                "metadata": {"labels": common_labels(body, agent.component),
                             "annotations": {CONFIG_HASH_ANNOTATION: agent.config_hash()}},
                "spec": pod,
            },
        },
    }
