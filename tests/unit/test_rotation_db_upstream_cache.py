"""The db agent's upstream certificate cache (limen.agents.db.upstream_tls) across a rotation
of the db CA: a certificate is reused while the signer is unchanged and issued again, by the
key that signs now, once it changes (update_clients, standby, rollback)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from limen.agents.db.upstream_tls import UpstreamCerts, UpstreamTarget, ca_mark
from limen.auth.rotation import Phase, RotationState, advance
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.keys import load_public_key, spki_pin
from limen.ca.x509_certs import sign_db_client_cert

TARGET = UpstreamTarget("127.0.0.1", 5432, "verify-ca", "", "127.0.0.1")


class _Auth:
    """The DB CA as auth holds it, moved through the phases; signs like issue_upstream_cert."""

    def __init__(self) -> None:
        self.ca = CertAuthority.generate("unit", CertAuthorityType.DB)
        self.state = RotationState()

    def move(self, phase: Phase) -> None:
        self.ca, self.state = advance(self.ca, self.state, phase, now=datetime.now(UTC))

    def signer(self) -> str:
        return ca_mark(self.ca)

    async def issue(self, db_user: str, public_key: str) -> tuple[bytes, bytes]:
        cert = sign_db_client_cert(self.ca, load_public_key(public_key), db_user,
                                   timedelta(hours=1), now=datetime.now(UTC))
        return cert.public_bytes(Encoding.PEM), self.ca.pem_bundle().encode()


def _signed_by(cert_pem: bytes, auth: _Auth) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    for ca_cert in auth.ca.trusted_certificates():
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return spki_pin(ca_cert.public_key())
    return ""


async def test_the_cache_follows_the_db_ca_signer() -> None:
    auth = _Auth()
    certs = UpstreamCerts(auth.issue, signer=auth.signer)
    old = auth.ca.fingerprint
    await certs.context(TARGET, "alice")
    await certs.context(TARGET, "alice")
    assert certs.issued == 1  # cached
    auth.move(Phase.INIT)  # the new key trusted, not signing: the bundle now holds it
    await certs.context(TARGET, "alice")
    assert certs.issued == 2
    assert len(x509.load_pem_x509_certificates(certs._cache["alice"].ca_pem)) == 2
    assert _signed_by(certs._cache["alice"].cert_pem, auth) == old
    auth.move(Phase.UPDATE_CLIENTS)
    await certs.context(TARGET, "alice")
    await certs.context(TARGET, "alice")
    assert certs.issued == 3
    new = auth.ca.fingerprint
    assert new != old
    assert _signed_by(certs._cache["alice"].cert_pem, auth) == new
    auth.move(Phase.ROLLBACK)
    await certs.context(TARGET, "alice")
    assert certs.issued == 4
    assert _signed_by(certs._cache["alice"].cert_pem, auth) == old
