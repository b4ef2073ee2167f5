"""The operator's seeding of a Cluster's CAs into auth's backend when the records are encrypted
(``backend.ca_key_file``; every PostgreSQL Cluster has one, the ``<name>-ca-key`` Secret):
``limen.operator.ca_secret.seed_backend`` writes them sealed, compares what it finds by
decrypting it (a second seed writes nothing: no new nonce, no new revision, which a plain-JSON
comparison of a sealed record would never see), seals a plain record it finds, rewrites only
the CA a rotation changed, stops at a record sealed with another key or a sealed record
without a key, and survives another seed writing at the same moment (several auth pods start
at once). Then ``limen operator seed-ca --config`` on auth's limen.yaml (SQLite with a key file
here, the real PostgreSQL below) and ``limen operator identity --ca-key-file``; a real
AuthServer with the key loads exactly the seeded CAs."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pg_backend_db import backend_database

from dbservers import PostgresServer
from limen.auth.authorities import ca_record_key
from limen.auth.ca_sealing import CASealer, is_sealed
from limen.auth.core import AuthServer
from limen.backend.base import Backend
from limen.backend.factory import open_backend
from limen.backend.memory import MemoryBackend
from limen.backend.postgres import PostgresBackend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.cli.limen import cli as limen_cli
from limen.config import ClusterSettings
from limen.errors import BadParameter
from limen.events.emitter import MemoryEmitter
from limen.operator.ca_secret import generate_cas, rotate, secret_data, seed_backend
from limen.operator.main import seed_ca_from_dir

CAs = dict[CertAuthorityType, CertAuthority]
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
ALL_TYPES = sorted(t.value for t in CertAuthorityType)


@pytest.fixture(scope="module")
def cas() -> CAs:
    return generate_cas("prod")


@pytest.fixture
async def backend() -> AsyncIterator[MemoryBackend]:
    made = MemoryBackend(sweep_interval=None)
    yield made
    await made.close()


async def records(backend: Backend) -> dict[str, tuple[bytes, int]]:
    """The CA records by type: (stored value, revision)."""
    found: dict[str, tuple[bytes, int]] = {}
    for ca_type in CertAuthorityType:
        item = await backend.get(ca_record_key("prod", ca_type))
        if item is not None:
            found[ca_type.value] = (item.value, item.revision)
    return found


async def loaded_by_auth(backend: Backend, sealer: CASealer | None) -> dict[str, str]:
    """What a real AuthServer with ``sealer`` loads: its CA fingerprints."""
    server = AuthServer(backend, ClusterSettings(name="prod"), MemoryEmitter(),
                        ca_sealer=sealer)
    await server.start()
    return {t.value: server.authorities.get(t).fingerprint for t in CertAuthorityType}


def fingerprints(cas: CAs) -> dict[str, str]:
    return {t.value: ca.fingerprint for t, ca in cas.items()}


async def test_the_seed_writes_sealed_records_once(backend: MemoryBackend, cas: CAs) -> None:
    sealer = CASealer(KEY)
    assert sorted(await seed_backend(backend, "prod", cas, sealer)) == ALL_TYPES
    first = await records(backend)
    assert all(is_sealed(value) for value, _ in first.values())
    assert not any(b"PRIVATE KEY" in value for value, _ in first.values())
    # again: decrypted and found equal, so nothing is rewritten (same nonce, same revision)
    assert await seed_backend(backend, "prod", cas, sealer) == []
    assert await records(backend) == first
    assert await loaded_by_auth(backend, sealer) == fingerprints(cas)
    # a rotation in the Secret rewrites that CA only
    rotated = rotate(cas, [CertAuthorityType.USER])
    assert await seed_backend(backend, "prod", rotated, sealer) == ["user"]
    after = await records(backend)
    assert {t for t in ALL_TYPES if after[t] != first[t]} == {"user"}
    assert is_sealed(after["user"][0])
    assert (await loaded_by_auth(backend, sealer))["user"] == (
        rotated[CertAuthorityType.USER].fingerprint)


async def test_a_plain_record_is_sealed_by_the_seed(backend: MemoryBackend, cas: CAs) -> None:
    assert sorted(await seed_backend(backend, "prod", cas)) == ALL_TYPES  # SQLite, no key
    assert not any(is_sealed(value) for value, _ in (await records(backend)).values())
    assert sorted(await seed_backend(backend, "prod", cas, CASealer(KEY))) == ALL_TYPES
    assert all(is_sealed(value) for value, _ in (await records(backend)).values())
    assert await seed_backend(backend, "prod", cas, CASealer(KEY)) == []


async def test_records_it_cannot_decrypt_are_never_overwritten(backend: MemoryBackend,
                                                               cas: CAs) -> None:
    await seed_backend(backend, "prod", cas, CASealer(KEY))
    before = await records(backend)
    other = CASealer(OTHER_KEY)
    with pytest.raises(BadParameter, match=f"encrypted with another key \\(key id "
                                           f"{CASealer(KEY).key_id}\\).*{other.key_id}"):
        await seed_backend(backend, "prod", cas, other)
    with pytest.raises(BadParameter, match=r"is encrypted .*set backend\.ca_key_file"):
        await seed_backend(backend, "prod", cas)
    assert await records(backend) == before


async def test_concurrent_seeds_agree(backend: MemoryBackend, cas: CAs) -> None:
    """Two auth pods' init containers at once: both finish, and the records are the CAs."""
    sealer = CASealer(KEY)
    written = await asyncio.gather(*(seed_backend(backend, "prod", cas, sealer)
                                     for _ in range(4)))
    assert all(set(w) <= set(ALL_TYPES) for w in written)
    assert set().union(*map(set, written)) == set(ALL_TYPES)
    assert await loaded_by_auth(backend, sealer) == fingerprints(cas)


def mount_secret(directory: Path, data: dict[str, str]) -> Path:
    """A Secret as Kubernetes mounts it: one file per key, decoded."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in data.items():
        (directory / key).write_bytes(base64.b64decode(value))
    return directory


def private_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def test_seed_ca_reads_the_backend_and_key_of_auths_config(tmp_path: Path, cas: CAs) -> None:
    ca_dir = mount_secret(tmp_path / "ca", secret_data("prod", cas))
    key_file = private_file(tmp_path / "ca.key", base64.b64encode(KEY).decode())
    config = tmp_path / "limen.yaml"
    config.write_text(yaml.safe_dump({"backend": {"type": "sqlite",
                                                  "ca_key_file": str(key_file)}}))
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(limen_cli, ["operator", "seed-ca", "--ca-dir", str(ca_dir),
                                            "--data-dir", str(data_dir), "--config",
                                            str(config)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("CAs written: ")
    assert seed_ca_from_dir(ca_dir, data_dir, config) == []

    async def stored() -> dict[str, tuple[bytes, int]]:
        backend = open_backend(data_dir)
        try:
            return await records(backend)
        finally:
            await backend.close()

    assert all(is_sealed(value) for value, _ in asyncio.run(stored()).values())
    # the operator's identity from the sealed data directory needs the key
    out = tmp_path / "identity"
    refused = CliRunner().invoke(limen_cli, ["operator", "identity", "--data-dir",
                                             str(data_dir), "--out", str(out)], env={})
    assert refused.exit_code != 0
    assert "is encrypted" in refused.output
    made = CliRunner().invoke(limen_cli, ["operator", "identity", "--data-dir", str(data_dir),
                                          "--out", str(out), "--ttl", "1h"],
                              env={"LIMEN_CA_KEY_FILE": str(key_file)})
    assert made.exit_code == 0, made.output
    assert json.loads((out / "meta.json").read_text())["cluster"] == "prod"


async def test_seed_ca_on_postgres_through_auths_config(
        tmp_path: Path, cas: CAs, postgres_server: PostgresServer) -> None:
    dsn = backend_database(postgres_server, "limen_operator_seed", icu=False)
    ca_dir = mount_secret(tmp_path / "ca", secret_data("prod", cas))
    config = tmp_path / "limen.yaml"
    config.write_text(yaml.safe_dump({"backend": {
        "type": "postgres", "dsn_file": str(private_file(tmp_path / "dsn", dsn)),
        "ca_key_file": str(private_file(tmp_path / "ca.key", KEY.hex()))}}))
    seeded = await asyncio.gather(*(asyncio.to_thread(seed_ca_from_dir, ca_dir,
                                                      tmp_path / f"data-{n}", config)
                                    for n in range(2)))  # two auth pods at once
    assert set().union(*map(set, seeded)) == set(ALL_TYPES)
    backend = PostgresBackend(dsn, sweep_interval=None, compact_interval=None)
    try:
        stored = await records(backend)
        assert all(is_sealed(value) for value, _ in stored.values())
        assert await asyncio.to_thread(seed_ca_from_dir, ca_dir, tmp_path / "data-2",
                                       config) == []
        assert await records(backend) == stored
        assert await loaded_by_auth(backend, CASealer(KEY)) == fingerprints(cas)
    finally:
        await backend.close()
    rows = postgres_server.sql(
        "SELECT count(*) FROM limen_backend_items WHERE key LIKE '/secrets/ca/%' AND "
        "position('PRIVATE KEY'::bytea IN value) > 0", db="limen_operator_seed")
    assert rows == "0"
