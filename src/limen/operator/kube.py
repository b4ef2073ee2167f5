"""The Kubernetes API calls of the Cluster handler: plain JSON objects over the synchronous
``kubernetes`` client, every call in a worker thread (the event loop never blocks).

Objects go in and come out as dicts (no generated models: what the API server stores is what
the handler sees). Writes are create, JSON merge patch and delete; reads return None for 404.
Credentials: in-cluster service account, else the kubeconfig (``KUBECONFIG``), as kopf itself.

Only ``limen.operator`` imports ``kubernetes``. Called by ``limen.operator.cluster``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes

__all__ = ["KubeApi", "KubeError", "login", "object_path"]

_GROUPS = {
    "Secret": ("v1", "secrets"), "ConfigMap": ("v1", "configmaps"),
    "Service": ("v1", "services"), "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),
    "Deployment": ("apps/v1", "deployments"), "Cluster": ("limen.dev/v1alpha1", "clusters"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "clusterroles"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "clusterrolebindings"),
}
_CLUSTER_SCOPED = frozenset({"ClusterRole", "ClusterRoleBinding"})


class KubeError(Exception):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def object_path(kind: str, namespace: str, name: str | None = None) -> str:
    """``/api/v1/namespaces/NS/secrets[/NAME]`` or ``/apis/apps/v1/...`` for a known kind;
    a cluster-scoped kind (ClusterRole, ClusterRoleBinding) ignores ``namespace``."""
    api_version, plural = _GROUPS[kind]
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{root}/{plural}" if kind in _CLUSTER_SCOPED else \
        f"{root}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class KubeApi:
    """A few verbs on objects of the kinds above, as dicts."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    async def connect(cls) -> KubeApi:
        return cls(await asyncio.to_thread(_new_client))

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", object_path(kind, namespace, name))
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return await self._request("POST", object_path(obj["kind"], meta.get("namespace", "")),
                                   obj)

    async def merge_patch(self, kind: str, namespace: str, name: str,
                          patch: Mapping[str, Any], *, subresource: str = "") -> dict[str, Any]:
        path = object_path(kind, namespace, name) + (f"/{subresource}" if subresource else "")
        return await self._request("PATCH", path, patch,
                                   content_type="application/merge-patch+json")

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self._request("DELETE", object_path(kind, namespace, name))
        except KubeError as err:
            if err.status != 404:
                raise

    async def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                       *, content_type: str = "application/json") -> dict[str, Any]:
        return await asyncio.to_thread(self._call, method, path, body, content_type)

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None,
              content_type: str) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self._client.param_serialize(
            method=method, resource_path=path, header_params=headers,
            body=dict(body) if body is not None else None, auth_settings=["BearerToken"])
        try:
            response = self._client.call_api(*request, _request_timeout=30)
            data = response.read()
        except kubernetes.client.exceptions.ApiException as err:
            raise KubeError(int(err.status or 0), f"{method} {path}: {err.reason}") from None
        except OSError as err:
            raise KubeError(0, f"{method} {path}: {err}") from None
        if not 200 <= response.status < 300:
            raise KubeError(response.status, f"{method} {path}: HTTP {response.status} "
                                             f"{_message(data)}")
        decoded = json.loads(data) if data else {}
        return decoded if isinstance(decoded, dict) else {}


def _message(data: bytes | None) -> str:
    try:
        return str(json.loads(data or b"{}").get("message", ""))
    except (ValueError, AttributeError):
        return ""


def _kubeconfig() -> str:
    """The kubeconfig named by ``KUBECONFIG`` now (the client library reads it at import)."""
    return os.environ.get("KUBECONFIG", "~/.kube/config")


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's login: the pod's service account, else the kubeconfig (exec plugins and
    auth providers included, through the client library)."""
    info = kopf.login_with_service_account(**kwargs)
    if info is not None:
        return info
    kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = _kubeconfig()
    return kopf.login_via_client(**kwargs)


def _new_client() -> Any:
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=_kubeconfig(), client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration=configuration)
