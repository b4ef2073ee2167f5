"""Weakness: the certificate of the proxy's web listener had an Ed25519 key, which browsers do
not accept; and the key-exchange groups were OpenSSL's whole default list.

Checked from outside with ``openssl s_client`` against a real ``limen start --random-ports``:
the server certificate's key is EC P-256 and verifies against the cluster's TLS CA; X25519,
P-256 and P-384 are negotiated, X448 and P-521 are refused; a strict client (CA and hostname
checked) still verifies the proxy. Limen's own clients (``lmsh`` login, agents joining and
tunnelling, ``ssh -J`` through the proxy's now P-256 host certificate) are exercised by the
end-to-end tests of tests/integration.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from integration.cluster import ClusterFactory, LimenCluster

OPENSSL_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def cluster(module_clusters: ClusterFactory) -> LimenCluster:
    return module_clusters("tls")


def s_client(cluster: LimenCluster, *args: str) -> subprocess.CompletedProcess[str]:
    cas = cluster.data_dir / "admin" / "cas.pem"
    argv = ["openssl", "s_client", "-connect", cluster.web, "-servername", "localhost",
            "-CAfile", str(cas), "-verify_return_error", "-showcerts", *args]
    return subprocess.run(argv, input="", capture_output=True, text=True,
                          timeout=OPENSSL_TIMEOUT, check=False)


def test_the_web_certificate_is_ecdsa_p256_and_verifies(cluster: LimenCluster) -> None:
    result = s_client(cluster)
    assert result.returncode == 0, result.stderr
    assert "Verify return code: 0 (ok)" in result.stdout
    leaf_pem = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                         result.stdout, re.DOTALL)
    assert leaf_pem is not None
    key = x509.load_pem_x509_certificate(leaf_pem.group(0).encode()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    text = subprocess.run(["openssl", "x509", "-noout", "-text"], input=leaf_pem.group(0),
                          capture_output=True, text=True, timeout=OPENSSL_TIMEOUT,
                          check=True).stdout
    assert "Public Key Algorithm: id-ecPublicKey" in text
    assert "NIST CURVE: P-256" in text


@pytest.mark.parametrize(("group", "shown"), [
    ("X25519", "Server Temp Key: X25519"),
    ("P-256", "Server Temp Key: ECDH, prime256v1"),
    ("P-384", "Server Temp Key: ECDH, secp384r1"),
])
def test_the_three_groups_are_negotiated(cluster: LimenCluster, group: str, shown: str) -> None:
    result = s_client(cluster, "-groups", group, "-tls1_3")
    assert result.returncode == 0, result.stderr
    assert shown in result.stdout


def test_tls12_clients_are_served_too(cluster: LimenCluster) -> None:
    # TLS 1.2 ties an ECDSA certificate to the client's groups: the client must list P-256
    # (every browser does); the server then picks by its own order, X25519 first
    result = s_client(cluster, "-groups", "P-256:X25519", "-tls1_2")
    assert result.returncode == 0, result.stderr
    assert "Server Temp Key: X25519" in result.stdout
    assert "Protocol  : TLSv1.2" in result.stdout


@pytest.mark.parametrize("group", ["X448", "P-521"])
def test_other_groups_are_refused(cluster: LimenCluster, group: str) -> None:
    # (TLS 1.3: with OpenSSL's default group list both would be negotiated)
    result = s_client(cluster, "-groups", group, "-tls1_3")
    assert "Server Temp Key" not in result.stdout
    assert "Cipher is (NONE)" in result.stdout
    assert result.returncode != 0


def test_a_strict_client_verifies_the_proxy(cluster: LimenCluster) -> None:
    cas = (cluster.data_dir / "admin" / "cas.pem").read_text()
    context = ssl.create_default_context(cadata=cas)  # hostname checked: 127.0.0.1 is a SAN
    host, _, port = cluster.web.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        assert tls.version() == "TLSv1.3"
        assert tls.getpeercert()
