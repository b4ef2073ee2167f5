"""What a request asks to do, as kube-apiserver's authorizers see it (``RequestInfo`` plus
the user: ``authorizer.Attributes``), and the ``403 Forbidden`` answer when refused.

Used by ``apiserver.py`` (every request is authorised from its :class:`Attributes`) and
``impersonation.py`` (the ``impersonate`` checks). Only the URL, method and query count, not
whether the resource exists: kube-apiserver authorises before it routes, so a user without
rights gets 403 even for a type that is not served.

Resource requests are ``/api/VERSION/...`` and ``/apis/GROUP/VERSION/...`` with a resource;
their verb is get/list/watch (GET: with or without a name, ``watch=true`` or the legacy
``/watch/`` prefix), create (POST), update (PUT), patch (PATCH), delete or deletecollection
(DELETE). A list, watch or deletecollection narrowed by ``fieldSelector=metadata.name=X`` is
authorised for the name X, as kube-apiserver does. Everything else (``/api``, ``/apis/GROUP``,
``/version``, ``/healthz``) is a non-resource request whose verb is the lower-case method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ApiError
from .paths import parse_resource_path, segments
from .users import UserInfo

__all__ = ["Attributes", "forbidden", "request_attributes"]

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True, kw_only=True)
class Attributes:
    """One authorisation question: may ``user`` do ``verb`` on this resource (or path)?"""

    user: UserInfo
    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


def _resource_path(path: str) -> bool:
    parts = segments(path)
    return (parts[:1] == ["api"] and len(parts) >= 3) or (parts[:1] == ["apis"] and len(parts) >= 4)


def request_attributes(
    user: UserInfo, method: str, path: str, query: Mapping[str, str]
) -> Attributes:
    """The attributes of one HTTP request (``query`` holds its first value per parameter)."""
    method = method.upper()
    parsed = parse_resource_path(path) if _resource_path(path) else None
    if parsed is None:
        return Attributes(user=user, verb=method.lower(), resource_request=False, path=path)
    name = parsed.name or ""
    namespace = parsed.namespace or ""
    if parsed.group == "" and parsed.plural == "namespaces" and name:
        namespace = name  # a namespace is authorised "in" itself
    if method in ("GET", "HEAD"):
        watching = parsed.watch or query.get("watch") in ("true", "1")
        verb = "watch" if watching else "get" if name else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _VERBS.get(method, method.lower())
    if verb in ("list", "watch", "deletecollection") and not name:
        for term in (query.get("fieldSelector") or "").split(","):
            key, sep, value = term.partition("=")
            if sep and key.strip() == "metadata.name" and not value.startswith("="):
                name = value.strip()
    return Attributes(
        user=user,
        verb=verb,
        resource_request=True,
        path=path,
        api_group=parsed.group,
        api_version=parsed.version,
        resource=parsed.plural,
        subresource=parsed.subresource or "",
        namespace=namespace,
        name=name,
    )


def forbidden(attributes: Attributes, reason: str = "") -> ApiError:
    """kube-apiserver's 403: ``pods "web" is forbidden: User "alice" cannot get resource
    "pods" in API group "" in the namespace "default"`` (or ``cannot get path "/apis"``)."""
    user = attributes.user.username
    if not attributes.resource_request:
        why = f'User "{user}" cannot {attributes.verb} path "{attributes.path}"'
    else:
        resource = attributes.resource
        if attributes.subresource:
            resource = f"{resource}/{attributes.subresource}"
        where = (
            f'in the namespace "{attributes.namespace}"'
            if attributes.namespace
            else "at the cluster scope"
        )
        why = (
            f'User "{user}" cannot {attributes.verb} resource "{resource}" '
            f'in API group "{attributes.api_group}" {where}'
        )
    if reason:
        why = f"{why}: {reason}"
    details: dict[str, str] = {}
    if not attributes.resource_request:
        message = f"forbidden: {why}"
    else:
        group_resource = attributes.resource + (
            f".{attributes.api_group}" if attributes.api_group else ""
        )
        subject = f'{group_resource} "{attributes.name}"' if attributes.name else group_resource
        message = f"{subject} is forbidden: {why}"
        details = {"kind": attributes.resource}
        if attributes.api_group:
            details["group"] = attributes.api_group
        if attributes.name:
            details["name"] = attributes.name
    return ApiError(403, "Forbidden", message, details or None)
