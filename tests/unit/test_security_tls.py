"""TLS policy: the proxy's key is ECDSA P-256 (browsers refuse Ed25519), every other role's
Ed25519; every Limen context offers and accepts only X25519, P-256 and P-384.

Handshakes run in memory (two ``MemoryBIO`` pairs); the check against a running proxy with
``openssl s_client`` is tests/security/test_web_tls.py.
"""

from __future__ import annotations

import ssl
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_keys import host_key_type, new_host_key
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import KeyType
from limen.ca.tls import client_context, server_context
from limen.ca.tls_groups import restrict_groups
from limen.ca.x509_certs import sign_server_cert


def test_the_proxy_key_is_p256_and_the_others_ed25519() -> None:
    assert host_key_type(SystemRole.PROXY) is KeyType.ECDSA_P256
    proxy_key = new_host_key("proxy")
    assert isinstance(proxy_key, ec.EllipticCurvePrivateKey)
    assert isinstance(proxy_key.curve, ec.SECP256R1)
    for role in (SystemRole.AUTH, SystemRole.NODE, SystemRole.ADMIN):
        assert isinstance(new_host_key(role), ed25519.Ed25519PrivateKey)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    tls_server = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side, out, peer_in in (("client", tls_client, c_out, s_in),
                                         ("server", tls_server, s_out, c_in)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return tls_client
    raise AssertionError("the handshake did not finish")


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = CertAuthority.generate("unit", CertAuthorityType.TLS)
    key = new_host_key(SystemRole.PROXY)
    identity = Identity.for_host("unit", "proxy-1", "proxy", SystemRole.PROXY)
    cert = sign_server_cert(ca, key.public_key(), ["localhost"], ["127.0.0.1"],
                            timedelta(hours=1), identity)
    server = server_context(cert, key, require_client_cert=False)
    client = client_context(None, None, list(ca.trusted_certificates()))
    return server, client


def test_limen_contexts_agree_on_an_allowed_group(
        contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server, client = contexts
    tls = _handshake(server, client)
    assert tls.version() in ("TLSv1.3", "TLSv1.2")
    assert tls.getpeercert()  # verified against the TLS CA


@pytest.mark.parametrize(("groups", "accepted"), [
    ("X25519", True), ("P-256", True), ("P-384", True), ("X448", False), ("P-521", False),
])
def test_the_server_accepts_only_the_three_groups(
        contexts: tuple[ssl.SSLContext, ssl.SSLContext], groups: str, accepted: bool) -> None:
    server, _ = contexts
    ca_client = ssl.create_default_context()
    ca_client.check_hostname = False
    ca_client.verify_mode = ssl.CERT_NONE
    assert restrict_groups(ca_client, groups)  # a client offering only ``groups``
    if accepted:
        _handshake(server, ca_client)
    else:
        with pytest.raises(ssl.SSLError, match=r"(?i)handshake failure|no suitable|alert"):
            _handshake(server, ca_client)
