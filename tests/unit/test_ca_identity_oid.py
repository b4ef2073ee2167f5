"""The X.509 identity extension's OID is one Go can parse (kubectl and every client-go program
load Limen's client certificates): every component fits 31 bits, which the UUID arc does not;
a certificate issued before, with the identity under the legacy UUID-arc OID, still reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity
from limen.ca.keys import generate_private_key
from limen.ca.x509_certs import (
    IDENTITY_OID,
    LEGACY_IDENTITY_OID,
    identity_from_cert,
    sign_client_cert,
)

NOW = datetime.now(UTC)
ALICE = Identity(username="alice", cluster="root", roles=("dev",), usage=("kube",),
                 route_to_kube="prod")


def test_every_component_of_the_identity_oid_fits_go() -> None:
    assert all(int(part) < 1 << 31 for part in IDENTITY_OID.dotted_string.split("."))
    assert any(int(part) >= 1 << 31 for part in LEGACY_IDENTITY_OID.dotted_string.split("."))


def test_new_certificates_carry_the_new_oid_and_legacy_ones_still_read() -> None:
    ca = CertAuthority.generate("root", CertAuthorityType.TLS)
    cert = sign_client_cert(ca, generate_private_key().public_key(), ALICE,
                            timedelta(hours=1), now=NOW)
    assert cert.extensions.get_extension_for_oid(IDENTITY_OID).critical is False
    decoded = identity_from_cert(cert)
    assert decoded is not None
    assert decoded.route_to_kube == "prod"
    old = cert.extensions.get_extension_for_oid(IDENTITY_OID).value
    assert isinstance(old, x509.UnrecognizedExtension)
    key = generate_private_key()
    legacy = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.subject)
              .public_key(key.public_key()).serial_number(1)
              .not_valid_before(NOW).not_valid_after(NOW + timedelta(hours=1))
              .add_extension(x509.UnrecognizedExtension(LEGACY_IDENTITY_OID, old.value),
                             critical=False)
              .sign(key, None))
    found = identity_from_cert(legacy)
    assert found is not None
    assert (found.username, found.route_to_kube) == ("alice", "prod")
