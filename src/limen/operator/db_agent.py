"""The db agents a Cluster runs for database access (pure: dicts in, dicts out).

``spec.db: {replicas: N, resources: [{labels: {k: v}}], image: ...}``. For a Cluster ``main``
in namespace ``limen``::

    Secret     main-db-token   the static token db agents join with (created once by
                               ``limen.operator.cluster`` whatever spec.db says, never
                               rebuilt; auth reads it from ``auth.db_token_file``)
    ConfigMap  main-db-config  the agents' limen.yaml: ``db.resources``, the selectors over the
                               cluster's Resources of ``spec.kind: db`` (default: all of them)
    Deployment main-db         spec.db.replicas > 0: ``limen start --roles db --proxy
                               main-proxy.limen.svc:3080 --ca-pin <TLS CA pin>``, the token
                               in LIMEN_TOKEN (from main-db-token); a read-only root with
                               emptyDirs for the data volume (DATA_DIR made in it) and /tmp
                               (TMPDIR); default requests (cluster_builders.DEFAULT_RESOURCES);
                               no liveness probe: it listens on nothing (its tunnel redials
                               by itself), and an exec probe would start Python every period

The agents join through the proxy Service (its names are in the proxies' certificates:
``auth.proxy_server_names``), dial their reverse tunnel to it, and serve the matching db
Resources to the proxy's PostgreSQL (5433) and MySQL (3036) fronts. With ``replicas: 0`` (the
default) nothing is created; an agent Deployment created before is scaled to 0, not deleted
(the operator deletes nothing). Called by ``limen.operator.cluster``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from limen.errors import BadParameter
from limen.operator.agent_workload import AgentWorkload, agent_config_map, agent_deployment
from limen.operator.cluster_builders import ClusterNames, cluster_spec, token_secret
from limen.rbac.labels import compile_selector, normalize_label_map

__all__ = ["ALL_DB_RESOURCES", "db_agent_config", "db_children", "db_replicas",
           "db_selector_problem", "db_token_secret"]

COMPONENT = "db"
ALL_DB_RESOURCES: list[dict[str, Any]] = [{"labels": {"*": "*"}}]
"""The agents' selectors when ``spec.db.resources`` is not given: every db Resource."""


def db_replicas(body: Mapping[str, Any]) -> int:
    """``spec.db.replicas`` (0, no agent, when ``spec.db`` is absent)."""
    return int((cluster_spec(body).get("db") or {}).get("replicas", 0))


def _selectors(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    db = cluster_spec(body).get("db") or {}
    if "resources" not in db:
        return [dict(s) for s in ALL_DB_RESOURCES]
    return [{"labels": dict(s.get("labels") or {})} for s in db["resources"]]


def db_selector_problem(body: Mapping[str, Any]) -> str | None:
    """Why ``spec.db.resources`` cannot be the agents' selectors (the check the agent makes
    at start, made before anything is deployed), or None."""
    for index, selector in enumerate(_selectors(body)):
        field = f"spec.db.resources[{index}].labels"
        try:
            compile_selector(list(normalize_label_map(selector["labels"], field).items()), field)
        except BadParameter as err:
            return str(err) if str(err).startswith(field) else f"{field}: {err}"
    return None


def db_agent_config(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``limen.yaml`` of the db agents (``limen.config``: the ``db`` section)."""
    return {"db": {"resources": _selectors(body)}}


def db_token_secret(body: Mapping[str, Any], token: str) -> dict[str, Any]:
    """The Secret holding the static token db agents join with (created once, never
    rewritten: a new token would stop the agents from joining again)."""
    return token_secret(body, ClusterNames(body["metadata"]["name"]).db_token, COMPONENT, token)


def _workload(body: Mapping[str, Any]) -> AgentWorkload:
    names = ClusterNames(body["metadata"]["name"])
    return AgentWorkload(COMPONENT, deployment=names.db, config_map=names.db_config,
                         token_secret=names.db_token, replicas=db_replicas(body),
                         config=db_agent_config(body))


def db_children(body: Mapping[str, Any], default_image: str, *,
                ca_pin: str) -> list[dict[str, Any]]:
    """The db agents' ConfigMap and Deployment, in creation order; none when
    ``spec.db.replicas`` is 0. ``ca_pin``: the TLS CA's pin, checked when they join."""
    if db_replicas(body) <= 0:
        return []
    image = (cluster_spec(body).get("db") or {}).get("image") or default_image
    agent = _workload(body)
    return [agent_config_map(body, agent), agent_deployment(body, agent, str(image), ca_pin)]
