"""The resource envelope shared by Git, ``lmctl``, the auth API and Kubernetes custom resources.

Every resource is ``{apiVersion: limen.dev/v1alpha1, kind, metadata, spec, status}``. The spec is
kept as plain data (validated against the CRD schemas by ``limen.api.validation``); typed access
to a kind's fields lives with the code that interprets them (``limen.rbac`` for roles).
Called by the services layer, the auth API, the Git sync, the operator and the CLIs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from limen.errors import BadParameter

__all__ = [
    "ADOPT_ANNOTATION",
    "API_GROUP",
    "API_VERSION",
    "NAME_PATTERN",
    "ORIGIN_LABEL",
    "PUBLIC_KINDS",
    "Kind",
    "Origin",
    "Resource",
    "parse_kind",
]

API_GROUP = "limen.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"
ORIGIN_LABEL = "limen.dev/origin"
"""Label recording which source owns a stored object (see :class:`Origin`)."""
ADOPT_ANNOTATION = "limen.dev/adopt"
"""Annotation that lets a source take over an object another source owns (value: the origin)."""
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9._@-]{0,251}[a-z0-9])?$")
"""Resource names: DNS-subdomain-like, plus ``@`` for user names that are e-mail addresses."""


class Kind(StrEnum):
    USER = "User"
    ROLE = "Role"
    TRUSTED_CLUSTER = "TrustedCluster"
    RESOURCE = "Resource"
    CLUSTER = "Cluster"
    LOCK = "Lock"
    OIDC_CONNECTOR = "OIDCConnector"
    GITHUB_CONNECTOR = "GitHubConnector"
    ACCESS_REQUEST_REVIEW = "AccessRequestReview"
    """Git only, never stored: a merged review of an access request
    (``limen.api.access_request_review``)."""
    # internal kinds: stored by auth, never declared in Git or as CRDs
    TOKEN = "Token"
    CERT_AUTHORITY = "CertAuthority"
    REMOTE_CLUSTER = "RemoteCluster"
    ACCESS_REQUEST = "AccessRequest"

    @property
    def plural(self) -> str:
        return {
            Kind.USER: "users", Kind.ROLE: "roles", Kind.TRUSTED_CLUSTER: "trustedclusters",
            Kind.RESOURCE: "resources", Kind.CLUSTER: "clusters", Kind.TOKEN: "tokens",
            Kind.CERT_AUTHORITY: "certauthorities", Kind.REMOTE_CLUSTER: "remoteclusters",
            Kind.ACCESS_REQUEST: "accessrequests", Kind.LOCK: "locks",
            Kind.OIDC_CONNECTOR: "oidcconnectors", Kind.GITHUB_CONNECTOR: "githubconnectors",
            Kind.ACCESS_REQUEST_REVIEW: "accessrequestreviews",
        }[self]


PUBLIC_KINDS: tuple[Kind, ...] = (
    Kind.USER, Kind.ROLE, Kind.TRUSTED_CLUSTER, Kind.RESOURCE, Kind.CLUSTER, Kind.LOCK,
    Kind.OIDC_CONNECTOR, Kind.GITHUB_CONNECTOR,
)
"""Kinds that have a CRD and may be declared in Git, with ``lmctl apply`` or ``kubectl apply``."""

_SHORT_NAMES = {
    "lmuser": Kind.USER, "lmrole": Kind.ROLE, "lmtc": Kind.TRUSTED_CLUSTER,
    "lmres": Kind.RESOURCE, "lmcluster": Kind.CLUSTER, "lmlock": Kind.LOCK,
    "lmoidc": Kind.OIDC_CONNECTOR, "oidc": Kind.OIDC_CONNECTOR,
    "lmgithub": Kind.GITHUB_CONNECTOR, "github": Kind.GITHUB_CONNECTOR,
    "tc": Kind.TRUSTED_CLUSTER,
    "trusted_cluster": Kind.TRUSTED_CLUSTER, "trusted_clusters": Kind.TRUSTED_CLUSTER,
    "remote_cluster": Kind.REMOTE_CLUSTER, "remote_clusters": Kind.REMOTE_CLUSTER,
    "cert_authority": Kind.CERT_AUTHORITY, "ca": Kind.CERT_AUTHORITY,
    "access_request": Kind.ACCESS_REQUEST, "access_requests": Kind.ACCESS_REQUEST,
}


def parse_kind(text: str) -> Kind:
    """Accept ``Role``, ``role``, ``roles``, ``lmrole`` (the kubectl-style spellings)."""
    low = text.strip().lower()
    for kind in Kind:
        if low in (kind.value.lower(), kind.plural, kind.plural.rstrip("s")):
            return kind
    if low in _SHORT_NAMES:
        return _SHORT_NAMES[low]
    raise BadParameter(f"unknown kind {text!r} (known: {', '.join(k.plural for k in Kind)})")


class Origin(StrEnum):
    GIT = "git"
    KUBERNETES = "kubernetes"
    API = "api"
    PRESET = "preset"
    """Created by auth itself (the preset roles); any source may take such an object over."""


@dataclass(frozen=True)
class Resource:
    """One stored or declared object. ``revision`` is the store revision (0 when not stored)."""

    kind: Kind
    name: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    revision: int = 0

    @property
    def origin(self) -> Origin | None:
        value = self.labels.get(ORIGIN_LABEL)
        return Origin(value) if value in {o.value for o in Origin} else None

    @property
    def key(self) -> str:
        """The object's identity: ``Kind/name``."""
        return f"{self.kind.value}/{self.name}"

    def with_origin(self, origin: Origin) -> Resource:
        return self.replace(labels={**self.labels, ORIGIN_LABEL: origin.value})

    def replace(self, **changes: Any) -> Resource:
        return dataclasses.replace(self, **changes)

    def same_declaration(self, other: Resource) -> bool:
        """Equal in everything a source declares (spec, labels, annotations); ignores status."""
        return (
            self.kind == other.kind and self.name == other.name
            and _canonical(self.spec) == _canonical(other.spec)
            and dict(self.labels) == dict(other.labels)
            and dict(self.annotations) == dict(other.annotations)
        )

    def to_document(self, *, with_status: bool = True) -> dict[str, Any]:
        return self._document(with_status, copy.deepcopy)

    def _document(self, with_status: bool, copied: Any) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name}
        if self.labels:
            metadata["labels"] = dict(self.labels)
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        if self.revision:
            metadata["resourceVersion"] = str(self.revision)
        doc: dict[str, Any] = {
            "apiVersion": API_VERSION, "kind": self.kind.value, "metadata": metadata,
            "spec": copied(dict(self.spec)),
        }
        if with_status and self.status:
            doc["status"] = copied(dict(self.status))
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], *, owned: bool = False) -> Resource:
        """Build from an already validated document (see ``limen.api.validation``).
        ``owned``: ``doc`` was just decoded and nobody else holds it (the store's reads), so
        its spec and status are kept as they are instead of deep-copied."""
        meta = doc.get("metadata") or {}
        revision = meta.get("resourceVersion")
        copied: Any = (lambda value: value) if owned else copy.deepcopy
        return cls(
            kind=Kind(doc["kind"]),
            name=meta["name"],
            spec=copied(doc.get("spec") or {}),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            status=copied(doc.get("status") or {}),
            revision=int(revision) if revision and str(revision).isdigit() else 0,
        )

    def to_json(self) -> bytes:
        # No deep copy: json.dumps only reads (a third of the cost of storing 10,000 objects).
        document = self._document(True, lambda value: value)
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
