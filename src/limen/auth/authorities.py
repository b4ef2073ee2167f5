"""The cluster's certificate authorities: created on first start, kept in the backend.

Private keys live under ``/secrets/ca/<cluster>/<type>`` and never leave auth; the public copy
of every CA (this cluster's and, later, trusted remote clusters') is a ``CertAuthority``
resource named ``<type>.<cluster>``, from which every trust map is built. Called by
``limen.auth.server``.
"""

from __future__ import annotations

import json

from limen.api.resources import Kind, Resource
from limen.backend.base import Backend, Condition, Put
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.errors import BadParameter, CompareFailed
from limen.services.resources import ResourceStore, encode, resource_key

__all__ = ["CA_SECRET_PREFIX", "Authorities", "ca_resource_name"]

CA_SECRET_PREFIX = "/secrets/ca/"


def ca_resource_name(ca_type: CertAuthorityType, cluster: str) -> str:
    return f"{ca_type.value}.{cluster}"


def _secret_key(cluster: str, ca_type: CertAuthorityType) -> str:
    return f"{CA_SECRET_PREFIX}{cluster}/{ca_type.value}"


class Authorities:
    """This cluster's CAs (with private keys) and the public CAs it trusts."""

    def __init__(self, backend: Backend, store: ResourceStore, cluster: str) -> None:
        self.backend = backend
        self.store = store
        self.cluster = cluster
        self._own: dict[CertAuthorityType, CertAuthority] = {}
        self._parsed: dict[tuple[str, int], CertAuthority] = {}

    async def ensure(self) -> None:
        """Load every CA of this cluster, generating the missing ones (first start)."""
        for ca_type in CertAuthorityType:
            self._own[ca_type] = await self._load_or_create(ca_type)

    async def _load_or_create(self, ca_type: CertAuthorityType) -> CertAuthority:
        key = _secret_key(self.cluster, ca_type)
        item = await self.backend.get(key)
        if item is not None:
            return CertAuthority.from_dict(json.loads(item.value))
        ca = CertAuthority.generate(self.cluster, ca_type)
        public = Resource(
            Kind.CERT_AUTHORITY, ca_resource_name(ca_type, self.cluster),
            spec=ca.public_only().to_dict(), labels={"limen.dev/cluster": self.cluster},
        )
        try:
            await self.backend.atomic(
                [Condition(key, 0)],
                [Put(key, json.dumps(ca.to_dict()).encode()),
                 Put(resource_key(Kind.CERT_AUTHORITY, public.name), encode(public))],
            )
        except CompareFailed:  # another auth replica created it first: use theirs
            item = await self.backend.get(key)
            if item is None:
                raise
            return CertAuthority.from_dict(json.loads(item.value))
        return ca

    def get(self, ca_type: CertAuthorityType) -> CertAuthority:
        """This cluster's CA of ``ca_type``, private key included."""
        try:
            return self._own[ca_type]
        except KeyError:
            raise BadParameter("this data directory holds no cluster yet: start it once with "
                               "`limen start` (that names the cluster and creates its CAs)"
                               ) from None

    async def trusted(self, ca_type: CertAuthorityType) -> dict[str, CertAuthority]:
        """Public CAs of ``ca_type`` of every trusted cluster (this one included), by cluster."""
        found: dict[str, CertAuthority] = {}
        for res in await self.store.list(Kind.CERT_AUTHORITY):
            ca = self._parsed.get((res.name, res.revision))
            if ca is None:  # parse each stored revision once: every login and API call asks
                ca = CertAuthority.from_dict(res.spec)
                self._parsed[(res.name, res.revision)] = ca
            if ca.type is ca_type and not res.spec.get("disabled"):
                found[ca.cluster] = ca
        found.setdefault(self.cluster, self.get(ca_type).public_only())
        return found
