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

A CA's rotation state (``limen.auth.rotation``) is stored in its public resource
(``spec.rotation``); :meth:`Authorities.change_rotation` moves it and the keys together, on
condition that neither record changed since read (several replicas, the auto advancer), and
:meth:`Authorities.refresh` makes a replica pick up what another one wrote.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from limen.api.resources import Kind, Resource
from limen.auth.ca_sealing import CASealer, decode_ca_record, encode_ca_record, is_sealed
from limen.auth.rotation import (
    ROTATABLE,
    Mode,
    Phase,
    RotationRefused,
    RotationState,
    advance,
)
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
                 public_revision: int | None = None, sealer: CASealer | None = None,
                 rotation: Mapping[str, Any] | None = None,
                 ) -> tuple[list[Condition], list[Put]]:
    """The one way a CA of ``cluster`` is stored: its private record (encrypted with
    ``sealer`` when given) and its public resource, to be written in one transaction, on
    condition that the record (and, when given, the public resource) is still at the revision
    read (0: absent). ``rotation``: the CA's rotation state (``limen.auth.rotation``), kept
    in the public resource; absent: at rest."""
    key = ca_record_key(cluster, ca.type)
    spec = ca.public_only().to_dict()
    if rotation is not None:
        spec["rotation"] = dict(rotation)
    public = Resource(
        Kind.CERT_AUTHORITY, ca_resource_name(ca.type, cluster),
        spec=spec, labels={"limen.dev/cluster": cluster},
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


def _rotation_of(public: Item) -> RotationState:
    """The rotation state kept in a stored public ``CertAuthority`` resource."""
    try:
        spec = json.loads(public.value).get("spec") or {}
    except (ValueError, AttributeError):
        raise BadParameter(f"{public.key} is not a CertAuthority document") from None
    return RotationState.from_dict(spec.get("rotation") if isinstance(spec, dict) else None)


class Authorities:
    """This cluster's CAs (with private keys) and the public CAs it trusts."""

    def __init__(self, backend: Backend, store: ResourceStore, cluster: str,
                 sealer: CASealer | None = None) -> None:
        self.backend = backend
        self.store = store
        self.cluster = cluster
        self.sealer = sealer
        self._own: dict[CertAuthorityType, CertAuthority] = {}
        self._rotation: dict[CertAuthorityType, RotationState] = {}
        self._public_revision: dict[CertAuthorityType, int] = {}
        self._reading = asyncio.Lock()
        """One reload or rotation at a time: a reload never stores an older read over a
        newer one."""
        self._parsed: dict[str, tuple[bytes, CertAuthority, bool]] = {}
        """Stored key of each public CA -> (its stored bytes, the CA parsed from them,
        disabled): :meth:`trusted` lists the store every time and parses only what changed."""

    async def ensure(self) -> None:
        """Load every CA of this cluster, generating the missing ones (first start)."""
        for ca_type in CertAuthorityType:
            self._own[ca_type] = await self._load_or_create(ca_type)
        await self.refresh(force=True)

    async def refresh(self, *, force: bool = False) -> list[CertAuthorityType]:
        """Reload the user and host CAs (``force``: every CA) whose public resource changed
        since last read (another replica rotated them); the types reloaded."""
        async with self._reading:
            return await self._reload(force)

    async def _reload(self, force: bool) -> list[CertAuthorityType]:
        changed = []  # only the types rotated by phases change while auth runs
        for ca_type in list(self._own) if force else [t for t in ROTATABLE if t in self._own]:
            public = await self.backend.get(ca_public_key(self.cluster, ca_type))
            revision = 0 if public is None else public.revision
            if not force and self._public_revision.get(ca_type) == revision:
                continue
            state = RotationState() if public is None else _rotation_of(public)
            found = await read_ca(self.backend, self.cluster, ca_type, self.sealer)
            if found is not None:
                self._own[ca_type] = found
            self._rotation[ca_type] = state
            self._public_revision[ca_type] = revision
            changed.append(ca_type)
        return changed

    def rotation(self, ca_type: CertAuthorityType) -> RotationState:
        """The rotation state of this cluster's CA of ``ca_type`` (as last read)."""
        return self._rotation.get(ca_type, RotationState())

    async def change_rotation(
        self, ca_type: CertAuthorityType, target: Phase, *, now: datetime,
        mode: Mode | None = None, grace_period: timedelta | None = None,
        expect: Phase | None = None, request: str = "", expect_request: str | None = None,
    ) -> tuple[RotationState, RotationState] | None:
        """Move the rotation of the CA of ``ca_type`` to ``target`` (keys and state in one
        compare-and-swap transaction): ``(before, after)``. ``expect``: only from that phase
        (None returned when another replica moved it first). ``request``: the declared
        request starting a rotation; ``expect_request``: only if the rotation under way is
        that request's (:class:`RotationRefused` otherwise)."""
        key, public_key = ca_record_key(self.cluster, ca_type), ca_public_key(self.cluster,
                                                                              ca_type)
        for _ in range(_WRITE_ATTEMPTS):
            item, public = await self.backend.get(key), await self.backend.get(public_key)
            if item is None or public is None:
                raise BadParameter(f"the {ca_type.value} CA of {self.cluster} is not stored")
            ca = decode_ca_record(item.value, self.cluster, ca_type, self.sealer)
            before = _rotation_of(public)
            if expect is not None and before.phase is not expect:
                await self.refresh()
                return None
            if expect_request is not None and before.request != expect_request:
                raise RotationRefused(
                    f"the {ca_type.value} CA's rotation under way is no longer request "
                    f"{expect_request!r}" + (f" but {before.request!r}" if before.request
                                             else " (a command started it)"))
            rotated, after = advance(ca, before, target, now=now, mode=mode,
                                     grace_period=grace_period, request=request)
            conditions, puts = ca_write_ops(
                self.cluster, rotated, record_revision=item.revision,
                public_revision=public.revision, sealer=self.sealer, rotation=after.to_dict())
            try:
                async with self._reading:
                    await self.backend.atomic(conditions, puts)
                    await self._reload(False)
            except CompareFailed:
                continue
            return before, after
        raise CompareFailed(f"the {ca_type.value} CA keeps changing while rotating it; "
                            "try again")

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
        parsed: dict[str, tuple[bytes, CertAuthority, bool]] = {}
        for item in await self.backend.list(resource_key(Kind.CERT_AUTHORITY, "")):
            known = self._parsed.get(item.key)
            if known is None or known[0] != item.value:  # every login and API call asks:
                spec = json.loads(item.value).get("spec") or {}  # parse what changed only
                known = (item.value, CertAuthority.from_dict(spec), bool(spec.get("disabled")))
            parsed[item.key] = known
            _, ca, disabled = known
            if ca.type is ca_type and not disabled:
                found[ca.cluster] = ca
        self._parsed = parsed
        found.setdefault(self.cluster, self.get(ca_type).public_only())
        return found
