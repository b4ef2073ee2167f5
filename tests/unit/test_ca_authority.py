"""CertAuthority records (limen.ca.authority): generation per type, storage round trip,
public-only exports without private material, rotation, trust maps, JWKS."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from limen.ca.authority import (
    CertAuthority,
    CertAuthorityType,
    ssh_trust_map,
    tls_trust_map,
)
from limen.ca.identity import Identity
from limen.ca.keys import KeyType, generate_private_key, private_key_to_pem
from limen.ca.ssh_certs import sign_user_cert, verify_ssh_user_cert
from limen.ca.x509_certs import sign_client_cert, verify_client_cert
from limen.errors import BadParameter

SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)
ALICE = Identity("alice", "root", roles=("dev",), logins=("alice",))


@pytest.fixture(scope="module")
def cas() -> dict[CertAuthorityType, CertAuthority]:
    return {t: CertAuthority.generate("root", t, now=NOW) for t in CertAuthorityType}


def test_default_key_types_and_certificates(cas: dict[CertAuthorityType, CertAuthority]) -> None:
    assert isinstance(cas[CertAuthorityType.USER].signer, ed25519.Ed25519PrivateKey)
    assert isinstance(cas[CertAuthorityType.HOST].signer, ed25519.Ed25519PrivateKey)
    for t in (CertAuthorityType.TLS, CertAuthorityType.DB, CertAuthorityType.JWT):
        assert isinstance(cas[t].signer, ec.EllipticCurvePrivateKey)
    for t, ca in cas.items():
        assert (ca.active.certificate is not None) == (t in (CertAuthorityType.TLS,
                                                              CertAuthorityType.DB))
    db_cert = cas[CertAuthorityType.DB].active.certificate
    assert db_cert is not None
    assert db_cert.subject.rfc4514_string() == "CN=root db CA,O=root"
    override = CertAuthority.generate("root", "tls", KeyType.ED25519)
    assert isinstance(override.signer, ed25519.Ed25519PrivateKey)


def test_fingerprint_formats(cas: dict[CertAuthorityType, CertAuthority]) -> None:
    assert cas[CertAuthorityType.USER].fingerprint.startswith("SHA256:")
    pin = cas[CertAuthorityType.TLS].fingerprint
    assert pin.startswith("sha256:")
    assert len(pin) == len("sha256:") + 64


@pytest.mark.parametrize("ca_type", list(CertAuthorityType))
def test_dict_round_trip(cas: dict[CertAuthorityType, CertAuthority],
                         ca_type: CertAuthorityType) -> None:
    ca = cas[ca_type].rotate(now=NOW)  # with an additional trusted key
    doc = ca.to_dict()
    text = json.dumps(doc)  # plain data for the backend
    loaded = CertAuthority.from_dict(json.loads(text))
    assert loaded.to_dict() == doc
    assert loaded.cluster == "root"
    assert loaded.type is ca_type
    assert loaded.trusted_public_keys() == ca.trusted_public_keys()
    assert loaded.trusted_certificates() == ca.trusted_certificates()
    assert doc["active"]["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert ca.to_dict() == doc  # deterministic: an unchanged CA stores identical records
    assert "private_key" not in doc["additional_trusted"][0]


def test_loaded_ca_signs_what_the_original_trusts(
    cas: dict[CertAuthorityType, CertAuthority],
) -> None:
    user = CertAuthority.from_dict(cas[CertAuthorityType.USER].to_dict())
    line = sign_user_cert(user, generate_private_key().public_key(), ALICE, HOUR, now=NOW)
    trust = ssh_trust_map([cas[CertAuthorityType.USER]], CertAuthorityType.USER)
    assert verify_ssh_user_cert(line, trust, NOW).username == "alice"
    tls = CertAuthority.from_dict(cas[CertAuthorityType.TLS].to_dict())
    cert = sign_client_cert(tls, generate_private_key().public_key(), ALICE, HOUR, now=NOW)
    assert verify_client_cert(cert, tls_trust_map([cas[CertAuthorityType.TLS]]), NOW)


@pytest.mark.parametrize("ca_type", list(CertAuthorityType))
def test_public_only_has_no_private_material(cas: dict[CertAuthorityType, CertAuthority],
                                             ca_type: CertAuthorityType) -> None:
    ca = cas[ca_type].rotate(now=NOW).rotate(now=NOW)
    public = ca.public_only()
    serialised = json.dumps(public.to_dict())
    assert "PRIVATE KEY" not in serialised
    assert "private_key" not in serialised
    assert not public.has_private_key
    assert all(p.private_key is None for p in public.key_pairs)
    assert "PRIVATE KEY" not in repr(public)
    # the secret itself appears nowhere, in any encoding we produce
    secret = private_key_to_pem(ca.signer).splitlines()[1]
    assert secret not in serialised
    assert public.trusted_public_keys() == ca.trusted_public_keys()
    assert CertAuthority.from_dict(json.loads(serialised)).to_dict() == public.to_dict()
    with pytest.raises(BadParameter, match="public-only"):
        _ = public.signer
    with pytest.raises(BadParameter, match="public-only"):
        public.rotate()


def test_rotation_keeps_old_keys_trusted(cas: dict[CertAuthorityType, CertAuthority]) -> None:
    ca = cas[CertAuthorityType.TLS]
    first = ca.rotate(now=NOW)
    second = first.rotate(now=NOW)
    assert first.active.public_key != ca.active.public_key
    assert first.additional_trusted[0].public_key == ca.active.public_key
    assert first.additional_trusted[0].private_key is None
    assert first.additional_trusted[0].certificate == ca.active.certificate
    assert second.trusted_public_keys() == (
        second.active.public_key, first.active.public_key, ca.active.public_key)
    assert len(second.trusted_certificates()) == 3
    assert second.finish_rotation().trusted_public_keys() == (second.active.public_key,)
    # rotation keeps the key type unless asked otherwise
    ed = ca.rotate(KeyType.ED25519, now=NOW)
    assert isinstance(ed.signer, ed25519.Ed25519PrivateKey)
    assert ca.pem_bundle().count("BEGIN CERTIFICATE") == 1
    assert second.pem_bundle().count("BEGIN CERTIFICATE") == 3


def test_trust_maps_group_by_cluster_and_type() -> None:
    root_user = CertAuthority.generate("root", CertAuthorityType.USER)
    leaf_user = CertAuthority.generate("leaf", CertAuthorityType.USER).rotate()
    root_tls = CertAuthority.generate("root", CertAuthorityType.TLS)
    cas = [root_user, leaf_user, root_tls]
    users = ssh_trust_map(cas, CertAuthorityType.USER)
    assert set(users) == {"root", "leaf"}
    assert len(users["leaf"]) == 2
    assert ssh_trust_map(cas, CertAuthorityType.HOST) == {}
    tls = tls_trust_map(cas)
    assert list(tls) == ["root"]
    assert tls["root"] == root_tls.trusted_certificates()


def test_jwks_lists_every_trusted_key(cas: dict[CertAuthorityType, CertAuthority]) -> None:
    ca = cas[CertAuthorityType.JWT].rotate()
    jwks = ca.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [p.kid for p in ca.key_pairs]
    assert all(k["alg"] == "ES256" and k["kty"] == "EC" for k in jwks["keys"])
    # public members only: no "d" (the private scalar)
    assert all(set(k) == {"kty", "crv", "x", "y", "use", "alg", "kid"} for k in jwks["keys"])


def test_from_dict_rejects_bad_records(cas: dict[CertAuthorityType, CertAuthority]) -> None:
    good = cas[CertAuthorityType.TLS].to_dict()
    with pytest.raises(BadParameter, match="unknown CA type"):
        CertAuthority.from_dict({**good, "type": "bogus"})
    with pytest.raises(BadParameter, match="public_key"):
        CertAuthority.from_dict({**good, "active": {}})
    other_key = private_key_to_pem(generate_private_key(KeyType.ECDSA_P256))
    with pytest.raises(BadParameter, match="does not match"):
        CertAuthority.from_dict({**good, "active": {**good["active"], "private_key": other_key}})
    no_cert = {k: v for k, v in good["active"].items() if k != "certificate"}
    with pytest.raises(BadParameter, match="needs a CA certificate"):
        CertAuthority.from_dict({**good, "active": no_cert})
    with pytest.raises(BadParameter, match="cluster"):
        CertAuthority.from_dict({**good, "cluster": ""})
    with pytest.raises(BadParameter, match="too long"):
        CertAuthority.generate("c" * 60, CertAuthorityType.TLS)


def test_imports_an_existing_ssh_keygen_ca(tmp_path: Path) -> None:
    """An organisation's existing OpenSSH CA key (ssh-keygen, OpenSSH format) can be loaded;
    the record is normalised to PEM and its fingerprint is what ssh-keygen prints."""
    path = tmp_path / "ca"
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True)
    record = {"cluster": "root", "type": "user",
              "active": {"public_key": (tmp_path / "ca.pub").read_text(),
                         "private_key": path.read_text()}}
    ca = CertAuthority.from_dict(record)
    assert ca.to_dict()["active"]["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    printed = subprocess.run([SSH_KEYGEN, "-l", "-f", str(tmp_path / "ca.pub")], check=True,
                             capture_output=True, text=True).stdout.split()[1]
    assert ca.fingerprint == printed
    line = sign_user_cert(ca, generate_private_key().public_key(), ALICE, HOUR, now=NOW)
    assert verify_ssh_user_cert(line, ssh_trust_map([ca], ca.type), NOW).username == "alice"
