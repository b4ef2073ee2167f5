"""Keys (limen.ca.keys): generation, OpenSSH/PEM encodings read back by ``ssh-keygen`` and
``openssl``, SPKI pins computed independently by ``openssl``, JWK thumbprints (RFC 8037)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity
from limen.ca.keys import (
    KeyType,
    generate_private_key,
    jwk_thumbprint,
    key_type_of,
    load_private_key,
    load_public_key,
    pin_matches,
    private_key_to_openssh,
    private_key_to_pem,
    public_jwk,
    public_key_from_jwk,
    public_key_to_openssh,
    public_key_to_pem,
    spki_pin,
)
from limen.ca.ssh_certs import sign_user_cert
from limen.errors import BadParameter

SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


@pytest.mark.parametrize("key_type", list(KeyType))
def test_generate_and_round_trip(key_type: KeyType) -> None:
    key = generate_private_key(key_type)
    assert key_type_of(key) is key_type
    for text in (private_key_to_openssh(key), private_key_to_pem(key)):
        loaded = load_private_key(text)
        assert loaded.public_key() == key.public_key()
    public = key.public_key()
    assert load_public_key(public_key_to_openssh(public, "alice@laptop")) == public
    assert load_public_key(public_key_to_pem(public)) == public


@pytest.mark.parametrize("key_type", list(KeyType))
def test_ssh_keygen_reads_private_key(key_type: KeyType, tmp_path: Path) -> None:
    key = generate_private_key(key_type)
    path = tmp_path / "id"
    path.write_text(private_key_to_openssh(key))
    path.chmod(0o600)
    out = subprocess.run([SSH_KEYGEN, "-y", "-f", str(path)], check=True,
                         capture_output=True, text=True).stdout
    assert out.split()[:2] == public_key_to_openssh(key.public_key()).split()


def test_rejects_unsupported_and_malformed_keys() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(BadParameter, match="unsupported"):
        load_private_key(private_key_to_pem(rsa_key))  # type: ignore[arg-type]
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(BadParameter, match="unsupported"):
        load_public_key(public_key_to_pem(p384.public_key()))  # type: ignore[arg-type]
    with pytest.raises(BadParameter):
        load_public_key("ssh-ed25519 AAAAnotbase64")
    with pytest.raises(BadParameter):
        load_private_key("-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n")
    with pytest.raises(BadParameter, match="unknown key type"):
        generate_private_key("rsa")


def test_certificate_line_is_not_a_public_key() -> None:


    ca = CertAuthority.generate("root", CertAuthorityType.USER)
    line = sign_user_cert(ca, generate_private_key().public_key(),
                          Identity("a", "root", logins=("a",)), timedelta(hours=1))
    with pytest.raises(BadParameter, match="certificate"):
        load_public_key(line)


def test_spki_pin_matches_openssl(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    ca = CertAuthority.generate("root", CertAuthorityType.TLS)
    cert = ca.trusted_certificates()[0]
    pem = tmp_path / "ca.pem"
    pem.write_text(ca.pem_bundle())
    pub = subprocess.run([openssl, "x509", "-in", str(pem), "-noout", "-pubkey"], check=True,
                         capture_output=True).stdout
    der = subprocess.run([openssl, "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    expected = "sha256:" + hashlib.sha256(der).hexdigest()
    assert spki_pin(cert) == expected
    assert spki_pin(cert.public_key()) == expected  # type: ignore[arg-type]
    assert pin_matches(expected.upper().replace("SHA256:", "sha256:"), cert)
    assert pin_matches(f"  {expected}\n", cert)
    assert not pin_matches(expected[:-1] + ("0" if expected[-1] != "0" else "1"), cert)
    assert not pin_matches(spki_pin(generate_private_key().public_key()), cert)


def test_jwk_thumbprint_rfc8037_vector() -> None:
    """RFC 8037 appendix A.3: the Ed25519 JWK thumbprint test vector."""
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    key = public_key_from_jwk(jwk)
    assert isinstance(key, ed25519.Ed25519PublicKey)
    assert jwk_thumbprint(key) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert public_jwk(key)["kid"] == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_p256_jwk_round_trip() -> None:
    key = generate_private_key(KeyType.ECDSA_P256).public_key()
    jwk = public_jwk(key, kid="k1")
    assert jwk["kid"] == "k1"
    assert jwk["alg"] == "ES256"
    assert public_key_from_jwk(jwk) == key
    with pytest.raises(BadParameter, match="unsupported JWK"):
        public_key_from_jwk({"kty": "RSA", "n": "x", "e": "AQAB"})
    with pytest.raises(BadParameter, match="invalid JWK"):
        public_key_from_jwk({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})
