"""The CA Secret of an operator-managed cluster: its data format, rotation, seeding auth's
backend (then a real AuthServer loads exactly those CAs), and the operator's own identity."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest

from limen.auth.core import AuthServer
from limen.backend.factory import open_backend
from limen.ca.authority import CertAuthority, CertAuthorityType, tls_trust_map
from limen.ca.identity import SystemRole
from limen.ca.x509_certs import verify_client_cert
from limen.config import ClusterSettings
from limen.errors import BadParameter
from limen.events.emitter import MemoryEmitter
from limen.operator.ca_secret import (
    OPERATOR_USER,
    finish_rotation,
    generate_cas,
    operator_identity,
    read_secret_data,
    rotate,
    rotation_types,
    secret_data,
    seed_backend,
)
from limen.operator.main import read_ca_dir, seed_ca_from_dir, write_operator_identity

CAs = dict[CertAuthorityType, CertAuthority]


@pytest.fixture(scope="module")
def cas() -> dict[CertAuthorityType, CertAuthority]:
    return generate_cas("prod")


def test_secret_data_round_trips_with_private_keys(cas: CAs) -> None:
    data = secret_data("prod", cas)
    assert set(data) == {"cluster", "user.json", "host.json", "tls.json", "db.json", "jwt.json"}
    assert base64.b64decode(data["cluster"]) == b"prod"
    cluster, back = read_secret_data(data)
    assert cluster == "prod"
    assert {t: ca.to_dict() for t, ca in back.items()} == {t: ca.to_dict()
                                                           for t, ca in cas.items()}
    assert all(ca.has_private_key for ca in back.values())


def test_damaged_or_public_only_secret_is_refused(cas: CAs) -> None:
    data = secret_data("prod", cas)
    with pytest.raises(BadParameter, match="incomplete or damaged"):
        read_secret_data({k: v for k, v in data.items() if k != "tls.json"})
    public = dict(cas)
    public[CertAuthorityType.TLS] = cas[CertAuthorityType.TLS].public_only()
    with pytest.raises(BadParameter, match="without its private key"):
        read_secret_data(secret_data("prod", public))


def test_rotation_keeps_the_old_key_trusted_until_finished(cas: CAs) -> None:
    assert rotation_types("all") == tuple(CertAuthorityType)
    assert rotation_types("user") == (CertAuthorityType.USER,)
    with pytest.raises(BadParameter):
        rotation_types("nope")
    rotated = rotate(cas, [CertAuthorityType.USER])
    user, old = rotated[CertAuthorityType.USER], cas[CertAuthorityType.USER]
    assert user.fingerprint != old.fingerprint
    assert old.active.public_only().to_dict() in [p.to_dict() for p in user.additional_trusted]
    assert rotated[CertAuthorityType.HOST] is cas[CertAuthorityType.HOST]
    done = finish_rotation(rotated, [CertAuthorityType.USER])
    assert done[CertAuthorityType.USER].additional_trusted == ()
    assert done[CertAuthorityType.USER].fingerprint == user.fingerprint


def test_operator_identity_is_an_admin_of_that_cluster(cas: CAs) -> None:
    creds = operator_identity(cas[CertAuthorityType.TLS], timedelta(hours=1))
    identity = verify_client_cert(creds.tls_cert_pem,
                                  tls_trust_map([cas[CertAuthorityType.TLS]]))
    assert identity.system_role is SystemRole.ADMIN
    assert (identity.username, identity.cluster) == (OPERATOR_USER, "prod")
    assert creds.role == "admin"


async def auth_fingerprints(data_dir: Path) -> dict[str, str]:
    """Start a real AuthServer on ``data_dir``'s backend; its CA fingerprints."""
    backend = open_backend(data_dir)
    try:
        server = AuthServer(backend, ClusterSettings(name="prod"), MemoryEmitter())
        await server.start()
        return {t.value: server.authorities.get(t).fingerprint for t in CertAuthorityType}
    finally:
        await backend.close()


def mount(tmp_path: Path, data: dict[str, str]) -> Path:
    """The CA Secret as Kubernetes mounts it: one file per key, decoded."""
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir(exist_ok=True)
    for key, value in data.items():
        (ca_dir / key).write_bytes(base64.b64decode(value))
    return ca_dir


async def test_seeded_backend_is_what_auth_loads(tmp_path: Path, cas: CAs) -> None:
    ca_dir = mount(tmp_path, secret_data("prod", cas))
    assert read_ca_dir(ca_dir) == secret_data("prod", cas)
    data_dir = tmp_path / "data"
    written = await asyncio.to_thread(seed_ca_from_dir, ca_dir, data_dir)
    assert sorted(written) == sorted(t.value for t in CertAuthorityType)
    expected = {t.value: ca.fingerprint for t, ca in cas.items()}
    assert await auth_fingerprints(data_dir) == expected
    # again: nothing to write, and auth (which started once) still has the same CAs
    assert await asyncio.to_thread(seed_ca_from_dir, ca_dir, data_dir) == []
    assert await auth_fingerprints(data_dir) == expected
    # a rotation in the Secret reaches the backend
    rotated = rotate(cas, [CertAuthorityType.HOST])
    mount(tmp_path, secret_data("prod", rotated))
    assert await asyncio.to_thread(seed_ca_from_dir, ca_dir, data_dir) == ["host"]
    fingerprints = await auth_fingerprints(data_dir)
    assert fingerprints["host"] == rotated[CertAuthorityType.HOST].fingerprint
    assert fingerprints["user"] == expected["user"]
    # the identity the operator would mint from the same TLS CA
    out = tmp_path / "identity"
    creds = await asyncio.to_thread(write_operator_identity, data_dir, out,
                                    timedelta(days=365))
    assert json.loads((out / "meta.json").read_text())["role"] == "admin"
    assert creds.cluster == "prod"


async def test_seed_refuses_another_clusters_backend(tmp_path: Path, cas: CAs) -> None:
    backend = open_backend(tmp_path)
    try:
        await seed_backend(backend, "prod", cas)
        with pytest.raises(BadParameter, match="belongs to cluster 'prod'"):
            await seed_backend(backend, "other", generate_cas("other"))
    finally:
        await backend.close()
