"""Who a certificate speaks for: the :class:`Identity` carried inside every Limen certificate.

The auth server builds an ``Identity`` when it issues certificates (login, agent join); the
signers in :mod:`limen.ca.ssh_certs` and :mod:`limen.ca.x509_certs` embed it; their verifiers
decode it back for the proxy, the agents and auth itself. The same compact JSON document
(:meth:`Identity.to_json`) travels in both certificate types:

* SSH: the certificate extension ``limen-identity@limen.dev``;
* X.509: a non-critical extension under :data:`limen.ca.x509_certs.IDENTITY_OID`.

Wire format (version 1): a JSON object without whitespace, empty fields left out::

    {"v":1,"user":"alice","cluster":"root","roles":["dev"],"traits":{"logins":["alice"]},
     "logins":["alice","ubuntu"],"kube_groups":[],"kube_users":[],"db_users":[],"db_names":[],
     "route_cluster":"leaf","route_db":{"service":"pg","user":"alice","name":"app"},
     "route_kube":"prod","route_app":"grafana","access_requests":["5d1c...-uuid"],
     "system_role":"node","usage":["db"],"host_id":"1b2c...","hostname":"web1"}

The validity window is *not* in the JSON: the certificate's own fields (SSH ``valid_after`` /
``valid_before``, X.509 ``notBefore`` / ``notAfter``) are the single source of truth, and the
verifiers copy them into ``not_before`` / ``not_after`` of the decoded identity. Keeping the
document independent of time also lets one encoding be reused for the SSH and the X.509
certificate issued at the same login (:meth:`Identity.to_json` is cached per instance).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType
from typing import Any

from limen.errors import BadParameter

__all__ = [
    "IDENTITY_VERSION",
    "Identity",
    "RouteToDatabase",
    "SystemRole",
]

IDENTITY_VERSION = 1
"""Version of the JSON wire format written by :meth:`Identity.to_json`."""


class SystemRole(StrEnum):
    """The role of a non-human identity (a Limen process), ``None`` on user identities."""

    ADMIN = "admin"
    AUTH = "auth"
    PROXY = "proxy"
    NODE = "node"
    DB = "db"
    KUBE = "kube"
    APP = "app"
    REMOTE_PROXY = "remote_proxy"


@dataclass(frozen=True)
class RouteToDatabase:
    """The database a certificate is scoped to (``lmsh db login``)."""

    service: str
    """Name of the database Resource."""
    user: str
    """Database user the proxy will log in as (checked against the role's ``db_users``)."""
    name: str = ""
    """Default database name (checked against ``db_names``); empty when not fixed."""


_EMPTY_TRAITS: Mapping[str, tuple[str, ...]] = MappingProxyType({})


@dataclass(frozen=True)
class Identity:
    """An authenticated principal: a user or a Limen process, as the CA certified it."""

    username: str
    """User name, or the host id for host and system identities."""
    cluster: str
    """Name of the cluster whose CA issued the certificate."""
    roles: tuple[str, ...] = ()
    """Limen roles of a user (RBAC input)."""
    traits: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _EMPTY_TRAITS, hash=False)
    """User traits (``logins``, ``kubernetes_groups``, external SSO claims ...), read-only."""
    logins: tuple[str, ...] = ()
    """Unix logins the user may use: the SSH certificate's principals."""
    kubernetes_groups: tuple[str, ...] = ()
    kubernetes_users: tuple[str, ...] = ()
    db_users: tuple[str, ...] = ()
    db_names: tuple[str, ...] = ()
    route_to_cluster: str | None = None
    """Leaf cluster the proxy should route this certificate's connections to."""
    route_to_db: RouteToDatabase | None = None
    route_to_kube: str | None = None
    """Name of the kube Resource (Kubernetes cluster) a certificate is scoped to
    (``lmsh kube login``)."""
    route_to_app: str | None = None
    """Name of the app Resource (web application) a certificate is scoped to
    (``lmsh apps login``)."""
    not_before: datetime | None = None
    """Start of validity (aware UTC); filled from the certificate by the verifiers."""
    not_after: datetime | None = None
    """End of validity (aware UTC); filled from the certificate by the verifiers."""
    system_role: SystemRole | None = None
    """Role of a Limen process (node, proxy ...); ``None`` for human users."""
    usage: tuple[str, ...] = ()
    """Restricts where the certificate may be used (e.g. ``("db",)``); empty: anywhere."""
    host_id: str | None = None
    """Stable id of a host (agents and servers)."""
    hostname: str | None = None
    """Human host name of a host."""
    access_requests: tuple[str, ...] = ()
    """Ids of the approved access requests whose roles this certificate carries."""

    def __post_init__(self) -> None:
        if not isinstance(self.username, str) or not self.username:
            raise BadParameter("identity username must be a non-empty string")
        if not isinstance(self.cluster, str) or not self.cluster:
            raise BadParameter("identity cluster must be a non-empty string")
        for name in ("roles", "logins", "kubernetes_groups", "kubernetes_users",
                     "db_users", "db_names", "usage", "access_requests"):
            object.__setattr__(self, name, _str_tuple(getattr(self, name), name))
        object.__setattr__(self, "traits", _traits(self.traits))
        for login in self.logins:
            if not login or login.startswith("-") or any(c in login for c in ", \t\r\n"):
                raise BadParameter(f"invalid login {login!r} in identity of {self.username!r}")
        for name in ("not_before", "not_after"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _utc(value, name))
        if self.system_role is not None:  # also accepts the plain string value
            object.__setattr__(self, "system_role", _system_role(self.system_role))
        for name in ("route_to_cluster", "route_to_kube", "route_to_app", "host_id", "hostname"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise BadParameter(f"identity {name} must be a non-empty string or None")
        if self.route_to_db is not None and not isinstance(self.route_to_db, RouteToDatabase):
            raise BadParameter("identity route_to_db must be a RouteToDatabase or None")

    # ------------------------------------------------------------------ convenience

    @classmethod
    def for_host(
        cls, cluster: str, host_id: str, hostname: str | None, system_role: SystemRole,
    ) -> Identity:
        """The identity of a Limen process (agent, proxy, auth) running on ``host_id``."""
        return cls(username=host_id, cluster=cluster, system_role=system_role,
                   host_id=host_id, hostname=hostname)

    @property
    def is_system(self) -> bool:
        """True for Limen processes, False for human users."""
        return self.system_role is not None

    def with_validity(self, not_before: datetime, not_after: datetime) -> Identity:
        """A copy with the given validity window (what the verifiers return)."""
        return replace(self, not_before=not_before, not_after=not_after)

    # ------------------------------------------------------------------ wire format

    def to_dict(self) -> dict[str, Any]:
        """The wire document as plain data (validity excluded, empty fields omitted)."""
        doc: dict[str, Any] = {"v": IDENTITY_VERSION, "user": self.username,
                               "cluster": self.cluster}
        for key, value in (
            ("roles", self.roles), ("logins", self.logins),
            ("kube_groups", self.kubernetes_groups), ("kube_users", self.kubernetes_users),
            ("db_users", self.db_users), ("db_names", self.db_names), ("usage", self.usage),
            ("access_requests", self.access_requests),
        ):
            if value:
                doc[key] = list(value)
        if self.traits:
            doc["traits"] = {k: list(v) for k, v in self.traits.items()}
        if self.route_to_cluster is not None:
            doc["route_cluster"] = self.route_to_cluster
        if self.route_to_db is not None:
            rd = self.route_to_db
            doc["route_db"] = {"service": rd.service, "user": rd.user, "name": rd.name}
        if self.route_to_kube is not None:
            doc["route_kube"] = self.route_to_kube
        if self.route_to_app is not None:
            doc["route_app"] = self.route_to_app
        if self.system_role is not None:
            doc["system_role"] = self.system_role.value
        if self.host_id is not None:
            doc["host_id"] = self.host_id
        if self.hostname is not None:
            doc["hostname"] = self.hostname
        return doc

    @cached_property
    def _json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON of :meth:`to_dict` (computed once per instance)."""
        return self._json

    @classmethod
    def from_dict(
        cls, doc: Mapping[str, Any], *,
        not_before: datetime | None = None, not_after: datetime | None = None,
    ) -> Identity:
        """Decode a wire document; unknown keys are ignored (forward compatibility).

        Raises :class:`BadParameter` when the document is not a version-1 identity.
        """
        if not isinstance(doc, Mapping):
            raise BadParameter("identity document must be a JSON object")
        if doc.get("v") != IDENTITY_VERSION:
            raise BadParameter(f"unsupported identity version {doc.get('v')!r}")
        route_db = doc.get("route_db")
        if route_db is not None:
            if not isinstance(route_db, Mapping):
                raise BadParameter("identity route_db must be an object")
            route = RouteToDatabase(
                service=_req_str(route_db, "service"), user=_req_str(route_db, "user"),
                name=_opt_str(route_db, "name") or "",
            )
        else:
            route = None
        system_role = doc.get("system_role")
        return cls(
            username=_req_str(doc, "user"),
            cluster=_req_str(doc, "cluster"),
            roles=_list(doc, "roles"),
            traits=_traits(doc.get("traits") or {}),
            logins=_list(doc, "logins"),
            kubernetes_groups=_list(doc, "kube_groups"),
            kubernetes_users=_list(doc, "kube_users"),
            db_users=_list(doc, "db_users"),
            db_names=_list(doc, "db_names"),
            route_to_cluster=_opt_str(doc, "route_cluster"),
            route_to_db=route,
            route_to_kube=_opt_str(doc, "route_kube") or None,
            route_to_app=_opt_str(doc, "route_app") or None,
            not_before=not_before,
            not_after=not_after,
            system_role=None if system_role is None else _system_role(system_role),
            usage=_list(doc, "usage"),
            host_id=_opt_str(doc, "host_id"),
            hostname=_opt_str(doc, "hostname"),
            access_requests=_list(doc, "access_requests"),
        )

    @classmethod
    def from_json(
        cls, data: bytes | str, *,
        not_before: datetime | None = None, not_after: datetime | None = None,
    ) -> Identity:
        """Decode :meth:`to_json` output; raises :class:`BadParameter` on malformed input."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as err:
            raise BadParameter(f"identity is not valid JSON: {err}") from None
        return cls.from_dict(doc, not_before=not_before, not_after=not_after)


def _str_tuple(value: Any, name: str) -> tuple[str, ...]:
    if type(value) is tuple and all(type(v) is str for v in value):
        return value  # the usual case, without the Sequence ABC check (every issuance)
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise BadParameter(f"identity {name} must be a list of strings")
    items = tuple(value)
    if not all(isinstance(v, str) for v in items):
        raise BadParameter(f"identity {name} must be a list of strings")
    return items


def _traits(value: Any) -> Mapping[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise BadParameter("identity traits must be a mapping of names to lists of strings")
    if not value:
        return _EMPTY_TRAITS
    out: dict[str, tuple[str, ...]] = {}
    for key in sorted(value):
        if not isinstance(key, str):
            raise BadParameter("identity trait names must be strings")
        out[key] = _str_tuple(value[key], f"trait {key!r}")
    return MappingProxyType(out)


def _utc(value: Any, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise BadParameter(f"identity {name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _system_role(value: Any) -> SystemRole:
    try:
        return SystemRole(value)
    except ValueError:
        raise BadParameter(f"unknown system role {value!r}") from None


def _req_str(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise BadParameter(f"identity field {key!r} must be a non-empty string")
    return value


def _opt_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise BadParameter(f"identity field {key!r} must be a string")
    return value


def _list(doc: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadParameter(f"identity field {key!r} must be a list of strings")
    return _str_tuple(value, key)
