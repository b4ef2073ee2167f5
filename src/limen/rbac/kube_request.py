"""What a Kubernetes API request asks for: verb, resource, namespace, name — from its method,
path and query, as the kube-apiserver's RequestInfoFactory reads them.

::

    GET    /api/v1/namespaces/dev/pods              list pods in dev
    GET    /api/v1/namespaces/dev/pods?watch=true   watch pods in dev
    GET    /api/v1/watch/namespaces/dev/pods        watch (the legacy prefix)
    GET    /apis/apps/v1/namespaces/dev/deployments/web   get deployment web
    POST   /api/v1/namespaces/dev/pods/web/exec     exec   (subresource exec: verb exec)
    GET    /api/v1/namespaces/dev                   get namespace dev (namespace = name = dev)
    GET    /api/v1/nodes                            list nodes (cluster-scoped: namespace "")
    GET    /version, /api, /apis/apps/v1, /openapi  discovery: no resource

Verbs: ``get``, ``list``, ``watch``, ``create``, ``update``, ``patch``, ``delete``,
``deletecollection``; the pod subresources ``exec``, ``attach`` and ``portforward`` are their
own verbs (``pods/log`` stays ``get``). A path segment that percent-decodes to something
containing ``/`` or that is ``.``/``..`` is refused (:class:`BadParameter`): what RBAC decides
on must be what the API server serves. Pure; called by the kube agent for every request
(``limen.agents.kube``) before :mod:`limen.rbac.kube_resources` decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from limen.errors import BadParameter

__all__ = ["UPGRADE_VERBS", "KubeRequestInfo", "request_info"]

UPGRADE_VERBS = frozenset({"exec", "attach", "portforward"})
"""Pod subresources that are verbs of their own (the upgraded streaming protocols)."""
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True)
class KubeRequestInfo:
    verb: str
    """The Kubernetes verb (``get``, ``list``, ``watch``, ``exec`` ...); for a request that
    names no resource, the lower-case HTTP method."""
    resource: str = ""
    """Plural resource name (``pods``); empty for discovery and other non-resource paths."""
    subresource: str = ""
    namespace: str = ""
    """Empty for cluster-scoped resources."""
    name: str = ""
    api_group: str = ""
    api_version: str = ""
    path: str = ""

    @property
    def is_resource_request(self) -> bool:
        return bool(self.resource)

    def describe(self) -> str:
        """``list pods in dev``, ``exec pods/web in dev`` — for reasons users read."""
        if not self.resource:
            return f"{self.verb} {self.path}"
        what = self.resource + (f"/{self.name}" if self.name else "")
        if self.subresource and self.verb not in UPGRADE_VERBS:
            what += f"/{self.subresource}"
        return f"{self.verb} {what}" + (f" in {self.namespace}" if self.namespace else "")


def _segments(path: str) -> list[str]:
    out = []
    for raw in path.split("/"):
        if not raw:
            continue
        part = unquote(raw)
        if "/" in part or part in (".", "..") or any(ord(c) < 0x20 for c in part):
            raise BadParameter(f"invalid path segment {raw[:64]!r} in a Kubernetes request")
        out.append(part)
    return out


def _flag(query: Mapping[str, Sequence[str]], name: str) -> bool:
    return any(v.lower() in ("true", "1") for v in query.get(name, ()))


def request_info(method: str, path: str,
                 query: Mapping[str, Sequence[str]] | None = None) -> KubeRequestInfo:
    """The request info of ``method path?query`` (``path`` without the query string)."""
    method = method.upper()
    query = query or {}
    parts = _segments(path)
    plain = KubeRequestInfo(verb=method.lower(), path=path)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return plain
    if parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 4:
            return plain
        group, version, rest = parts[1], parts[2], parts[3:]
    watch = False
    if rest and rest[0] == "watch":
        watch, rest = True, rest[1:]
        if not rest:
            return plain
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 2:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if method in ("GET", "HEAD"):
        verb = "get" if name else "list"
        if watch or (not name and _flag(query, "watch")):
            verb = "watch"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    elif method in _METHOD_VERBS:
        verb = _METHOD_VERBS[method]
    else:
        verb = method.lower()
    if resource == "pods" and subresource in UPGRADE_VERBS:
        verb = subresource
    return KubeRequestInfo(verb=verb, resource=resource, subresource=subresource,
                           namespace=namespace, name=name, api_group=group,
                           api_version=version, path=path)
