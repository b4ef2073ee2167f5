"""X.509 certificates from limen.ca.x509_certs: contents, a real mutual-TLS handshake over
loopback with Python's ``ssl`` (contexts from limen.ca.tls), ``openssl x509 -text``, and every
rejection rule of :func:`verify_client_cert` with injected clocks."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from limen.ca.authority import CertAuthority, CertAuthorityType, tls_trust_map
from limen.ca.identity import Identity, RouteToDatabase, SystemRole
from limen.ca.keys import KeyType, generate_private_key, public_key_to_pem, signature_hash
from limen.ca.tls import client_context, server_context
from limen.ca.x509_certs import (
    IDENTITY_OID,
    certificate_to_pem,
    identity_from_cert,
    load_certificate,
    sign_client_cert,
    sign_server_cert,
    verify_client_cert,
)
from limen.errors import AccessDenied, BadParameter

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)
DEADLINE = 30.0

ALICE = Identity(
    username="alice", cluster="root", roles=("dev", "ops"),
    traits={"logins": ("alice",), "email": ("alice@example.com",)}, logins=("alice",),
    kubernetes_groups=("viewers",), kubernetes_users=("alice",), db_users=("alice", "ro"),
    db_names=("app",), route_to_cluster="leaf",
    route_to_db=RouteToDatabase(service="pg", user="ro", name="app"), usage=("db",),
)


@pytest.fixture(scope="module")
def tls_ca() -> CertAuthority:
    return CertAuthority.generate("root", CertAuthorityType.TLS)


def _trust(*cas: CertAuthority) -> dict[str, tuple[x509.Certificate, ...]]:
    return tls_trust_map(cas, cas[0].type)


# ---------------------------------------------------------------------- contents


def test_client_cert_round_trips_identity(tls_ca: CertAuthority) -> None:
    key = generate_private_key()
    cert = sign_client_cert(tls_ca, key.public_key(), ALICE, 8 * HOUR, now=NOW)
    identity = verify_client_cert(cert, _trust(tls_ca), NOW + HOUR)
    assert identity == ALICE.with_validity(NOW - timedelta(minutes=1), NOW + 8 * HOUR)
    # and from PEM text, as the proxy receives it from a file or header
    assert verify_client_cert(certificate_to_pem(cert), _trust(tls_ca), NOW) == identity


def test_client_cert_contents(tls_ca: CertAuthority) -> None:
    key = generate_private_key()
    cert = sign_client_cert(tls_ca, public_key_to_pem(key.public_key()), ALICE, HOUR, now=NOW)
    assert cert.public_key() == key.public_key()
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
        "alice"]
    assert [a.value for a in cert.subject.get_attributes_for_oid(
        NameOID.ORGANIZATION_NAME)] == ["dev", "ops"]
    assert cert.issuer == tls_ca.active.certificate.subject  # type: ignore[union-attr]
    ext = cert.extensions
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ext.get_extension_for_class(x509.KeyUsage).value.digital_signature
    identity_ext = ext.get_extension_for_oid(IDENTITY_OID)
    assert identity_ext.critical is False
    with pytest.raises(x509.ExtensionNotFound):
        ext.get_extension_for_class(x509.SubjectAlternativeName)
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = tls_ca.active.certificate.extensions.get_extension_for_class(  # type: ignore[union-attr]
        x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=1)
    assert cert.not_valid_after_utc == NOW + HOUR


def test_ca_certificate_contents(tls_ca: CertAuthority) -> None:
    ca_cert = tls_ca.active.certificate
    assert ca_cert is not None
    assert ca_cert.subject.rfc4514_string() == "CN=root tls CA,O=root"
    assert ca_cert.issuer == ca_cert.subject
    basic = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    usage = ca_cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    lifetime = ca_cert.not_valid_after_utc - ca_cert.not_valid_before_utc
    assert lifetime == timedelta(days=3650)
    ca_cert.verify_directly_issued_by(ca_cert)


def test_server_cert_with_and_without_identity(tls_ca: CertAuthority) -> None:
    key = generate_private_key()
    plain = sign_server_cert(tls_ca, key.public_key(), ["proxy.example", "localhost"],
                             ["127.0.0.1", "::1"], HOUR, now=NOW)
    sans = plain.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["proxy.example", "localhost"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert list(plain.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    assert identity_from_cert(plain) is None
    with pytest.raises(AccessDenied, match="not valid for client authentication"):
        verify_client_cert(plain, _trust(tls_ca), NOW)

    node = Identity.for_host("root", "h-1", "web1", SystemRole.NODE)
    both = sign_server_cert(tls_ca, key.public_key(), ["h-1.root"], (), HOUR, node, now=NOW)
    assert set(both.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    identity = verify_client_cert(both, _trust(tls_ca), NOW)
    assert identity.system_role is SystemRole.NODE
    assert identity.host_id == "h-1"
    assert [a.value for a in both.subject.get_attributes_for_oid(
        NameOID.ORGANIZATION_NAME)] == ["node"]
    with pytest.raises(BadParameter, match="at least one DNS name"):
        sign_server_cert(tls_ca, key.public_key(), [], [], HOUR)


def test_signing_refuses_wrong_ca_cluster_and_long_names(tls_ca: CertAuthority) -> None:
    key = generate_private_key().public_key()
    with pytest.raises(BadParameter, match="TLS or DB CA is needed"):
        sign_client_cert(CertAuthority.generate("root", "user"), key, ALICE, HOUR)
    with pytest.raises(BadParameter, match="cluster 'leaf'"):
        sign_client_cert(tls_ca, key, Identity("alice", "leaf"), HOUR)
    with pytest.raises(BadParameter, match="common name"):
        sign_client_cert(tls_ca, key, Identity("a" * 65, "root"), HOUR)


def test_openssl_shows_identity_extension(tls_ca: CertAuthority) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert = sign_client_cert(tls_ca, generate_private_key().public_key(), ALICE, HOUR)
    out = subprocess.run([openssl, "x509", "-noout", "-text"], input=certificate_to_pem(cert),
                         capture_output=True, text=True, check=True).stdout
    assert f"{IDENTITY_OID.dotted_string}:" in out
    assert '"user":"alice","cluster":"root"' in out
    assert "TLS Web Client Authentication" in out
    assert "Subject: CN = alice, O = dev, O = ops" in out


# ---------------------------------------------------------------------- rejections


def test_rejects_certificate_of_another_ca(tls_ca: CertAuthority) -> None:
    other = CertAuthority.generate("root", CertAuthorityType.TLS)  # same subject name
    cert = sign_client_cert(other, generate_private_key().public_key(), ALICE, HOUR, now=NOW)
    with pytest.raises(AccessDenied, match="signature is invalid"):
        verify_client_cert(cert, _trust(tls_ca), NOW)
    stranger = CertAuthority.generate("elsewhere", CertAuthorityType.TLS)
    cert = sign_client_cert(stranger, generate_private_key().public_key(),
                            Identity("alice", "elsewhere"), HOUR, now=NOW)
    with pytest.raises(AccessDenied, match="not issued by a trusted CA"):
        verify_client_cert(cert, _trust(tls_ca), NOW)


def test_rejects_expired_and_not_yet_valid(tls_ca: CertAuthority) -> None:
    cert = sign_client_cert(tls_ca, generate_private_key().public_key(), ALICE, HOUR, now=NOW)
    verify_client_cert(cert, _trust(tls_ca), NOW + HOUR)
    with pytest.raises(AccessDenied, match="expired"):
        verify_client_cert(cert, _trust(tls_ca), NOW + HOUR + timedelta(seconds=1))
    verify_client_cert(cert, _trust(tls_ca), NOW - timedelta(seconds=60))
    with pytest.raises(AccessDenied, match="not valid before"):
        verify_client_cert(cert, _trust(tls_ca), NOW - timedelta(seconds=61))


def test_rejects_certificate_claiming_another_cluster() -> None:
    ca_a = CertAuthority.generate("a", CertAuthorityType.TLS)
    ca_b = CertAuthority.generate("b", CertAuthorityType.TLS)
    impostor = CertAuthority("b", CertAuthorityType.TLS, ca_a.active)
    cert = sign_client_cert(impostor, generate_private_key().public_key(),
                            Identity("alice", "b"), HOUR, now=NOW)
    with pytest.raises(AccessDenied, match="claims cluster 'b' but is issued by the CA of 'a'"):
        verify_client_cert(cert, _trust(ca_a, ca_b), NOW)


def test_rejects_ca_certificate_and_missing_identity(tls_ca: CertAuthority) -> None:
    with pytest.raises(AccessDenied, match="CA certificate was presented"):
        verify_client_cert(tls_ca.active.certificate, _trust(tls_ca), NOW)  # type: ignore[arg-type]
    ca_cert = tls_ca.active.certificate
    assert ca_cert is not None
    bare = (
        x509.CertificateBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .issuer_name(ca_cert.subject).public_key(generate_private_key().public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(NOW)
        .not_valid_after(NOW + HOUR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(tls_ca.signer, signature_hash(tls_ca.signer))
    )
    with pytest.raises(AccessDenied, match="no Limen identity extension"):
        verify_client_cert(bare, _trust(tls_ca), NOW)


@pytest.mark.parametrize("where", ["identity", "signature"])
def test_rejects_tampered_bytes(tls_ca: CertAuthority, where: str) -> None:
    cert = sign_client_cert(tls_ca, generate_private_key().public_key(), ALICE, HOUR, now=NOW)
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    if where == "identity":
        at = der.index(b'"dev"')
        der[at:at + 5] = b'"adm"'
    else:
        der[-1] ^= 0x01
    with pytest.raises(AccessDenied, match="signature is invalid"):
        verify_client_cert(bytes(der), _trust(tls_ca), NOW)
    with pytest.raises(AccessDenied, match="malformed"):
        verify_client_cert(b"not a certificate", _trust(tls_ca), NOW)


def test_rotation_keeps_old_certificates_valid(tls_ca: CertAuthority) -> None:
    key = generate_private_key().public_key()
    before = sign_client_cert(tls_ca, key, ALICE, HOUR, now=NOW)
    rotated = tls_ca.rotate()
    after = sign_client_cert(rotated, key, ALICE, HOUR, now=NOW)
    trust = _trust(rotated.public_only())
    assert verify_client_cert(before, trust, NOW).username == "alice"
    assert verify_client_cert(after, trust, NOW).username == "alice"
    with pytest.raises(AccessDenied, match="signature is invalid"):
        verify_client_cert(before, _trust(rotated.finish_rotation()), NOW)


def test_db_ca_issues_client_certs() -> None:
    db_ca = CertAuthority.generate("root", CertAuthorityType.DB)
    cert = sign_client_cert(db_ca, generate_private_key().public_key(), ALICE, HOUR, now=NOW)
    assert verify_client_cert(cert, _trust(db_ca), NOW).route_to_db == ALICE.route_to_db
    with pytest.raises(AccessDenied):
        verify_client_cert(cert, _trust(CertAuthority.generate("root", "tls")), NOW)


# ---------------------------------------------------------------------- real TLS handshake


@dataclass
class TLSServer:
    port: int
    identities: list[Identity] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)


@pytest.fixture(params=[KeyType.ECDSA_P256, KeyType.ED25519], ids=["p256-ca", "ed25519-ca"])
def handshake_ca(request: pytest.FixtureRequest) -> CertAuthority:
    return CertAuthority.generate("root", CertAuthorityType.TLS, request.param)


@pytest.fixture
async def tls_server(handshake_ca: CertAuthority) -> AsyncIterator[TLSServer]:
    """An mTLS server requiring a client cert from the TLS CA; it answers with the user name
    Limen's verifier read from the certificate, or with the refusal reason."""
    key = generate_private_key()
    cert = sign_server_cert(handshake_ca, key.public_key(), ["localhost"], ["127.0.0.1"], HOUR)
    ca_cert = handshake_ca.trusted_certificates()
    ctx = server_context(cert, key, client_cas=ca_cert, require_client_cert=True)
    state = TLSServer(0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        try:
            identity = verify_client_cert(peer, _trust(handshake_ca))
            state.identities.append(identity)
            writer.write(f"hello {identity.username}\n".encode())
        except AccessDenied as err:
            state.refusals.append(str(err))
            writer.write(b"denied\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


async def _talk(port: int, ctx: ssl.SSLContext) -> tuple[bytes, str | None]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"),
        DEADLINE)
    version = writer.get_extra_info("ssl_object").version()
    try:
        return await asyncio.wait_for(reader.readline(), DEADLINE), version
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


async def test_mutual_tls_handshake_with_issued_client_cert(
    tls_server: TLSServer, handshake_ca: CertAuthority,
) -> None:
    key = generate_private_key()
    alice = Identity("alice", "root", roles=("dev",))
    cert = sign_client_cert(handshake_ca, key.public_key(), alice, HOUR)
    ctx = client_context(cert, key, handshake_ca.trusted_certificates())
    line, version = await _talk(tls_server.port, ctx)
    assert line == b"hello alice\n"
    assert version == "TLSv1.3"
    assert [i.roles for i in tls_server.identities] == [("dev",)]


async def test_handshake_refuses_client_cert_of_another_ca(
    tls_server: TLSServer, handshake_ca: CertAuthority,
) -> None:
    other = CertAuthority.generate("root", CertAuthorityType.TLS)
    key = generate_private_key()
    cert = sign_client_cert(other, key.public_key(), Identity("alice", "root"), HOUR)
    ctx = client_context(cert, key, handshake_ca.trusted_certificates())
    # TLS 1.3: the client finishes first; the server's refusal arrives as an alert on read
    try:
        line, _ = await _talk(tls_server.port, ctx)
    except (ssl.SSLError, ConnectionError):
        line = b""
    assert line == b""
    assert tls_server.identities == []
    assert tls_server.refusals == []


async def test_handshake_refuses_server_only_cert_as_client_cert(
    tls_server: TLSServer, handshake_ca: CertAuthority,
) -> None:
    """OpenSSL's purpose check already refuses a serverAuth-only certificate from a client."""
    key = generate_private_key()
    cert = sign_server_cert(handshake_ca, key.public_key(), ["client.example"], (), HOUR)
    ctx = client_context(cert, key, handshake_ca.trusted_certificates())
    try:
        line, _ = await _talk(tls_server.port, ctx)
    except (ssl.SSLError, ConnectionError):
        line = b""
    assert line == b""
    assert tls_server.identities == []
    assert tls_server.refusals == []


async def test_handshake_passes_but_limen_refuses_cert_without_identity(
    tls_server: TLSServer, handshake_ca: CertAuthority,
) -> None:
    """A chain OpenSSL accepts (right CA, clientAuth) is still refused without an identity."""
    key = generate_private_key()
    ca_cert = handshake_ca.trusted_certificates()[0]
    cert = (
        x509.CertificateBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - HOUR).not_valid_after(datetime.now(UTC) + HOUR)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(handshake_ca.signer, signature_hash(handshake_ca.signer))
    )
    line, _ = await _talk(tls_server.port, client_context(cert, key, [ca_cert]))
    assert line == b"denied\n"
    assert tls_server.refusals == ["certificate has no Limen identity extension"]


async def test_client_refuses_server_of_unknown_ca(tls_server: TLSServer) -> None:
    stranger = CertAuthority.generate("root", CertAuthorityType.TLS)
    ctx = client_context(None, None, stranger.trusted_certificates())
    with pytest.raises(ssl.SSLCertVerificationError):
        await _talk(tls_server.port, ctx)


def test_context_policy() -> None:
    ca = CertAuthority.generate("root", CertAuthorityType.TLS)
    key = generate_private_key()
    cert = sign_server_cert(ca, key.public_key(), ["localhost"], (), HOUR)
    srv = server_context(cert, key, client_cas=ca.trusted_certificates())
    assert srv.minimum_version is ssl.TLSVersion.TLSv1_2
    assert srv.options & ssl.OP_NO_COMPRESSION
    assert srv.verify_mode is ssl.CERT_REQUIRED
    assert server_context(cert, key, None, require_client_cert=False).verify_mode is (
        ssl.CERT_NONE)
    cli = client_context(None, None, ca.trusted_certificates())
    assert cli.check_hostname
    assert cli.verify_mode is ssl.CERT_REQUIRED
    with pytest.raises(BadParameter):
        server_context(cert, key, None, require_client_cert=True)
    with pytest.raises(BadParameter):
        client_context(cert, None, ca.trusted_certificates())
    wrong_key = generate_private_key()
    with pytest.raises(BadParameter, match="cannot use certificate and key"):
        server_context(cert, wrong_key, None, require_client_cert=False)


def test_load_certificate_pem_and_der(tls_ca: CertAuthority) -> None:
    cert = tls_ca.trusted_certificates()[0]
    assert load_certificate(certificate_to_pem(cert)) == cert
    assert load_certificate(cert.public_bytes(serialization.Encoding.DER)) == cert
    with pytest.raises(BadParameter):
        load_certificate(b"junk")
