"""The CA Secret of a Cluster: the cluster's certificate authorities, generated once by the
operator, and what the operator does with them.

::

    Cluster CR ──▶ operator: generate_cas() once ──▶ Secret <name>-ca (never overwritten;
                   │                                  changed only by a requested rotation)
                   │                                    │ mounted read-only
                   │                                    ▼
                   │                      auth pod, init container `limen operator seed-ca`
                   │                      ──▶ seed_backend(): the CA records auth loads at start
                   ├─ operator_identity(): an admin client certificate signed by the TLS CA,
                   │  so the operator calls the auth it deployed with its own identity
                   └─ tls_ca_pin(): the pin of the TLS CA, which the proxy pods check auth
                      with when they join (LIMEN_CA_PIN)

Data keys: ``cluster`` (the cluster name) and ``<type>.json`` for every CA type (user, host,
tls, db, jwt): the ``CertAuthority.to_dict()`` record auth keeps in its backend, private keys
included. With a sealer (``backend.ca_key_file``: the ``<name>-ca-key`` Secret of a PostgreSQL
Cluster) the seed writes the records encrypted and compares what it finds by decrypting it:
an encrypted record is rewritten only when the CA in it differs, a plain one is sealed, and
one encrypted with another key stops the seed (it names both key ids) rather than being
overwritten. ``rotate`` and ``finish_rotation`` implement ``spec.ca_rotation`` on these records: a
new active key while the old one stays trusted, then (after the grace period) only the new.

Called by ``limen.operator.cluster`` and ``limen start``'s init container (``seed-ca``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.serialization import Encoding

from limen.auth.authorities import ca_public_key, ca_record_key, ca_write_ops
from limen.auth.ca_sealing import CASealer, decode_ca_record, is_sealed
from limen.auth.store_keys import CLUSTER_NAME_KEY
from limen.backend.base import Backend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem
from limen.ca.x509_certs import sign_client_cert
from limen.errors import AlreadyExists, BadParameter, CompareFailed

__all__ = [
    "OPERATOR_USER",
    "finish_rotation",
    "generate_cas",
    "operator_identity",
    "read_secret_data",
    "rotate",
    "rotation_types",
    "secret_data",
    "seed_backend",
    "tls_ca_pin",
]

OPERATOR_USER = "limen-operator"
"""The user name in the operator's admin certificate (what audit events show as the actor)."""


def generate_cas(cluster: str, *, now: datetime | None = None) -> dict[CertAuthorityType,
                                                                        CertAuthority]:
    """Fresh CAs of every type for ``cluster``."""
    return {ca_type: CertAuthority.generate(cluster, ca_type, now=now)
            for ca_type in CertAuthorityType}


def secret_data(cluster: str, cas: Mapping[CertAuthorityType, CertAuthority]) -> dict[str, str]:
    """The Secret's ``data`` (base64 values)."""
    data = {"cluster": cluster}
    for ca_type, ca in cas.items():
        data[f"{ca_type.value}.json"] = json.dumps(ca.to_dict(), sort_keys=True)
    return {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}


def read_secret_data(data: Mapping[str, str]) -> tuple[str, dict[CertAuthorityType,
                                                                  CertAuthority]]:
    """The cluster name and CAs of a Secret's ``data`` (base64 values)."""
    try:
        plain = {key: base64.b64decode(value).decode() for key, value in data.items()}
        cluster = plain["cluster"]
        cas = {ca_type: CertAuthority.from_dict(json.loads(plain[f"{ca_type.value}.json"]))
               for ca_type in CertAuthorityType}
    except (KeyError, ValueError, UnicodeDecodeError) as err:
        raise BadParameter(f"the CA Secret is incomplete or damaged: {err}") from None
    for ca in cas.values():
        if ca.cluster != cluster or not ca.has_private_key:
            raise BadParameter(f"the CA Secret holds a {ca.type.value} CA of {ca.cluster!r} "
                               f"without its private key or for another cluster")
    return cluster, cas


def tls_ca_pin(data: Mapping[str, str]) -> str:
    """``sha256:<hex>`` of the active TLS CA key in a Secret's ``data`` (what auth's
    ``tls_ca_pin`` reports and ``join.ca_pin`` expects)."""
    return read_secret_data(data)[1][CertAuthorityType.TLS].fingerprint


def rotation_types(which: str) -> tuple[CertAuthorityType, ...]:
    """``spec.ca_rotation.type``: one CA type, or ``all``."""
    if which == "all":
        return tuple(CertAuthorityType)
    try:
        return (CertAuthorityType(which),)
    except ValueError:
        raise BadParameter(f"unknown CA type {which!r} to rotate") from None


def rotate(cas: Mapping[CertAuthorityType, CertAuthority], types: Iterable[CertAuthorityType],
           *, now: datetime | None = None) -> dict[CertAuthorityType, CertAuthority]:
    """New active keys for ``types``; their previous keys stay trusted until
    :func:`finish_rotation`."""
    chosen = set(types)
    return {t: (ca.rotate(now=now) if t in chosen else ca) for t, ca in cas.items()}


def finish_rotation(cas: Mapping[CertAuthorityType, CertAuthority],
                    types: Iterable[CertAuthorityType]) -> dict[CertAuthorityType,
                                                                 CertAuthority]:
    """Stop trusting the previous keys of ``types`` (the end of the grace period)."""
    chosen = set(types)
    return {t: (ca.finish_rotation() if t in chosen else ca) for t, ca in cas.items()}


def operator_identity(tls_ca: CertAuthority, ttl: timedelta, *,
                      now: datetime | None = None) -> HostCredentials:
    """An admin identity for the operator, signed by the cluster's TLS CA (kept in memory)."""
    key = generate_private_key()
    identity = Identity(username=OPERATOR_USER, cluster=tls_ca.cluster,
                        system_role=SystemRole.ADMIN)
    cert = sign_client_cert(tls_ca, key.public_key(), identity, ttl, now=now)
    return HostCredentials(
        cluster=tls_ca.cluster, host_id=OPERATOR_USER, role=SystemRole.ADMIN.value,
        private_key_pem=private_key_to_pem(key).encode(),
        tls_cert_pem=cert.public_bytes(Encoding.PEM), tls_ca_pem=tls_ca.pem_bundle().encode())


SEED_ATTEMPTS = 5
"""How often a CA is read and written again when a concurrent writer (another auth pod's
seed, a starting replica) changed it in between."""


async def seed_backend(backend: Backend, cluster: str,
                       cas: Mapping[CertAuthorityType, CertAuthority],
                       sealer: CASealer | None = None) -> list[str]:
    """Make ``backend`` hold exactly these CAs before auth starts (the Secret is the source of
    truth for an operator-managed cluster), encrypted with ``sealer`` when given; returns the
    CA types written. Refuses a backend that already belongs to another cluster, and CA
    records it cannot decrypt (``BadParameter``)."""
    try:
        await backend.create(CLUSTER_NAME_KEY, cluster.encode())
    except AlreadyExists:
        item = await backend.get(CLUSTER_NAME_KEY)
        if item is not None and item.value.decode(errors="replace") != cluster:
            raise BadParameter(f"this backend belongs to cluster "
                               f"{item.value.decode(errors='replace')!r}, not {cluster!r}"
                               ) from None
    written: list[str] = []
    for ca_type, ca in sorted(cas.items()):
        if await _seed_one(backend, cluster, ca, sealer):
            written.append(ca_type.value)
    return written


async def _seed_one(backend: Backend, cluster: str, ca: CertAuthority,
                    sealer: CASealer | None) -> bool:
    """Write ``ca`` unless the backend holds it already (in the form ``sealer`` asks for);
    True when written."""
    key = ca_record_key(cluster, ca.type)
    for _attempt in range(SEED_ATTEMPTS):
        current = await backend.get(key)
        if current is not None and _holds(current.value, cluster, ca, sealer):
            return False
        public_item = await backend.get(ca_public_key(cluster, ca.type))
        try:
            await backend.atomic(*ca_write_ops(
                cluster, ca, record_revision=current.revision if current else 0,
                public_revision=public_item.revision if public_item else 0, sealer=sealer))
        except CompareFailed:
            continue  # written meanwhile (the same Secret, seeded by another pod): read again
        return True
    raise CompareFailed(f"the {ca.type.value} CA record kept changing while seeding; run the "
                        "seed again")


def _holds(stored: bytes, cluster: str, ca: CertAuthority, sealer: CASealer | None) -> bool:
    """Is ``stored`` the record of exactly ``ca``, encrypted when there is a sealer? Decrypts
    it to compare (``BadParameter`` when it cannot: another key, or no key for a sealed one)."""
    current = decode_ca_record(stored, cluster, ca.type, sealer)
    if sealer is not None and not is_sealed(stored):
        return False  # plain: seal it
    return current.to_dict() == ca.to_dict()
