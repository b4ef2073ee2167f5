"""limen.proxy.tls_router's routing by server name: the SNI route's own TLS context requires a
client certificate in the handshake (none, an expired one, another CA's: refused there and
reported to the route's ``refused``); every other connection keeps the web context (client
certificate optional) and its ALPN routes; bytes that are not TLS are refused without
stopping the listener."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from limen.proxy.tls_router import SNIRoute, TLSRouter

KUBE = "kube-limen-proxy.limen.local"
NOW = datetime.now(UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class _Issuer:
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def cert(self) -> x509.Certificate:
        return self.sign(self.key, "ca", ca=True)

    def sign(self, key: ec.EllipticCurvePrivateKey, cn: str, *, ca: bool = False,
             names: tuple[str, ...] = (), expired: bool = False) -> x509.Certificate:
        end = NOW - timedelta(minutes=1) if expired else NOW + timedelta(hours=1)
        builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name("ca"))
                   .public_key(key.public_key()).serial_number(1 if ca else
                                                               x509.random_serial_number())
                   .not_valid_before(NOW - timedelta(hours=1)).not_valid_after(end)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True))
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        return builder.sign(self.key, hashes.SHA256())


def _files(tmp: Path, name: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    key_path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return cert_path, key_path


class _Tag(asyncio.Protocol):
    """A route's protocol: says which route took the connection, then closes it."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.tag)
        transport.close()


Credential = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@dataclass
class _Setup:
    port: int
    ca_pem: str
    tmp: Path
    issuer: _Issuer
    refusals: asyncio.Queue[tuple[str, str]]

    def credential(self, issuer: _Issuer | None = None, *, expired: bool = False
                   ) -> Credential:
        key = ec.generate_private_key(ec.SECP256R1())
        return (issuer or self.issuer).sign(key, "alice", expired=expired), key

    def client(self, credential: Credential | None = None, *,
               alpn: list[str] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem)
        if alpn:
            context.set_alpn_protocols(alpn)
        if credential is not None:
            context.load_cert_chain(*_files(self.tmp, "client", *credential))
        return context

    async def answer(self, context: ssl.SSLContext, server_name: str) -> bytes:
        """What the route says; empty when the handshake was refused."""
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", self.port, ssl=context, server_hostname=server_name)
        except (ssl.SSLError, ConnectionResetError):
            return b""
        try:
            return await reader.read()
        except (ssl.SSLError, ConnectionResetError):
            return b""
        finally:
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionResetError, BrokenPipeError):
                await writer.wait_closed()

    async def refused(self) -> tuple[str, str]:
        """The next refusal reported to the SNI route: the reason and the client."""
        async with asyncio.timeout(10):
            return await self.refusals.get()


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[_Setup]:
    issuer = _Issuer()
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = issuer.sign(server_key, "proxy", names=("localhost", KUBE))
    chain = _files(tmp_path, "server", server, server_key)
    ca_pem = issuer.cert.public_bytes(Encoding.PEM).decode()

    def context(verify: ssl.VerifyMode) -> ssl.SSLContext:
        made = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        made.load_cert_chain(*chain)
        made.load_verify_locations(cadata=ca_pem)
        made.verify_mode = verify
        return made

    refusals: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def refused(err: ssl.SSLError, client_addr: str) -> None:
        await refusals.put((str(err.reason), client_addr))

    router = TLSRouter(context(ssl.CERT_OPTIONAL), lambda: _Tag(b"web"),
                       {"limen-x": lambda: _Tag(b"x")},
                       {KUBE.upper(): SNIRoute(context(ssl.CERT_REQUIRED),
                                               lambda: _Tag(b"kube"), refused)})
    sock = socket.create_server(("127.0.0.1", 0))
    await router.start(sock)
    try:
        yield _Setup(sock.getsockname()[1], ca_pem, tmp_path, issuer, refusals)
    finally:
        router.stop()


async def test_the_kube_name_with_a_certificate_goes_to_its_route(setup: _Setup) -> None:
    context = setup.client(setup.credential(), alpn=["h2", "http/1.1"])
    assert await setup.answer(context, KUBE) == b"kube"
    assert setup.refusals.empty()


async def test_the_kube_name_without_a_certificate_is_refused_in_the_handshake(
        setup: _Setup) -> None:
    assert await setup.answer(setup.client(), KUBE) == b""
    reason, client_addr = await setup.refused()
    assert reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    assert client_addr.startswith("127.0.0.1:")


@pytest.mark.parametrize("which", ["expired", "another-ca"])
async def test_an_expired_or_foreign_certificate_is_refused_in_the_handshake(
        setup: _Setup, which: str) -> None:
    credential = setup.credential(expired=True) if which == "expired" else \
        setup.credential(_Issuer())
    assert await setup.answer(setup.client(credential), KUBE) == b""
    reason, _client = await setup.refused()
    assert reason == "CERTIFICATE_VERIFY_FAILED"


async def test_other_names_keep_the_web_context_and_alpn_routes(setup: _Setup) -> None:
    assert await setup.answer(setup.client(), "localhost") == b"web"
    assert await setup.answer(setup.client(alpn=["limen-x"]), "localhost") == b"x"
    assert await setup.answer(setup.client(setup.credential()), "localhost") == b"web"
    assert setup.refusals.empty()


async def test_bytes_that_are_not_tls_are_refused_and_the_port_serves_on(
        setup: _Setup) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    assert not answer.startswith(b"HTTP/1.1 200")
    assert await setup.answer(setup.client(), "localhost") == b"web"
    assert setup.refusals.empty()
