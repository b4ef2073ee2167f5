"""The cluster's certificate authorities: created on first start, kept in the backend.

Private keys live under ``/secrets/ca/<cluster>/<type>`` and never leave auth; the public copy
of every CA (this cluster's and, later, trusted remote clusters') is a ``CertAuthority``
resource named ``<type>.<cluster>``, from which every trust map is built. The two are written
together, in one backend transaction, by :func:`ca_write_ops` only: auth's first start here, and
the operator's seeding of an operator-managed cluster (``limen.operator.ca_secret``). Called by
``limen.auth.core`` and the operator.
"""

from __future__ import annotations

import json

from limen.api.resources import Kind, Resource
from limen.backend.base import Backend, Condition, Put
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.errors import BadParameter, CompareFailed
from limen.services.resource_store import ResourceStore, encode, resource_key

__all__ = [
    "CA_SECRET_PREFIX", "Authorities", "ca_public_key", "ca_record_key", "ca_resource_name",
    "ca_write_ops",
]

CA_SECRET_PREFIX = "/secrets/ca/"


def ca_resource_name(ca_type: CertAuthorityType, cluster: str) -> str:
    return f"{ca_type.value}.{cluster}"


def ca_record_key(cluster: str, ca_type: CertAuthorityType) -> str:
    """Backend key of the private record of ``cluster``'s CA of ``ca_type``."""
    return f"{CA_SECRET_PREFIX}{cluster}/{ca_type.value}"


def ca_public_key(cluster: str, ca_type: CertAuthorityType) -> str:
    """Backend key of the public ``CertAuthority`` resource of that CA."""
    return resource_key(Kind.CERT_AUTHORITY, ca_resource_name(ca_type, cluster))


def ca_write_ops(cluster: str, ca: CertAuthority, *, record_revision: int,
                 public_revision: int | None = None) -> tuple[list[Condition], list[Put]]:
    """The one way a CA of ``cluster`` is stored: its private record and its public resource,
    to be written in one transaction, on condition that the record (and, when given, the
    public resource) is still at the revision read (0: absent)."""
    key = ca_record_key(cluster, ca.type)
    public = Resource(
        Kind.CERT_AUTHORITY, ca_resource_name(ca.type, cluster),
        spec=ca.public_only().to_dict(), labels={"limen.dev/cluster": cluster},
    )
    public_key = ca_public_key(cluster, ca.type)
    conditions = [Condition(key, record_revision)]
    if public_revision is not None:
        conditions.append(Condition(public_key, public_revision))
    puts = [Put(key, json.dumps(ca.to_dict()).encode()), Put(public_key, encode(public))]
    return conditions, puts


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
        key = ca_record_key(self.cluster, ca_type)
        item = await self.backend.get(key)
        if item is not None:
            return CertAuthority.from_dict(json.loads(item.value))
        ca = CertAuthority.generate(self.cluster, ca_type)
        try:
            await self.backend.atomic(*ca_write_ops(self.cluster, ca, record_revision=0))
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
