"""The cluster's certificate authorities: created on first start, kept in the backend.

Private keys live under ``/secrets/ca/<cluster>/<type>`` and never leave auth; the public copy
of every CA (this cluster's and, later, trusted remote clusters') is a ``CertAuthority``
resource named ``<type>.<cluster>``, from which every trust map is built. The two are written
together, in one backend transaction, by :func:`ca_write_ops` only: auth's first start here, and
the operator's seeding of an operator-managed cluster (``limen.operator.ca_secret``). Called by
``limen.auth.core`` and the operator.

With a :class:`~limen.auth.ca_sealing.CASealer` (``backend.ca_key_file``; required on
PostgreSQL) the private records are encrypted (``limen.auth.ca_sealing``); a plain record found
then (a store migrated from SQLite, a key file added later) is sealed at the next start.
Several auth replicas may start on one empty backend at once: each CA is created with
compare-and-swap (absent → created), so the first one wins and the others load it.
"""

from __future__ import annotations

from limen.api.resources import Kind, Resource
from limen.auth.ca_sealing import CASealer, decode_ca_record, encode_ca_record, is_sealed
from limen.backend.base import Backend, Condition, Item, Put
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.errors import BadParameter, CompareFailed
from limen.services.resource_store import ResourceStore, encode, resource_key

__all__ = [
    "CA_SECRET_PREFIX", "Authorities", "ca_public_key", "ca_record_key", "ca_resource_name",
    "ca_write_ops", "read_ca", "seal_ca_items",
]

CA_SECRET_PREFIX = "/secrets/ca/"
_WRITE_ATTEMPTS = 5


def ca_resource_name(ca_type: CertAuthorityType, cluster: str) -> str:
    return f"{ca_type.value}.{cluster}"


def ca_record_key(cluster: str, ca_type: CertAuthorityType) -> str:
    """Backend key of the private record of ``cluster``'s CA of ``ca_type``."""
    return f"{CA_SECRET_PREFIX}{cluster}/{ca_type.value}"


def ca_public_key(cluster: str, ca_type: CertAuthorityType) -> str:
    """Backend key of the public ``CertAuthority`` resource of that CA."""
    return resource_key(Kind.CERT_AUTHORITY, ca_resource_name(ca_type, cluster))


def ca_write_ops(cluster: str, ca: CertAuthority, *, record_revision: int,
                 public_revision: int | None = None,
                 sealer: CASealer | None = None) -> tuple[list[Condition], list[Put]]:
    """The one way a CA of ``cluster`` is stored: its private record (encrypted with
    ``sealer`` when given) and its public resource, to be written in one transaction, on
    condition that the record (and, when given, the public resource) is still at the revision
    read (0: absent)."""
    key = ca_record_key(cluster, ca.type)
    public = Resource(
        Kind.CERT_AUTHORITY, ca_resource_name(ca.type, cluster),
        spec=ca.public_only().to_dict(), labels={"limen.dev/cluster": cluster},
    )
    public_key = ca_public_key(cluster, ca.type)
    conditions = [Condition(key, record_revision)]
    if public_revision is not None:
        conditions.append(Condition(public_key, public_revision))
    puts = [Put(key, encode_ca_record(ca, sealer)), Put(public_key, encode(public))]
    return conditions, puts


async def read_ca(backend: Backend, cluster: str, ca_type: CertAuthorityType,
                  sealer: CASealer | None = None) -> CertAuthority | None:
    """The stored CA of ``cluster`` of ``ca_type``, private key included (None: absent)."""
    item = await backend.get(ca_record_key(cluster, ca_type))
    return None if item is None else decode_ca_record(item.value, cluster, ca_type, sealer)


def seal_ca_items(items: list[Item], sealer: CASealer | None, *,
                  require: bool) -> tuple[list[Item], int]:
    """``items`` (a whole store being copied) with every plain CA record encrypted by
    ``sealer``, and how many were; sealed ones are checked to open with it. Without a sealer,
    plain CA records are refused when ``require`` (the target keeps them encrypted)."""
    out: list[Item] = []
    sealed = 0
    for item in items:
        if not item.key.startswith(CA_SECRET_PREFIX):
            out.append(item)
            continue
        cluster, _, type_name = item.key.removeprefix(CA_SECRET_PREFIX).rpartition("/")
        try:
            ca_type = CertAuthorityType(type_name)
        except ValueError:
            raise BadParameter(f"{item.key} is no CA record this version knows") from None
        if is_sealed(item.value) or sealer is None:
            if sealer is not None:  # the key must be the one the replicas will use
                decode_ca_record(item.value, cluster, ca_type, sealer)
            elif require and not is_sealed(item.value):
                raise BadParameter(
                    f"{item.key} holds a CA private key in plain text and the target keeps "
                    "them encrypted: give --ca-key-file (the auth replicas' "
                    "backend.ca_key_file)")
            out.append(item)
            continue
        ca = decode_ca_record(item.value, cluster, ca_type, None)
        out.append(Item(item.key, encode_ca_record(ca, sealer), item.revision, item.expires))
        sealed += 1
    return out, sealed


class Authorities:
    """This cluster's CAs (with private keys) and the public CAs it trusts."""

    def __init__(self, backend: Backend, store: ResourceStore, cluster: str,
                 sealer: CASealer | None = None) -> None:
        self.backend = backend
        self.store = store
        self.cluster = cluster
        self.sealer = sealer
        self._own: dict[CertAuthorityType, CertAuthority] = {}
        self._parsed: dict[tuple[str, int], CertAuthority] = {}

    async def ensure(self) -> None:
        """Load every CA of this cluster, generating the missing ones (first start)."""
        for ca_type in CertAuthorityType:
            self._own[ca_type] = await self._load_or_create(ca_type)

    async def _load_or_create(self, ca_type: CertAuthorityType) -> CertAuthority:
        key = ca_record_key(self.cluster, ca_type)
        for _ in range(_WRITE_ATTEMPTS):
            item = await self.backend.get(key)
            if item is not None:
                ca = decode_ca_record(item.value, self.cluster, ca_type, self.sealer)
                if self.sealer is None or is_sealed(item.value):
                    return ca
                record = [Condition(key, item.revision)], [
                    Put(key, encode_ca_record(ca, self.sealer))]
            else:
                ca = CertAuthority.generate(self.cluster, ca_type)
                record = ca_write_ops(self.cluster, ca, record_revision=0, sealer=self.sealer)
            try:  # create (absent → ours) or seal a plain record, if nobody wrote meanwhile
                await self.backend.atomic(*record)
            except CompareFailed:  # another auth replica wrote first: read what it wrote
                continue
            return ca
        raise CompareFailed(f"the {ca_type.value} CA record of cluster {self.cluster} keeps "
                            "changing while this auth server starts; start it again")

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
