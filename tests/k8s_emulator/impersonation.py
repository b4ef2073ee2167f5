"""User impersonation (``Impersonate-*`` headers), exactly as kube-apiserver's filter does it.

Used by ``apiserver.py`` after authentication: the request then runs as the impersonated
user. Headers: ``Impersonate-User`` (one), ``Impersonate-Group`` (repeatable),
``Impersonate-Uid`` and ``Impersonate-Extra-<key>`` (repeatable; the key is lower-cased and
percent-decoded). Each part needs the ``impersonate`` verb for the requester: on ``users``
(or ``serviceaccounts`` in its namespace for ``system:serviceaccount:NS:NAME``), ``groups``,
``userextras/<key>`` and ``uids`` (the last two in API group ``authentication.k8s.io``),
named by the value; the first refusal answers 403 for that part. Groups, uid or extra without
a user is a 500 (kube-apiserver's InternalError). The impersonated user gets
``system:authenticated``, and a service account without ``Impersonate-Group`` its
``system:serviceaccounts`` groups.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

from multidict import CIMultiDictProxy

from .requestinfo import Attributes, forbidden
from .users import (
    ALL_AUTHENTICATED,
    ANONYMOUS,
    UserInfo,
    service_account_groups,
    split_service_account,
)

__all__ = ["ImpersonationError", "impersonate"]

_USER, _GROUP, _UID = "Impersonate-User", "Impersonate-Group", "Impersonate-Uid"
_EXTRA = "impersonate-extra-"
_AUTHN_GROUP = "authentication.k8s.io"


class ImpersonationError(Exception):
    """Impersonation headers that do not make a request (answered with a plain 500)."""


def impersonate(
    headers: CIMultiDictProxy[str],
    requester: UserInfo,
    allowed: Callable[[Attributes], bool],
) -> UserInfo:
    """The user the request acts as: ``requester`` without impersonation headers, else the
    impersonated user; ``ApiError`` 403 when the requester may not impersonate it."""
    users = headers.getall(_USER, [])
    groups = headers.getall(_GROUP, [])
    uids = headers.getall(_UID, [])
    extra: dict[str, tuple[str, ...]] = {}
    for key in {k.lower() for k in headers if k.lower().startswith(_EXTRA)}:
        extra[urllib.parse.unquote(key[len(_EXTRA) :])] = tuple(headers.getall(key))
    if not users:
        if groups or uids or extra:
            raise ImpersonationError(
                f"requested {_describe(groups, uids, extra)} without impersonating a user"
            )
        return requester
    username = users[0]

    def check(**attrs: str) -> None:
        question = Attributes(user=requester, verb="impersonate", resource_request=True, **attrs)
        if not allowed(question):
            raise forbidden(question)

    service_account = split_service_account(username)
    if service_account is not None:
        namespace, name = service_account
        check(resource="serviceaccounts", namespace=namespace, name=name)
    else:
        check(resource="users", name=username)
    for group in groups:
        check(resource="groups", name=group)
    for key, values in extra.items():
        for value in values:
            check(api_group=_AUTHN_GROUP, resource="userextras", subresource=key, name=value)
    for uid in uids:
        check(api_group=_AUTHN_GROUP, resource="uids", name=uid)
    acting_groups = list(groups)
    if service_account is not None and not groups:
        acting_groups = list(service_account_groups(service_account[0]))
    if username != ANONYMOUS and ALL_AUTHENTICATED not in acting_groups:
        acting_groups.append(ALL_AUTHENTICATED)
    return UserInfo(username, uid=uids[0] if uids else "", groups=tuple(acting_groups), extra=extra)


def _describe(groups: list[str], uids: list[str], extra: dict[str, tuple[str, ...]]) -> str:
    parts = [f"group {g}" for g in groups] + [f"uid {u}" for u in uids]
    parts += [f"extra {k}={v}" for k, values in extra.items() for v in values]
    return "[" + ", ".join(parts) + "]"
