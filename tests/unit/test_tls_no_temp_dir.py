"""``limen.ca.tls`` loads a certificate chain and key without a temporary directory (an
in-memory file, ``memfd_create``): a pod with a read-only root filesystem and no /tmp can still
serve TLS; without memfd it falls back to a private temporary directory, and says what to set
when there is none."""

from __future__ import annotations

import os
import ssl
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_keys import new_host_key
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import PrivateKey
from limen.ca.tls import client_context, server_context
from limen.ca.x509_certs import sign_server_cert
from limen.errors import BadParameter

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="no memfd_create")
Material = tuple[CertAuthority, x509.Certificate, PrivateKey]


@pytest.fixture(scope="module")
def material() -> Material:
    ca = CertAuthority.generate("unit", CertAuthorityType.TLS)
    key = new_host_key(SystemRole.AUTH)
    identity = Identity.for_host("unit", "auth-1", "auth", SystemRole.AUTH)
    cert = sign_server_cert(ca, key.public_key(), ["localhost"], ["127.0.0.1"],
                            timedelta(hours=1), identity)
    return ca, cert, key


@pytest.fixture
def no_temp_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """``tempfile`` finds no usable directory: what a read-only root without /tmp gives."""
    missing = tmp_path / "missing"
    monkeypatch.setattr(tempfile, "tempdir", str(missing))
    return missing


def test_contexts_load_without_a_temporary_directory(
        material: Material, no_temp_dir: Path) -> None:
    ca, cert, key = material
    server = server_context(cert, key, require_client_cert=False)
    client = client_context(cert, key, ca.trusted_certificates())
    assert isinstance(server, ssl.SSLContext)
    assert isinstance(client, ssl.SSLContext)
    assert not no_temp_dir.exists()
    with pytest.raises(FileNotFoundError):
        tempfile.mkdtemp()  # the fixture really leaves no temporary directory


def test_without_memfd_a_private_directory_is_used_and_removed(
        material: Material, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    def no_memfd(*_: object) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _ca, cert, key = material
    assert isinstance(server_context(cert, key, require_client_cert=False), ssl.SSLContext)
    assert list(tmp_path.iterdir()) == []  # the key file went with its directory


def test_without_memfd_nor_temporary_directory_the_error_says_what_to_set(
        material: Material, monkeypatch: pytest.MonkeyPatch,
        no_temp_dir: Path) -> None:
    def no_memfd(*_: object) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    _ca, cert, key = material
    with pytest.raises(BadParameter, match="set TMPDIR"):
        server_context(cert, key, require_client_cert=False)
