"""The Kubernetes API URL shapes the emulator serves, parsed without kmock's private parser.

Used by ``apiserver.py`` to route every request that is not discovery: ``/api/VERSION/...``
(the core group) and ``/apis/GROUP/VERSION/...``, then an optional legacy ``watch/`` prefix,
an optional ``namespaces/NAMESPACE/``, the resource's plural, a name and a subresource::

    /api/v1/namespaces                                   namespaces (cluster-scoped list)
    /api/v1/namespaces/team                              the namespace "team"
    /api/v1/namespaces/team/status                       its status subresource
    /api/v1/namespaces/team/secrets/s                    a namespaced object
    /apis/limen.dev/v1alpha1/watch/namespaces/a/roles    the legacy watch form

Only the shape is parsed here: whether the type exists, is namespaced or has the subresource
is the API server's decision (``KubeAPIEmulator._route``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ResourcePath", "parse_resource_path", "segments"]


@dataclass(frozen=True, kw_only=True)
class ResourcePath:
    """One request path: ``group`` is ``""`` for the core group; ``subresource`` may hold
    several segments joined with ``/`` (the server answers 404 for all but ``status``)."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch: bool = False


def segments(path: str) -> list[str]:
    """The non-empty segments of a URL path (``//`` and a trailing ``/`` count for nothing)."""
    return [part for part in path.split("/") if part]


def parse_resource_path(path: str) -> ResourcePath | None:
    """The resource a path names, or None when it names none (the server answers 404)."""
    parts = segments(path)
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch = rest[0] == "watch"
    if watch:
        rest = rest[1:]
    namespace = None
    # /api/v1/namespaces/NAME/status is the namespace's own status, not a namespaced "status"
    namespace_status = group == "" and len(rest) == 3 and rest[2] == "status"
    if len(rest) >= 3 and rest[0] == "namespaces" and not namespace_status:
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    return ResourcePath(
        group=group,
        version=version,
        plural=rest[0],
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource="/".join(rest[2:]) or None,
        watch=watch,
    )
