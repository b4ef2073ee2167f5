"""CA private keys encrypted in the backend: the key file (``backend.ca_key_file``: 32 bytes,
base64 or hex, owner-only), the sealed records (AES-256-GCM, a fresh nonce per write, bound to
the CA's cluster and type), auth's CAs stored sealed, a plain store sealed at the next start, a
wrong key refused clearly, the postgres backend refused without a key file, the offline lmctl
and ``lmctl backend migrate`` (plain records sealed on their way into a shared backend)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from limen.auth.auth_service import AuthService
from limen.auth.authorities import ca_record_key, seal_ca_items
from limen.auth.ca_key_file import ca_sealer_for, read_ca_key, sealer_from_file
from limen.auth.ca_sealing import CASealer, decode_ca_record, encode_ca_record, is_sealed
from limen.auth.core import AuthServer
from limen.backend.base import Put
from limen.backend.memory import MemoryBackend
from limen.backend.sqlite import DB_FILENAME, SQLiteBackend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.cli.limen import cli as limen_cli
from limen.cli.lmctl import cli as lmctl_cli
from limen.cli.lmctl_backend import copy_state
from limen.config import BackendSettings, ClusterSettings, Settings, load_settings
from limen.errors import BadParameter
from limen.events.emitter import MemoryEmitter

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def key_file(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    return path


@pytest.fixture
def ca() -> CertAuthority:
    return CertAuthority.generate("unit", CertAuthorityType.TLS)


# -- the key file ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    base64.b64encode(KEY).decode() + "\n",
    base64.urlsafe_b64encode(KEY).decode().rstrip("="),
    "  " + KEY.hex() + "\n",
    KEY.hex().upper(),
], ids=["base64", "urlsafe-unpadded", "hex", "HEX"])
def test_the_key_file_holds_32_bytes_as_base64_or_hex(tmp_path: Path, text: str) -> None:
    assert read_ca_key(key_file(tmp_path / "ca.key", text)) == KEY


@pytest.mark.parametrize(("text", "message"), [
    (base64.b64encode(KEY[:16]).decode(), "holds a 16-byte key, too short: it needs 32 bytes"),
    ("", "holds a 0-byte key, too short"),
    (KEY.hex() + "00", "holds 33 bytes; the key is exactly 32 bytes"),
    ("not a key at all!", "holds neither base64 nor hex"),
    (b"\xff" * 32, "must hold the key as base64 or hex text"),
], ids=["short", "empty", "long", "garbage", "binary"])
def test_a_bad_key_file_is_refused_with_the_reason(tmp_path: Path, text: str | bytes,
                                                   message: str) -> None:
    path = key_file(tmp_path / "ca.key", text)
    with pytest.raises(BadParameter, match=message) as caught:
        read_ca_key(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620], ids=oct)
def test_a_key_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path / "ca.key", KEY.hex(), mode)
    with pytest.raises(BadParameter, match=f"open to its group or others \\(mode {mode:04o}\\)"
                       ".*chmod 600"):
        read_ca_key(path)


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BadParameter, match=f"cannot read backend.ca_key_file {tmp_path}/none"):
        read_ca_key(tmp_path / "none")


def test_the_key_never_appears_in_a_refusal(tmp_path: Path) -> None:
    path = key_file(tmp_path / "ca.key", KEY.hex(), 0o644)
    with pytest.raises(BadParameter) as caught:
        read_ca_key(path)
    assert KEY.hex() not in str(caught.value)


def test_postgres_requires_a_key_file_and_sqlite_does_not(tmp_path: Path) -> None:
    with pytest.raises(BadParameter, match=r"backend\.type postgres needs backend\.ca_key_file"):
        ca_sealer_for(BackendSettings(type="postgres", dsn_file="/x"))
    assert ca_sealer_for(BackendSettings()) is None
    path = key_file(tmp_path / "ca.key", KEY.hex())
    sealer = ca_sealer_for(BackendSettings(ca_key_file=str(path)))  # sqlite may encrypt too
    assert sealer is not None
    assert sealer.key_id == CASealer(KEY).key_id


def test_limen_start_on_postgres_without_a_key_file_refuses_to_start(tmp_path: Path) -> None:
    dsn = key_file(tmp_path / "dsn", "host=/nowhere dbname=limen")
    config = tmp_path / "limen.yaml"
    config.write_text(f"backend: {{type: postgres, dsn_file: {dsn}}}\n")
    result = CliRunner().invoke(limen_cli, ["start", "-c", str(config), "--data-dir",
                                            str(tmp_path / "data"), "--roles", "auth"])
    assert result.exit_code == 1, result.output
    assert "config backend.ca_key_file: required with backend.type postgres" in result.output
    proxy = load_settings(config, env={}, overrides={"roles": ["proxy"]})  # needs no CA key
    assert proxy.backend.type == "postgres"


def test_auth_refuses_a_loose_key_file_before_serving(tmp_path: Path) -> None:
    path = key_file(tmp_path / "ca.key", KEY.hex(), 0o644)
    settings = Settings(backend=BackendSettings(type="postgres", dsn_file="/x",
                                                ca_key_file=str(path)))
    with pytest.raises(BadParameter, match="open to its group or others"):
        AuthService(settings, MemoryBackend(sweep_interval=None), MemoryEmitter())
    path.chmod(0o600)
    service = AuthService(settings, MemoryBackend(sweep_interval=None), MemoryEmitter())
    assert service.server.ca_sealer is not None


# -- sealed records -------------------------------------------------------------------------


def test_a_sealed_record_holds_no_private_key_and_reads_back(ca: CertAuthority) -> None:
    sealer = CASealer(KEY)
    first, second = encode_ca_record(ca, sealer), encode_ca_record(ca, sealer)
    assert b"PRIVATE KEY" not in first
    assert is_sealed(first)
    assert json.loads(first)["nonce"] != json.loads(second)["nonce"]  # a new nonce per write
    back = decode_ca_record(first, "unit", CertAuthorityType.TLS, sealer)
    assert back.to_dict() == ca.to_dict()


def test_without_a_sealer_records_stay_plain(ca: CertAuthority) -> None:
    plain = encode_ca_record(ca, None)
    assert not is_sealed(plain)
    assert json.loads(plain) == ca.to_dict()
    assert decode_ca_record(plain, "unit", CertAuthorityType.TLS, CASealer(KEY)).fingerprint \
        == ca.fingerprint


def test_another_key_is_refused_naming_both_key_ids(ca: CertAuthority) -> None:
    sealed = encode_ca_record(ca, CASealer(KEY))
    other = CASealer(OTHER_KEY, source="backend.ca_key_file /etc/other.key")
    with pytest.raises(BadParameter) as caught:
        decode_ca_record(sealed, "unit", CertAuthorityType.TLS, other)
    message = str(caught.value)
    assert f"key id {CASealer(KEY).key_id}" in message
    assert f"/etc/other.key (key id {other.key_id})" in message
    assert "every auth replica needs the same backend.ca_key_file" in message


def test_a_sealed_record_without_a_key_says_what_to_set(ca: CertAuthority) -> None:
    with pytest.raises(BadParameter, match=r"is encrypted .*set backend\.ca_key_file"):
        decode_ca_record(encode_ca_record(ca, CASealer(KEY)), "unit", CertAuthorityType.TLS,
                         None)


def test_a_record_moved_to_another_ca_or_altered_does_not_open(ca: CertAuthority) -> None:
    sealer = CASealer(KEY)
    sealed = encode_ca_record(ca, sealer)
    with pytest.raises(BadParameter, match="altered or belongs to another CA"):
        decode_ca_record(sealed, "unit", CertAuthorityType.DB, sealer)
    with pytest.raises(BadParameter, match="altered or belongs to another CA"):
        decode_ca_record(sealed, "other", CertAuthorityType.TLS, sealer)
    doc = json.loads(sealed)
    raw = bytearray(base64.b64decode(doc["ciphertext"]))
    raw[0] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(BadParameter, match="altered"):
        decode_ca_record(json.dumps(doc).encode(), "unit", CertAuthorityType.TLS, sealer)
    for damaged in (b"not json", b"[1]", json.dumps({**doc, "nonce": "!!"}).encode(),
                    json.dumps({**doc, "nonce": base64.b64encode(b"x").decode()}).encode(),
                    json.dumps({**doc, "sealed": "ROT13"}).encode()):
        with pytest.raises(BadParameter):
            decode_ca_record(damaged, "unit", CertAuthorityType.TLS, sealer)


# -- auth's CAs ------------------------------------------------------------------------------


async def _started(backend: MemoryBackend | SQLiteBackend,
                   sealer: CASealer | None) -> AuthServer:
    server = AuthServer(backend, ClusterSettings(name="unit"), MemoryEmitter(), ca_sealer=sealer)
    await server.start()
    return server


async def test_auth_stores_every_ca_sealed_and_a_second_start_loads_the_same() -> None:
    backend = MemoryBackend(sweep_interval=None)
    first = await _started(backend, CASealer(KEY))
    for ca_type in CertAuthorityType:
        item = await backend.get(ca_record_key("unit", ca_type))
        assert item is not None
        assert is_sealed(item.value)
        assert b"PRIVATE KEY" not in item.value
    second = await _started(backend, CASealer(KEY))
    assert second.status()["ca_fingerprints"] == first.status()["ca_fingerprints"]
    with pytest.raises(BadParameter, match="encrypted with another key"):
        await _started(backend, CASealer(OTHER_KEY))
    with pytest.raises(BadParameter, match="is encrypted"):
        await _started(backend, None)


async def test_a_plain_store_is_sealed_when_a_key_file_is_added(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / DB_FILENAME, sweep_interval=None, compact_interval=None)
    try:
        plain = await _started(backend, None)
        item = await backend.get(ca_record_key("unit", CertAuthorityType.USER))
        assert item is not None
        assert b"PRIVATE KEY" in item.value
        sealed = await _started(backend, CASealer(KEY))
        assert sealed.status()["ca_fingerprints"] == plain.status()["ca_fingerprints"]
        for ca_type in CertAuthorityType:
            item = await backend.get(ca_record_key("unit", ca_type))
            assert item is not None
            assert is_sealed(item.value)
    finally:
        await backend.close()


def test_the_offline_lmctl_reads_sealed_cas_with_LIMEN_CA_KEY_FILE(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    path = key_file(tmp_path / "ca.key", KEY.hex())

    async def bootstrap() -> dict[str, str]:
        backend = SQLiteBackend(data / DB_FILENAME, sweep_interval=None, compact_interval=None)
        try:
            fingerprints: dict[str, str] = (await _started(backend, sealer_from_file(path))
                                            ).status()["ca_fingerprints"]
            return fingerprints
        finally:
            await backend.close()

    expected = asyncio.run(bootstrap())
    runner = CliRunner()
    refused = runner.invoke(lmctl_cli, ["--data-dir", str(data), "status", "-o", "json"],
                            env={"LIMEN_CA_KEY_FILE": None})
    assert refused.exit_code == 1
    assert "LIMEN_CA_KEY_FILE" in refused.output
    shown = runner.invoke(lmctl_cli, ["--data-dir", str(data), "status", "-o", "json"],
                          env={"LIMEN_CA_KEY_FILE": str(path)})
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["ca_fingerprints"] == expected


# -- migration -------------------------------------------------------------------------------


async def test_migrating_seals_plain_ca_records_and_refuses_without_a_key() -> None:
    source = MemoryBackend(sweep_interval=None)
    await _started(source, None)
    await source.atomic([], [Put("/other", b"kept as is")])
    with pytest.raises(BadParameter, match="plain text and the target keeps them encrypted"):
        await copy_state(source, MemoryBackend(sweep_interval=None), require_sealed=True)

    target = MemoryBackend(sweep_interval=None)
    copied = await copy_state(source, target, ca_sealer=CASealer(KEY), require_sealed=True)
    assert copied.sealed == len(CertAuthorityType)
    assert all(b"PRIVATE KEY" not in item.value for item in await target.list(""))
    assert (await target.get("/other")) is not None
    moved = await _started(target, CASealer(KEY))
    original = await _started(source, None)
    assert moved.status()["ca_fingerprints"] == original.status()["ca_fingerprints"]

    # sealed records are copied as they are, once the key is known to open them
    again = MemoryBackend(sweep_interval=None)
    items, sealed = seal_ca_items(await target.list(""), CASealer(KEY), require=True)
    assert sealed == 0
    assert items == await target.list("")
    with pytest.raises(BadParameter, match="another key"):
        await copy_state(target, again, ca_sealer=CASealer(OTHER_KEY), require_sealed=True)
    assert await again.list("") == []


def test_lmctl_backend_migrate_takes_a_ca_key_file(tmp_path: Path) -> None:
    source, target = tmp_path / "from", tmp_path / "to"
    source.mkdir(mode=0o700)

    async def bootstrap() -> None:
        backend = SQLiteBackend(source / DB_FILENAME, sweep_interval=None,
                                compact_interval=None)
        try:
            await _started(backend, None)
        finally:
            await backend.close()

    asyncio.run(bootstrap())
    path = key_file(tmp_path / "ca.key", base64.b64encode(KEY).decode())
    result = CliRunner().invoke(lmctl_cli, ["backend", "migrate", "--from", f"sqlite:{source}",
                                            "--to", f"sqlite:{target}", "--ca-key-file",
                                            str(path)])
    assert result.exit_code == 0, result.output
    assert f"({len(CertAuthorityType)} CA private keys encrypted)" in result.output
    with (target / DB_FILENAME).open("rb") as handle:
        assert b"PRIVATE KEY" not in handle.read()
