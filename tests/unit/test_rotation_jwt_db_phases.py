"""The CA rotation phase machine (limen.auth.rotation) for the db and jwt CAs: which key signs
the db agents' upstream certificates and the app JWTs in each phase, what the db CA's export
(the bundle a database trusts) and the JWKS hold, rollback, and the TLS CA's refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from limen.auth.app_jwt import sign_app_jwt
from limen.auth.audit_signer import audit_keys
from limen.auth.rotation import (
    ROTATABLE,
    Phase,
    RotationRefused,
    RotationState,
    advance,
    key_fingerprint,
)
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity
from limen.ca.jwt import verify_jwt
from limen.ca.keys import KeyType, generate_private_key, spki_pin
from limen.ca.x509_certs import sign_db_client_cert
from limen.errors import AccessDenied
from limen.events import make_event
from limen.events.chain import KeySigner
from limen.events.filelog import FileLog
from limen.events.verify import verify_files

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DB, JWT = CertAuthorityType.DB, CertAuthorityType.JWT
ALICE = Identity(username="alice", cluster="unit", roles=("dev",))
PATH = (Phase.INIT, Phase.UPDATE_CLIENTS, Phase.UPDATE_SERVERS, Phase.STANDBY)


def _bundle_pins(ca: CertAuthority) -> list[str]:
    """The keys of the CA certificates in the db CA's export (what the database trusts)."""
    return [spki_pin(c.public_key()) for c in x509.load_pem_x509_certificates(
        ca.public_only().pem_bundle().encode())]


def _upstream_signer(ca: CertAuthority) -> str:
    """The key that signs a db agent's upstream certificate now (checked by signature)."""
    key = generate_private_key(KeyType.ECDSA_P256).public_key()
    cert = sign_db_client_cert(ca, key, "alice", timedelta(minutes=5), now=NOW)
    cert = x509.load_pem_x509_certificate(cert.public_bytes(Encoding.PEM))
    signers = [c for c in ca.trusted_certificates() if _issued_by(cert, c)]
    assert len(signers) == 1
    return spki_pin(signers[0].public_key())


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):  # another key, or another name
        return False
    return True


def test_db_and_jwt_rotate_but_not_tls() -> None:
    assert DB in ROTATABLE
    assert JWT in ROTATABLE
    tls = CertAuthority.generate("unit", CertAuthorityType.TLS)
    with pytest.raises(RotationRefused, match="tls CA is not rotated by phases: every "
                                              "process's joined credentials"):
        advance(tls, RotationState(), Phase.INIT, now=NOW)


def test_db_rotation_signer_and_export_per_phase() -> None:
    ca = CertAuthority.generate("unit", DB, now=NOW)
    old = key_fingerprint(DB, ca.active)
    state = RotationState()
    seen: dict[Phase, tuple[str, list[str]]] = {}
    for phase in PATH:
        ca, state = advance(ca, state, phase, now=NOW)
        if phase is Phase.INIT:
            new = state.new_key
        seen[phase] = (_upstream_signer(ca), _bundle_pins(ca))
    assert seen[Phase.INIT] == (old, [old, new])  # new trusted (exported), old signs
    assert seen[Phase.UPDATE_CLIENTS] == (new, [new, old])  # new signs, both exported
    assert seen[Phase.UPDATE_SERVERS] == (new, [new, old])
    assert seen[Phase.STANDBY] == (new, [new])  # the old CA left the export


@pytest.mark.parametrize("from_phase", [Phase.INIT, Phase.UPDATE_CLIENTS, Phase.UPDATE_SERVERS])
def test_db_rollback_signs_with_the_old_key_again(from_phase: Phase) -> None:
    ca = CertAuthority.generate("unit", DB, now=NOW)
    old = key_fingerprint(DB, ca.active)
    state = RotationState()
    for phase in PATH[:PATH.index(from_phase) + 1]:
        ca, state = advance(ca, state, phase, now=NOW)
    new = state.new_key
    ca, state = advance(ca, state, Phase.ROLLBACK, now=NOW)
    assert _upstream_signer(ca) == old
    assert _bundle_pins(ca) == [old, new]  # the new CA stays trusted until standby
    ca, state = advance(ca, state, Phase.STANDBY, now=NOW)
    assert (_upstream_signer(ca), _bundle_pins(ca)) == (old, [old])


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def test_jwt_rotation_kid_and_jwks_per_phase() -> None:
    ca = CertAuthority.generate("unit", JWT, now=NOW)
    old_kid = ca.active.kid
    state = RotationState()
    tokens: dict[Phase, str] = {}
    for phase in PATH:
        ca, state = advance(ca, state, phase, now=NOW)
        token, _ = sign_app_jwt(ca, ALICE, "https://app.example", NOW)
        tokens[phase] = token
        jwks = ca.public_only().jwks()
        kids = [k["kid"] for k in jwks["keys"]]
        claims = verify_jwt(token, jwks, audience="https://app.example", issuer="unit", now=NOW)
        assert claims["sub"] == "alice"
        if phase is Phase.INIT:
            new_kid = ca.additional_trusted[0].kid
            assert kids == [old_kid, new_kid]  # published, not signing
            assert _kid(token) == old_kid
        elif phase is Phase.STANDBY:
            assert kids == [new_kid]
            assert _kid(token) == new_kid
        else:
            assert kids == [new_kid, old_kid]  # the new key signs, both published
            assert _kid(token) == new_kid
    with pytest.raises(AccessDenied, match="unknown key"):  # the old key left the JWKS
        verify_jwt(tokens[Phase.INIT], ca.public_only().jwks(), audience="https://app.example",
                   now=NOW)


def test_jwt_rollback_signs_with_the_old_key_again() -> None:
    ca = CertAuthority.generate("unit", JWT, now=NOW)
    old_kid = ca.active.kid
    state = RotationState()
    for phase in (Phase.INIT, Phase.UPDATE_CLIENTS, Phase.ROLLBACK):
        ca, state = advance(ca, state, phase, now=NOW)
    new_kid = ca.additional_trusted[0].kid
    token, _ = sign_app_jwt(ca, ALICE, "https://app.example", NOW)
    assert _kid(token) == old_kid
    assert [k["kid"] for k in ca.public_only().jwks()["keys"]] == [old_kid, new_kid]
    ca, state = advance(ca, state, Phase.STANDBY, now=NOW)
    assert [k["kid"] for k in ca.public_only().jwks()["keys"]] == [old_kid]


def _logged(directory: Path, ca: CertAuthority, user: str) -> None:
    """One event written to the audit log in ``directory`` and the log closed: its close
    checkpoint is signed by ``ca``'s signing key, as auth's (``audit_signer_source``)."""
    log = FileLog(directory, fsync=False, signer=lambda: KeySigner(ca.signer, ca.active.kid))
    try:
        log.write(make_event("user.login", cluster="unit", user=user, method="password"))
    finally:
        log.close()


def test_audit_checkpoints_of_a_retired_jwt_key_still_verify(tmp_path: Path) -> None:
    """The jwt CA signs the audit log's checkpoints: after standby its stored document still
    names the retired key (trusted for nothing else), so ``lmctl audit verify`` of the days
    before the rotation passes; without it they do not."""
    ca = CertAuthority.generate("unit", JWT, now=NOW)
    before = ca.public_only()
    _logged(tmp_path, ca, "before")
    state = RotationState()
    for phase in PATH:
        ca, state = advance(ca, state, phase, now=NOW)
    _logged(tmp_path, ca, "after")
    document = {**ca.public_only().to_dict(), "rotation": state.to_dict()}
    assert state.retired == (before.active.ssh_public_key,)
    assert [k["kid"] for k in ca.public_only().jwks()["keys"]] == [ca.active.kid]
    reports = verify_files(tmp_path, audit_keys(document), live=False)
    assert reports
    assert all(r.intact for r in reports), reports
    assert set().union(*(r.kids for r in reports)) == {before.active.kid, ca.active.kid}
    without_retired = audit_keys(ca.public_only().to_dict())
    assert not all(r.intact for r in verify_files(tmp_path, without_retired, live=False))
