"""Who a request to the Kubernetes API emulator is made by: kube-apiserver's ``user.Info``.

Used by ``authn.py`` (credentials become a :class:`UserInfo`), ``impersonation.py`` (the
impersonated user), ``rbac.py`` (bindings match its name and groups) and ``reviews.py``
(``kubectl auth whoami`` shows it). The well-known names are kube-apiserver's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ADMIN",
    "ALL_AUTHENTICATED",
    "ANONYMOUS",
    "MASTERS",
    "UserInfo",
    "service_account_groups",
    "service_account_user",
    "split_service_account",
]

MASTERS = "system:masters"  # the group RBAC never refuses
ALL_AUTHENTICATED = "system:authenticated"
ANONYMOUS = "system:anonymous"
_SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class UserInfo:
    """A username, an optional uid, groups and extra values (``authentication.k8s.io/v1``)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The ``UserInfo`` object of a SelfSubjectReview (empty fields omitted, as Go does)."""
        doc: dict[str, Any] = {"username": self.username}
        if self.uid:
            doc["uid"] = self.uid
        if self.groups:
            doc["groups"] = list(self.groups)
        if self.extra:
            doc["extra"] = {k: list(v) for k, v in self.extra.items()}
        return doc


ADMIN = UserInfo("kubernetes-admin", groups=(MASTERS, ALL_AUTHENTICATED))


def service_account_user(namespace: str, name: str) -> str:
    """``system:serviceaccount:<namespace>:<name>``."""
    return f"{_SA_PREFIX}{namespace}:{name}"


def split_service_account(username: str) -> tuple[str, str] | None:
    """(namespace, name) when ``username`` names a service account, else None."""
    if not username.startswith(_SA_PREFIX):
        return None
    namespace, sep, name = username[len(_SA_PREFIX) :].partition(":")
    if not sep or not namespace or not name or ":" in name:
        return None
    return namespace, name


def service_account_groups(namespace: str) -> tuple[str, ...]:
    """The groups kube-apiserver gives every service account of ``namespace``."""
    return ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")
