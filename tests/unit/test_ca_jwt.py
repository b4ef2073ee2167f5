"""App-access JWTs (limen.ca.jwt): issue, verify against the JWKS, reject, and check the
signatures independently with ``openssl`` (ES256 raw r||s, EdDSA)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity
from limen.ca.jwt import issue_app_token, sign_jwt, verify_jwt
from limen.ca.keys import KeyType, public_key_to_pem
from limen.errors import AccessDenied, BadParameter

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)
ALICE = Identity("alice", "root", roles=("dev",), traits={"team": ("core",)})
APP = "https://grafana.example"


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _alg(ca: CertAuthority) -> str:
    return "ES256" if isinstance(ca.signer, ec.EllipticCurvePrivateKey) else "EdDSA"


@pytest.fixture(params=[KeyType.ECDSA_P256, KeyType.ED25519], ids=["ES256", "EdDSA"])
def jwt_ca(request: pytest.FixtureRequest) -> CertAuthority:
    return CertAuthority.generate("root", CertAuthorityType.JWT, request.param)


def test_issue_and_verify(jwt_ca: CertAuthority) -> None:
    token = issue_app_token(jwt_ca, ALICE, APP, HOUR, now=NOW)
    header = json.loads(_b64(token.split(".")[0]))
    assert header["kid"] == jwt_ca.active.kid
    assert header["alg"] == _alg(jwt_ca)
    claims = verify_jwt(token, jwt_ca.public_only().jwks(), audience=APP, issuer="root",
                        now=NOW + HOUR - timedelta(seconds=1))
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["dev"]
    assert claims["traits"] == {"team": ["core"]}
    assert claims["exp"] == int((NOW + HOUR).timestamp())


def test_rejections(jwt_ca: CertAuthority) -> None:
    token = issue_app_token(jwt_ca, ALICE, APP, HOUR, now=NOW)
    jwks = jwt_ca.jwks()
    with pytest.raises(AccessDenied, match="expired"):
        verify_jwt(token, jwks, audience=APP, now=NOW + HOUR)
    with pytest.raises(AccessDenied, match="not valid yet"):
        verify_jwt(token, jwks, audience=APP, now=NOW - 2 * timedelta(minutes=1))
    with pytest.raises(AccessDenied, match="not meant for"):
        verify_jwt(token, jwks, audience="https://other.example", now=NOW)
    with pytest.raises(AccessDenied, match="not issued by"):
        verify_jwt(token, jwks, audience=APP, issuer="leaf", now=NOW)
    other = CertAuthority.generate("root", CertAuthorityType.JWT)
    with pytest.raises(AccessDenied, match="unknown key"):
        verify_jwt(token, other.jwks(), audience=APP, now=NOW)
    head, body, sig = token.split(".")
    forged_claims = json.loads(_b64(body)) | {"roles": ["admin"]}
    forged = ".".join([head, base64.urlsafe_b64encode(json.dumps(forged_claims).encode())
                       .decode().rstrip("="), sig])
    with pytest.raises(AccessDenied, match="signature is invalid"):
        verify_jwt(forged, jwks, audience=APP, now=NOW)
    for alg in ("none", "HS256", "EdDSA" if _alg(jwt_ca) == "ES256" else "ES256"):
        header = json.loads(_b64(head)) | {"alg": alg}
        swapped = ".".join([base64.urlsafe_b64encode(json.dumps(header).encode()).decode()
                            .rstrip("="), body, sig])
        with pytest.raises(AccessDenied, match="does not match"):
            verify_jwt(swapped, jwks, audience=APP, now=NOW)
    with pytest.raises(AccessDenied, match="malformed"):
        verify_jwt("a.b", jwks, audience=APP, now=NOW)


def test_rotation_keeps_old_tokens_valid(jwt_ca: CertAuthority) -> None:
    token = issue_app_token(jwt_ca, ALICE, APP, HOUR, now=NOW)
    rotated = jwt_ca.rotate()
    assert verify_jwt(token, rotated.jwks(), audience=APP, now=NOW)["sub"] == "alice"
    fresh = issue_app_token(rotated, ALICE, APP, HOUR, now=NOW)
    assert verify_jwt(fresh, rotated.jwks(), audience=APP, now=NOW)["sub"] == "alice"
    with pytest.raises(AccessDenied, match="unknown key"):
        verify_jwt(token, rotated.finish_rotation().jwks(), audience=APP, now=NOW)


def test_only_jwt_ca_signs() -> None:
    with pytest.raises(BadParameter, match="jwt CA is needed"):
        sign_jwt(CertAuthority.generate("root", CertAuthorityType.TLS), {"sub": "x"})


def test_openssl_verifies_signature(jwt_ca: CertAuthority, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    token = sign_jwt(jwt_ca, {"sub": "alice", "aud": APP, "exp": 2**40})
    signing_input, _, sig_b64 = token.rpartition(".")
    signature = _b64(sig_b64)
    data = tmp_path / "data"
    data.write_bytes(signing_input.encode())
    pub = tmp_path / "pub.pem"
    pub.write_text(public_key_to_pem(jwt_ca.active.public_key))
    sig = tmp_path / "sig"
    if _alg(jwt_ca) == "ES256":
        assert len(signature) == 64
        sig.write_bytes(encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                             int.from_bytes(signature[32:], "big")))
        cmd = [openssl, "dgst", "-sha256", "-verify", str(pub), "-signature", str(sig),
               str(data)]
    else:
        sig.write_bytes(signature)
        cmd = [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin",
               "-in", str(data), "-sigfile", str(sig)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Verified OK" in result.stdout or "Signature Verified Successfully" in result.stdout
