"""The Kubernetes objects a Cluster owns, built from its spec (pure: dicts in, dicts out).

For a Cluster ``main`` in namespace ``limen``::

    Secret     main-ca            the CAs (ca_secret.py; created once, never rebuilt here)
    Secret     main-proxy-token   the static token proxies join with (created once, never
                                  rebuilt: proxy_token_secret)
    Secret     main-db-token      the static token db agents join with (likewise:
                                  db_token_secret)
    Secret     main-kube-token    the static token the kube agent joins with (likewise:
                                  limen.operator.kube_agent.kube_token_secret)
    Secret     main-ca-key        PostgreSQL only: the key encrypting the CA private keys in
                                  the database (created once: limen.operator.cluster_backend)
    ConfigMap  main-config        limen.yaml for auth and proxy (auth.server_names: the auth
                                  Service's DNS names; auth.proxy_server_names: the proxy
                                  Service's; auth.proxy_token_file, auth.db_token_file,
                                  auth.kube_token_file;
                                  PostgreSQL: backend {type, dsn_file, ca_key_file})
    PVC        main-auth-data     SQLite only: auth's backend and audit log (in its data/)
    Deployment main-auth          limen start --roles auth (init: limen operator seed-ca),
                                  the proxy, db and kube token Secrets mounted; SQLite: one pod,
                                  Recreate; PostgreSQL: spec.auth.replicas pods, rolling,
                                  spread over nodes, the DSN and CA key Secrets mounted
    Service    main-auth          ClusterIP, 3025 (the auth API: a client certificate
                                  required) and 3027 (the join listener: /v1/join and
                                  /v1/ready only)
    Deployment main-proxy         limen start --roles proxy, joining auth's join listener
                                  (LIMEN_AUTH_JOIN) with LIMEN_TOKEN (from main-proxy-token)
                                  and LIMEN_CA_PIN (the TLS CA's pin), then calling the auth
                                  API (LIMEN_AUTH_SERVER) with the certificate it got
    Service    main-proxy         spec.proxy.service_type: web 3080, ssh 3023, tunnel 3024,
                                  postgres 5433, mysql 3036 (the database fronts), kube 3026
                                  (the Kubernetes front: kubectl through Limen)
    ConfigMap  main-db-config     spec.db.replicas > 0: the db agents (limen.operator.db_agent)
    Deployment main-db
    ...        main-kube, ...     spec.kube.enabled: the kube agent, its ServiceAccount and
                                  impersonation-only RBAC (limen.operator.kube_agent)
    PDB        main-auth, main-proxy   when that Deployment runs more than one pod:
                                  maxUnavailable 1 (limen.operator.availability)

Every pod passes Pod Security "restricted" and runs with a read-only root filesystem: uid/gid
10001, fsGroup 10001, seccomp RuntimeDefault, no privilege escalation, no capability, no
service account token; a ``tmp`` emptyDir at /tmp (``TMPDIR``); its data volume (auth: the PVC,
the others: an emptyDir) at ``/var/lib/limen``, in which limen makes its data directory
``/var/lib/limen/data`` (0700, its own: the volume's root belongs to root, group 10001).
Default resource requests unless ``spec.<component>.resources``. Every container runs the
diagnostics listener (``--diag-addr``, container port ``diag``: auth 3000, proxy 3001, db
3002; plain HTTP, /metrics for Prometheus); liveness: ``GET /healthz``, readiness: ``GET
/readyz`` (auth: its backend and CAs, gitops left out; the proxy: auth and its listeners;
``limen.operator.availability``). Run for real, as a kubelet would:
tests/integration/test_operator_pods_run.py (SQLite) and test_operator_pods_ha.py (two auth
pods on PostgreSQL).

Every object carries a controller ``ownerReference`` to the Cluster (Kubernetes' garbage
collector deletes them with it) and the ``app.kubernetes.io/*`` labels. A spec change changes
the pod templates (replicas, image, resources, and the ``limen.dev/config-hash`` annotation),
which rolls the pods; ``limen.dev/ca-revision`` rolls auth after a CA rotation, and a new TLS
CA pin rolls the proxies.

Called by ``limen.operator.cluster`` and ``limen.operator.db_agent``; tested on its own.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from limen.api.resources import API_GROUP, API_VERSION
from limen.api.schemas import with_defaults
from limen.operator.availability import (
    diag_args,
    diag_port,
    disruption_budget,
    liveness_probe,
    readiness_probe,
    spread_by_host,
)
from limen.operator.cluster_backend import (
    PostgresRef,
    auth_replicas,
    backend_config,
    backend_mounts,
    backend_volumes,
    postgres_ref,
)
from limen.operator.settings import REPORTING_COMPONENT

__all__ = [
    "CA_REVISION_ANNOTATION",
    "CONFIG_DIR",
    "CONFIG_HASH_ANNOTATION",
    "DATA_DIR",
    "DB_TOKEN_FILE",
    "DEFAULT_RESOURCES",
    "KUBE_TOKEN_FILE",
    "PORTS",
    "PROXY_PORTS",
    "PROXY_TOKEN_FILE",
    "TMP_DIR",
    "TOKEN_KEY",
    "VOLUME_DIR",
    "ClusterNames",
    "auth_address",
    "auth_join_address",
    "auth_server_names",
    "child_metadata",
    "children",
    "cluster_spec",
    "common_labels",
    "container_security_context",
    "default_resources",
    "is_owned_by",
    "limen_config",
    "new_proxy_token",
    "owner_reference",
    "pod_security_context",
    "pod_selector",
    "proxy_server_names",
    "proxy_token_secret",
    "proxy_web_address",
    "readiness",
    "resources",
    "scratch_env",
    "scratch_mounts",
    "tmp_volume",
    "token_secret",
]

CONFIG_HASH_ANNOTATION = f"{API_GROUP}/config-hash"
CA_REVISION_ANNOTATION = f"{API_GROUP}/ca-revision"
VOLUME_DIR = "/var/lib/limen"
"""Where a pod's data volume is mounted (the limen user's home in the image)."""
DATA_DIR = f"{VOLUME_DIR}/data"
"""The data directory: one limen creates inside the volume (uid 10001, 0700). The volume's root
is not used for it: the kubelet gives it to root with group fsGroup (2775 on a PVC, 2777 for
an emptyDir), a mode limen can neither change nor accept for its keys (``limen.files``)."""
TMP_DIR = "/tmp"  # noqa: S108 - an emptyDir of the pod's own
"""Every container's scratch space (an emptyDir; ``TMPDIR``): the root filesystem is
read-only, and Python, SQLite and git want a writable temporary directory."""
CONFIG_DIR = "/etc/limen"
CA_DIR = "/etc/limen/ca"
PROXY_TOKEN_DIR = "/etc/limen/proxy-token"
TOKEN_KEY = "token"
"""The key of the token in the proxy and db token Secrets."""
PROXY_TOKEN_FILE = f"{PROXY_TOKEN_DIR}/{TOKEN_KEY}"
"""Where the auth pod reads the proxy token (``auth.proxy_token_file``)."""
DB_TOKEN_DIR = "/etc/limen/db-token"
DB_TOKEN_FILE = f"{DB_TOKEN_DIR}/{TOKEN_KEY}"
"""Where the auth pod reads the db agents' token (``auth.db_token_file``)."""
KUBE_TOKEN_DIR = "/etc/limen/kube-token"
KUBE_TOKEN_FILE = f"{KUBE_TOKEN_DIR}/{TOKEN_KEY}"
"""Where the auth pod reads the kube agent's token (``auth.kube_token_file``)."""
PORTS = {"auth": 3025, "auth-join": 3027, "web": 3080, "ssh-proxy": 3023, "tunnel": 3024,
         "postgres": 5433, "mysql": 3036, "kube": 3026}
PROXY_PORTS = ("web", "ssh-proxy", "tunnel", "postgres", "mysql", "kube")
"""The proxy's container and Service ports (names of ``PORTS``)."""
_RUN_AS = 10001  # the image's limen user
DEFAULT_RESOURCES: dict[str, dict[str, Any]] = {
    "auth": {"requests": {"cpu": "100m", "memory": "256Mi"}},
    "proxy": {"requests": {"cpu": "100m", "memory": "192Mi"}},
    "db": {"requests": {"cpu": "50m", "memory": "128Mi"}},
    "kube": {"requests": {"cpu": "50m", "memory": "128Mi"}},
}
"""Requests of a component whose ``spec.<component>.resources`` is not given (its idle
footprint with some headroom: the scheduler places it, nothing is capped)."""


@dataclass(frozen=True)
class ClusterNames:
    """Names of a Cluster's children."""

    base: str

    @property
    def ca_secret(self) -> str:
        return f"{self.base}-ca"

    @property
    def config(self) -> str:
        return f"{self.base}-config"

    @property
    def data(self) -> str:
        return f"{self.base}-auth-data"

    @property
    def auth(self) -> str:
        return f"{self.base}-auth"

    @property
    def proxy(self) -> str:
        return f"{self.base}-proxy"

    @property
    def proxy_token(self) -> str:
        return f"{self.base}-proxy-token"

    @property
    def db(self) -> str:
        return f"{self.base}-db"

    @property
    def db_config(self) -> str:
        return f"{self.base}-db-config"

    @property
    def db_token(self) -> str:
        return f"{self.base}-db-token"

    @property
    def kube(self) -> str:
        return f"{self.base}-kube"

    @property
    def kube_config(self) -> str:
        return f"{self.base}-kube-config"

    @property
    def kube_token(self) -> str:
        return f"{self.base}-kube-token"

    @property
    def kube_agent_account(self) -> str:
        """The kube agent's ServiceAccount (the identity it calls its API server with)."""
        return f"{self.base}-kube-agent"

    @property
    def ca_key(self) -> str:
        return f"{self.base}-ca-key"


def cluster_spec(body: Mapping[str, Any]) -> dict[str, Any]:
    """The spec with the CRD's defaults filled in (as the API server would)."""
    return with_defaults("Cluster", dict(body.get("spec") or {}))


def cluster_name(body: Mapping[str, Any]) -> str:
    """The Limen cluster name: ``spec.cluster_name``, else ``metadata.name``."""
    return str((body.get("spec") or {}).get("cluster_name") or body["metadata"]["name"])


def common_labels(body: Mapping[str, Any], component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "limen",
        "app.kubernetes.io/instance": str(body["metadata"]["name"]),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "limen",
        "app.kubernetes.io/managed-by": REPORTING_COMPONENT,
    }


def pod_selector(body: Mapping[str, Any], component: str) -> dict[str, str]:
    labels = common_labels(body, component)
    return {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                                   "app.kubernetes.io/component")}


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": API_VERSION, "kind": "Cluster", "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def is_owned_by(obj: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """Does ``obj`` name the Cluster ``body`` as its controller?"""
    uid = body["metadata"]["uid"]
    return any(ref.get("uid") == uid and ref.get("controller")
               for ref in (obj.get("metadata") or {}).get("ownerReferences") or ())


def child_metadata(body: Mapping[str, Any], name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": body["metadata"]["namespace"],
            "labels": common_labels(body, component),
            "ownerReferences": [owner_reference(body)]}


# -- the auth Service's names and the proxy token ----------------------------------------------


def auth_server_names(body: Mapping[str, Any]) -> list[str]:
    """The DNS names of the auth Service (``<svc>``, ``<svc>.<ns>``, ``<svc>.<ns>.svc``,
    ``<svc>.<ns>.svc.cluster.local``): auth's certificate carries them so proxies verify it."""
    service, namespace = ClusterNames(body["metadata"]["name"]).auth, body["metadata"]["namespace"]
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local"]


def proxy_server_names(body: Mapping[str, Any]) -> list[str]:
    """The DNS names of the proxy Service (as :func:`auth_server_names`): the proxies'
    certificates carry them, so agents in the cluster join through the Service."""
    service, namespace = ClusterNames(body["metadata"]["name"]).proxy, body["metadata"]["namespace"]
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local"]


def proxy_web_address(body: Mapping[str, Any]) -> str:
    """``<svc>.<ns>.svc:3080``: the proxy's web port inside the cluster (agents join there)."""
    return f"{proxy_server_names(body)[2]}:{PORTS['web']}"


def auth_address(body: Mapping[str, Any]) -> str:
    """``<svc>.<ns>.svc:3025``: the auth API address proxies join and talk to."""
    return f"{auth_server_names(body)[2]}:{PORTS['auth']}"


def auth_join_address(body: Mapping[str, Any]) -> str:
    """``<svc>.<ns>.svc:3027``: auth's join listener, where a proxy joins with its token."""
    return f"{auth_server_names(body)[2]}:{PORTS['auth-join']}"


def new_proxy_token() -> str:
    """A fresh random proxy token (64 hex characters; auth wants 32 at least)."""
    return secrets.token_hex(32)


def token_secret(body: Mapping[str, Any], name: str, component: str,
                 token: str) -> dict[str, Any]:
    """A Secret holding a static join token under ``token``."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": child_metadata(body, name, component),
            "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()}}


def proxy_token_secret(body: Mapping[str, Any], token: str) -> dict[str, Any]:
    """The Secret holding the static token proxies join with (created once by the operator,
    never rewritten: a new token would lock out the running proxies)."""
    return token_secret(body, ClusterNames(body["metadata"]["name"]).proxy_token, "proxy", token)


# -- configuration -----------------------------------------------------------------------------


def limen_config(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``limen.yaml`` auth and the proxies run with (see ``limen.config``); the proxies'
    listeners, the database and Kubernetes fronts included, bind every interface of their
    pod."""
    spec = cluster_spec(body)
    config: dict[str, Any] = {
        "cluster": {"name": cluster_name(body), "second_factor": spec["second_factor"],
                    "public_address": spec["public_address"]},
        "listeners": {"web": f"0.0.0.0:{PORTS['web']}",
                      "ssh_proxy": f"0.0.0.0:{PORTS['ssh-proxy']}",
                      "tunnel": f"0.0.0.0:{PORTS['tunnel']}",
                      "postgres": f"0.0.0.0:{PORTS['postgres']}",
                      "mysql": f"0.0.0.0:{PORTS['mysql']}",
                      "kube": f"0.0.0.0:{PORTS['kube']}",
                      "auth": f"0.0.0.0:{PORTS['auth']}",
                      "auth_join": f"0.0.0.0:{PORTS['auth-join']}"},
        "auth": {"server_names": auth_server_names(body),
                 "proxy_server_names": proxy_server_names(body),
                 "proxy_token_file": PROXY_TOKEN_FILE,
                 "db_token_file": DB_TOKEN_FILE,
                 "kube_token_file": KUBE_TOKEN_FILE},
    }
    if postgres_ref(spec) is not None:
        config["backend"] = backend_config()
    gitops = spec.get("gitops")
    if gitops:
        config["gitops"] = {"source": gitops["repo"]}
        for src, dst in (("branch", "branch"), ("path", "path"), ("poll_interval", "interval")):
            if gitops.get(src):
                config["gitops"][dst] = gitops[src]
        ref = gitops.get("credentials_ref") or {}
        if ref.get("file"):
            config["gitops"]["credentials_file"] = ref["file"]
        elif ref.get("secret"):
            config["gitops"]["credentials_file"] = f"{CONFIG_DIR}/gitops/{ref['key']}"
    return config


def config_map(body: Mapping[str, Any]) -> dict[str, Any]:
    text = yaml.safe_dump(limen_config(body), sort_keys=True)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": child_metadata(body, ClusterNames(body["metadata"]["name"]).config,
                                       "config"),
            "data": {"limen.yaml": text}}


def config_hash(body: Mapping[str, Any]) -> str:
    text = json.dumps(limen_config(body), sort_keys=True).encode()
    return hashlib.sha256(text).hexdigest()[:16]


# -- workloads ---------------------------------------------------------------------------------


def _volumes(body: Mapping[str, Any], *, auth: bool) -> list[dict[str, Any]]:
    names = ClusterNames(body["metadata"]["name"])
    spec = cluster_spec(body)
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names.config}},
    ]
    postgres = postgres_ref(spec)
    if auth:
        volumes.append({"name": "ca", "secret": {"secretName": names.ca_secret,
                                                 "defaultMode": 0o400}})
        volumes.append({"name": "data", "emptyDir": {}} if postgres else
                       {"name": "data", "persistentVolumeClaim": {"claimName": names.data}})
        if postgres:
            volumes.extend(backend_volumes(postgres, names.ca_key))
        volumes.append({"name": "proxy-token", "secret": {"secretName": names.proxy_token,
                                                          "defaultMode": 0o400}})
        volumes.append({"name": "db-token", "secret": {"secretName": names.db_token,
                                                       "defaultMode": 0o400}})
        volumes.append({"name": "kube-token", "secret": {"secretName": names.kube_token,
                                                         "defaultMode": 0o400}})
        ref = (spec.get("gitops") or {}).get("credentials_ref") or {}
        if ref.get("secret"):
            volumes.append({"name": "gitops", "secret": {"secretName": ref["secret"],
                                                         "defaultMode": 0o400}})
    else:
        volumes.append({"name": "data", "emptyDir": {}})
    volumes.append(tmp_volume())
    return volumes


def tmp_volume() -> dict[str, Any]:
    """The emptyDir every Limen pod mounts at :data:`TMP_DIR`."""
    return {"name": "tmp", "emptyDir": {}}


def scratch_mounts() -> list[dict[str, Any]]:
    """The data volume at :data:`VOLUME_DIR` (``DATA_DIR`` is made in it) and the tmp one."""
    return [{"name": "data", "mountPath": VOLUME_DIR},
            {"name": "tmp", "mountPath": TMP_DIR}]


def scratch_env() -> list[dict[str, Any]]:
    """``TMPDIR``: every container's temporary files go to its tmp emptyDir. ``USER``: the
    SSH client of an agent's tunnel (asyncssh) asks for the local user name, which a uid
    without a passwd entry has not (a runtime's random uid, as OpenShift's; a kubelet run on
    a host without the image's user): the db agent never got its tunnel there."""
    return [{"name": "TMPDIR", "value": TMP_DIR}, {"name": "USER", "value": "limen"}]


def resources(body: Mapping[str, Any], component: str) -> dict[str, Any]:
    """``spec.<component>.resources`` of auth or the proxy, else the default requests."""
    given = (cluster_spec(body).get(component) or {}).get("resources")
    return copy.deepcopy(dict(given)) if given else default_resources(component)


def default_resources(component: str) -> dict[str, Any]:
    """:data:`DEFAULT_RESOURCES` of ``component`` (a copy)."""
    return copy.deepcopy(DEFAULT_RESOURCES[component])


def _mounts(body: Mapping[str, Any], *, auth: bool) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [{"name": "config", "mountPath": f"{CONFIG_DIR}/limen.yaml",
                                     "subPath": "limen.yaml", "readOnly": True},
                                    *scratch_mounts()]
    if auth:
        mounts.append({"name": "proxy-token", "mountPath": PROXY_TOKEN_DIR, "readOnly": True})
        mounts.append({"name": "db-token", "mountPath": DB_TOKEN_DIR, "readOnly": True})
        mounts.append({"name": "kube-token", "mountPath": KUBE_TOKEN_DIR, "readOnly": True})
        mounts.extend(_backend_mounts(body))
    ref = ((cluster_spec(body).get("gitops") or {}).get("credentials_ref") or {})
    if auth and ref.get("secret"):
        mounts.append({"name": "gitops", "mountPath": f"{CONFIG_DIR}/gitops", "readOnly": True})
    return mounts


def _backend_mounts(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """PostgreSQL: the DSN and CA key Secrets (auth and its init container); SQLite: none."""
    return backend_mounts() if _postgres(body) is not None else []


def _postgres(body: Mapping[str, Any]) -> PostgresRef | None:
    return postgres_ref(cluster_spec(body))


def _join_env(body: Mapping[str, Any], ca_pin: str) -> list[dict[str, Any]]:
    """How a proxy pod joins auth: the auth Service (API and join listener), the token
    Secret, the TLS CA's pin; and the pod's own IP as the host agents dial its tunnel
    listener at (each replica announces its own: an agent holds a tunnel to every one, and
    its data connections must reach the replica that asked, not any behind the Service)."""
    return [{"name": "LIMEN_TUNNEL_HOST",
             "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "LIMEN_AUTH_SERVER", "value": auth_address(body)},
            {"name": "LIMEN_AUTH_JOIN", "value": auth_join_address(body)},
            {"name": "LIMEN_CA_PIN", "value": ca_pin},
            {"name": "LIMEN_TOKEN", "valueFrom": {"secretKeyRef": {
                "name": ClusterNames(body["metadata"]["name"]).proxy_token,
                "key": TOKEN_KEY}}}]


def pod_security_context() -> dict[str, Any]:
    """Every Limen pod: not root (the image's limen user and group); volumes writable by its
    group; the container runtime's default seccomp profile (Pod Security "restricted")."""
    return {"runAsNonRoot": True, "runAsUser": _RUN_AS, "runAsGroup": _RUN_AS,
            "fsGroup": _RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context() -> dict[str, Any]:
    """Every Limen container: no privilege escalation, no capability, a read-only root."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}}


def _container(body: Mapping[str, Any], component: str, image: str,
               ports: Mapping[str, int], ca_pin: str) -> dict[str, Any]:
    auth = component == "auth"
    return {
        "name": component, "image": image,
        "args": ["start", "--config", f"{CONFIG_DIR}/limen.yaml", "--data-dir", DATA_DIR,
                 "--roles", component, *diag_args(component)],
        "env": scratch_env() + ([] if auth else _join_env(body, ca_pin)),
        "ports": [*({"name": name, "containerPort": port} for name, port in ports.items()),
                  diag_port(component)],
        "readinessProbe": readiness_probe(component),
        "livenessProbe": liveness_probe(),
        "resources": resources(body, component),
        "volumeMounts": _mounts(body, auth=auth),
        "securityContext": container_security_context(),
    }


def _deployment(body: Mapping[str, Any], component: str, image: str, replicas: int,
                ports: Mapping[str, int], annotations: Mapping[str, str],
                ca_pin: str = "") -> dict[str, Any]:
    names = ClusterNames(body["metadata"]["name"])
    auth = component == "auth"
    pod: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,  # neither calls Kubernetes
        "containers": [_container(body, component, image, ports, ca_pin)],
        "volumes": _volumes(body, auth=auth),
    }
    if auth:
        pod["initContainers"] = [{
            "name": "seed-ca", "image": image,
            "args": ["operator", "seed-ca", "--ca-dir", CA_DIR, "--data-dir", DATA_DIR,
                     "--config", f"{CONFIG_DIR}/limen.yaml"],
            "env": scratch_env(),
            "resources": resources(body, component),
            "volumeMounts": [{"name": "ca", "mountPath": CA_DIR, "readOnly": True},
                             {"name": "config", "mountPath": f"{CONFIG_DIR}/limen.yaml",
                              "subPath": "limen.yaml", "readOnly": True},
                             *scratch_mounts(), *_backend_mounts(body)],
            "securityContext": container_security_context(),
        }]
    # SQLite has one writer: never two auth pods on the volume, even during a rollout
    single_writer = auth and _postgres(body) is None
    if not single_writer:
        pod["affinity"] = spread_by_host(pod_selector(body, component))
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": child_metadata(body, names.auth if auth else names.proxy, component),
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"} if single_writer else {"type": "RollingUpdate"},
            "selector": {"matchLabels": pod_selector(body, component)},
            "template": {"metadata": {"labels": common_labels(body, component),
                                      "annotations": dict(annotations)},
                         "spec": pod},
        },
    }


def _service(body: Mapping[str, Any], component: str, service_type: str,
             ports: Mapping[str, int]) -> dict[str, Any]:
    names = ClusterNames(body["metadata"]["name"])
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": child_metadata(body, names.auth if component == "auth" else names.proxy,
                                   component),
        "spec": {"type": service_type, "selector": pod_selector(body, component),
                 "ports": [{"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
                           for name, port in ports.items()]},
    }


def _data_claim(body: Mapping[str, Any]) -> dict[str, Any]:
    names = ClusterNames(body["metadata"]["name"])
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": child_metadata(body, names.data, "auth"),
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}


def _budget(body: Mapping[str, Any], component: str) -> dict[str, Any]:
    names = ClusterNames(body["metadata"]["name"])
    return disruption_budget(
        child_metadata(body, names.auth if component == "auth" else names.proxy, component),
        pod_selector(body, component))


def children(body: Mapping[str, Any], default_image: str, ca_revision: int, *,
             ca_pin: str) -> list[dict[str, Any]]:
    """Every owned object except the Secrets (created once, elsewhere), in creation order.
    ``ca_pin`` is the ``sha256:`` pin of the cluster's TLS CA (the proxies check auth with it
    when they join)."""
    spec = cluster_spec(body)
    auth_ports = {k: PORTS[k] for k in ("auth", "auth-join")}
    proxy_ports = {k: PORTS[k] for k in PROXY_PORTS}
    annotations = {CONFIG_HASH_ANNOTATION: config_hash(body)}
    auth_spec, proxy_spec = spec.get("auth") or {}, spec.get("proxy") or {}
    postgres = postgres_ref(spec) is not None
    # SQLite: one auth replica (limen.operator.cluster refuses more before building anything)
    replicas = {"auth": auth_replicas(spec) if postgres else 1,
                "proxy": int(proxy_spec.get("replicas", 1))}
    objects = [config_map(body)]
    if not postgres:
        objects.append(_data_claim(body))
    objects += [
        _deployment(body, "auth", auth_spec.get("image") or default_image, replicas["auth"],
                    auth_ports, {**annotations, CA_REVISION_ANNOTATION: str(ca_revision)}),
        _service(body, "auth", "ClusterIP", auth_ports),
        _deployment(body, "proxy", proxy_spec.get("image") or default_image,
                    replicas["proxy"], proxy_ports, annotations, ca_pin),
        _service(body, "proxy", str(proxy_spec.get("service_type", "ClusterIP")), proxy_ports),
    ]
    objects += [_budget(body, component) for component in ("auth", "proxy")
                if replicas[component] > 1]
    return objects


def readiness(deployment: Mapping[str, Any] | None) -> tuple[int, int]:
    """(ready, wanted) replicas of a Deployment, counting only pods of its current spec."""
    if not deployment:
        return 0, 0
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    status = deployment.get("status") or {}
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return 0, wanted
    ready = min(int(status.get("readyReplicas") or 0), int(status.get("updatedReplicas") or 0))
    return ready, wanted
