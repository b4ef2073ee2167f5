"""The kube cluster a Kubernetes request names in its path: Limen's path prefix.

A kubeconfig ``lmsh kube login`` writes points kubectl at the proxy's kube front with a
server URL that carries the Limen cluster and the kube cluster (kubectl and client-go put
the URL's path before every API path, upgrades included)::

    https://proxy:3026/v1/limen/<base64url Limen cluster>/<base64url kube cluster>/api/v1/pods

Each name is unpadded base64url (RFC 4648 §5; padding is accepted) of its UTF-8 bytes, as
Teleport's ``/v1/teleport/<cluster>/<kube cluster>/`` prefix is, so any name fits one path
segment. The kube front routes by it (:mod:`limen.proxy.kube.kube_route`) and the kube agent
checks that it names its own cluster and removes it before the API server sees the request
(:mod:`limen.agents.kube.kube_service`). A path that starts with :data:`PATH_PREFIX` and does
not hold two valid names is malformed (:class:`~limen.errors.BadParameter`): a name that is
not base64url, empty, longer than :data:`MAX_NAME` bytes, not UTF-8, or holding a control
character, a space or a ``/``; a missing segment. Pure code; used by the proxy's kube front,
the kube agent and ``limen.client.kubeconfig``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from limen.errors import BadParameter

__all__ = ["MAX_NAME", "PATH_PREFIX", "KubePath", "check_name", "route_path", "split_target"]

PATH_PREFIX = "/v1/limen/"
MAX_NAME = 253
"""The most bytes of a cluster or kube cluster name (a DNS name's limit)."""
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_MAX_SEGMENT = 4 * ((MAX_NAME + 2) // 3)


@dataclass(frozen=True)
class KubePath:
    """The route a request path names: a Limen cluster and one of its kube clusters."""

    cluster: str
    kube: str


def check_name(name: str, what: str) -> str:
    """``name`` when it may be routed to (BadParameter saying why not)."""
    if not name:
        raise BadParameter(f"the {what} name is empty")
    if len(name.encode()) > MAX_NAME:
        raise BadParameter(f"the {what} name is longer than {MAX_NAME} bytes")
    if any(ord(c) < 0x21 or c in "/\x7f" for c in name):
        raise BadParameter(f"the {what} name {name[:64]!r} holds a space, a control "
                           "character or a '/'")
    return name


def _encode(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _decode(segment: str, what: str) -> str:
    if not segment:
        raise BadParameter(f"the path prefix names no {what}")
    if len(segment) > _MAX_SEGMENT:
        raise BadParameter(f"the path prefix's {what} is longer than {MAX_NAME} bytes")
    if not _B64URL.fullmatch(segment):
        raise BadParameter(f"the path prefix's {what} is not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise BadParameter(f"the path prefix's {what} is not base64url") from None
    try:
        name = raw.decode()
    except UnicodeDecodeError:
        raise BadParameter(f"the path prefix's {what} is not UTF-8") from None
    return check_name(name, what)


def route_path(cluster: str, kube: str) -> str:
    """The path prefix naming kube cluster ``kube`` of Limen cluster ``cluster`` (no
    trailing slash: the server URL's path)."""
    check_name(cluster, "cluster")
    check_name(kube, "kube cluster")
    return f"{PATH_PREFIX}{_encode(cluster)}/{_encode(kube)}"


def split_target(target: str) -> tuple[KubePath | None, str]:
    """The route a request target (path and query) names and the target without it
    (``/`` at least); ``None`` and the target as it is when it has no prefix. BadParameter
    when the prefix is malformed (see the module)."""
    path, question, query = target.partition("?")
    if not path.startswith(PATH_PREFIX):
        if path == PATH_PREFIX.rstrip("/"):
            raise BadParameter("the path prefix names no cluster")
        return None, target
    cluster, _slash, rest = path[len(PATH_PREFIX):].partition("/")
    cluster_name = _decode(cluster, "cluster")
    kube, _slash, rest = rest.partition("/")
    named = KubePath(cluster_name, _decode(kube, "kube cluster"))
    return named, "/" + rest + question + query
