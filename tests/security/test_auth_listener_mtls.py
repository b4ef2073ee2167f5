"""Weakness: the auth API's listener accepted a TLS handshake without a client certificate
(``CERT_OPTIONAL``), so that a proxy apart from auth could reach ``/v1/join`` with a token
alone; every other endpoint refused such a request, but only in the application, after the
request was read.

Now the auth API requires a client certificate of the cluster's TLS CA in the handshake, and a
separate join listener (``listeners.auth_join``, the auth port + 2) asks for none and serves
``/v1/join`` only. Checked from outside, with raw TLS connections (Python's ``ssl`` and
``openssl s_client``) against a real ``limen start --random-ports``:

- without a client certificate the auth port gives no HTTP answer: with TLS 1.2 the handshake
  itself fails, with TLS 1.3 the server drops the connection after the client's empty
  certificate message, before any request is read; a certificate of another CA (same cluster
  name, same admin identity) fares the same; the admin certificate gets an answer (control);
- a join sent to the auth port without a certificate is never processed (no audit event, the
  single-use token is still unused and joins at the join listener afterwards);
- the join listener answers ``GET``/``POST /v1/join`` and nothing else: every other path of
  the auth API is a 404 there, the admin API included, with or without the admin certificate;
- ``listeners.json`` and ``lmctl status`` show the join listener at the auth port + 2.
The separate proxy's joins through it are exercised by tests/integration/test_agents_apart.py
and test_trust_apart.py.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from integration.cluster import ClusterFactory, LimenCluster
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.x509_certs import sign_client_cert

TIMEOUT = 20.0
PING = b"GET /v1/ping HTTP/1.1\r\nHost: limen\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Outcome:
    stage: str
    """``handshake`` (the TLS handshake failed), ``read`` (it failed after the request was
    written) or ``answered`` (the server closed normally)."""
    received: bytes
    error: str = ""


@pytest.fixture(scope="module")
def cluster(module_clusters: ClusterFactory) -> LimenCluster:
    return module_clusters("mtls")


def _context(cluster: LimenCluster, *, tls12: bool = False,
             cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cluster.data_dir / "admin" / "cas.pem"))
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def _admin(cluster: LimenCluster) -> tuple[Path, Path]:
    admin = cluster.data_dir / "admin"
    return admin / "tls.crt", admin / "key.pem"


def _exchange(address: str, context: ssl.SSLContext, request: bytes = PING) -> Outcome:
    """Connect, handshake, write ``request``, read until the server closes."""
    host, _, port = address.rpartition(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw:
        try:
            tls = context.wrap_socket(raw, server_hostname=host)
        except (ssl.SSLError, OSError) as err:
            return Outcome("handshake", received, repr(err))
        try:
            tls.sendall(request)
            while chunk := tls.recv(65536):
                received += chunk
        except (ssl.SSLError, OSError) as err:
            return Outcome("read", received, repr(err))
        finally:
            tls.close()
    return Outcome("answered", received)


def _status_and_json(outcome: Outcome) -> tuple[int, object]:
    assert outcome.received.startswith(b"HTTP/1.1 "), outcome
    head, _, body = outcome.received.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def _request(method: str, path: str, body: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: limen\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def _foreign_admin(cluster: LimenCluster, directory: Path) -> tuple[Path, Path]:
    """An admin certificate for the same cluster name, from a CA the cluster never saw."""
    name = cluster.status()["cluster"]
    other = CertAuthority.generate(name, CertAuthorityType.TLS)
    key = generate_private_key()
    cert = sign_client_cert(other, key.public_key(),
                            Identity(username="admin", cluster=name,
                                     system_role=SystemRole.ADMIN), timedelta(hours=1))
    directory.mkdir(exist_ok=True)
    (directory / "tls.crt").write_bytes(cert.public_bytes(Encoding.PEM))
    (directory / "key.pem").write_text(private_key_to_pem(key), encoding="utf-8")
    return directory / "tls.crt", directory / "key.pem"


def assert_no_http_answer(outcome: Outcome, *, tls12: bool) -> None:
    assert outcome.received == b"", outcome
    if tls12:  # the server's check is part of the TLS 1.2 handshake
        assert outcome.stage == "handshake", outcome
    else:  # TLS 1.3: the client's handshake ends first; the server then drops it unread
        assert outcome.stage in ("handshake", "read", "answered"), outcome


@pytest.mark.parametrize("tls12", [False, True], ids=["tls1.3", "tls1.2"])
def test_the_auth_port_refuses_a_handshake_without_a_client_certificate(
        cluster: LimenCluster, tls12: bool) -> None:
    assert_no_http_answer(_exchange(cluster.auth, _context(cluster, tls12=tls12)), tls12=tls12)
    answered = _exchange(cluster.auth, _context(cluster, tls12=tls12, cert=_admin(cluster)))
    status, ping = _status_and_json(answered)  # control: the admin certificate is answered
    assert status == 200, ping
    assert isinstance(ping, dict)
    assert ping["cluster"] == cluster.status()["cluster"]


@pytest.mark.parametrize("tls12", [False, True], ids=["tls1.3", "tls1.2"])
def test_the_auth_port_refuses_a_certificate_of_another_ca(
        cluster: LimenCluster, tmp_path: Path, tls12: bool) -> None:
    forged = _context(cluster, tls12=tls12, cert=_foreign_admin(cluster, tmp_path / "forged"))
    assert_no_http_answer(_exchange(cluster.auth, forged), tls12=tls12)


def test_openssl_gets_no_http_answer_from_the_auth_port(cluster: LimenCluster) -> None:
    cas = cluster.data_dir / "admin" / "cas.pem"
    argv = ["openssl", "s_client", "-connect", cluster.auth, "-CAfile", str(cas),
            "-verify_return_error", "-quiet"]
    refused = subprocess.run(argv, input=PING.decode(), capture_output=True, text=True,
                             timeout=TIMEOUT, check=False)
    assert "HTTP/1.1" not in refused.stdout, refused.stdout
    assert "verify return:1" in refused.stderr  # the server's certificate was fine
    cert, key = _admin(cluster)
    answered = subprocess.run([*argv, "-cert", str(cert), "-key", str(key)],
                              input=PING.decode(), capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
    assert "HTTP/1.1 200" in answered.stdout, answered.stderr  # control


def _join_body(token: str) -> bytes:
    public_key = public_key_to_openssh(generate_private_key().public_key())
    return json.dumps({"token": token, "role": "node", "hostname": "mtls-probe",
                       "public_key": public_key}).encode()


def test_a_join_at_the_auth_port_without_a_certificate_is_never_processed(
        cluster: LimenCluster) -> None:
    token = cluster.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")["token"]
    body = _join_body(token)
    before = len(cluster.audit("join"))
    for tls12 in (False, True):
        refused = _exchange(cluster.auth, _context(cluster, tls12=tls12),
                            _request("POST", "/v1/join", body))
        assert_no_http_answer(refused, tls12=tls12)
    assert len(cluster.audit("join")) == before  # auth never read the request
    status, answer = _status_and_json(_exchange(cluster.listeners["auth_join"],
                                                _context(cluster),
                                                _request("POST", "/v1/join", body)))
    assert status == 200, answer  # the single-use token was still unused
    assert isinstance(answer, dict)
    assert answer["tls_cert"].startswith("-----BEGIN")
    [joined] = cluster.audit("join")[before:]
    assert (joined["success"], joined["role"], joined["remote_addr"]) == \
        (True, "node", "127.0.0.1")


OTHER_PATHS = ("/", "/v1/ping", "/v1/status", "/v1/authorities/tls", "/v1/login",
               "/v1/signup", "/v1/resources/role", "/v1/resources/apply", "/v1/users",
               "/v1/tokens", "/v1/events", "/v1/trust/roots", "/v1/presence/nodes",
               "/v1/admin/users", "/v1/admin/tokens", "/v1/join/x", "/v1/join/",
               "/v1/webapi/ping", "/v1/webapi/join", "/V1/JOIN")


@pytest.mark.parametrize("with_admin_cert", [False, True], ids=["anonymous", "admin-cert"])
def test_the_join_listener_serves_only_v1_join(cluster: LimenCluster,
                                               with_admin_cert: bool) -> None:
    join_listener = cluster.listeners["auth_join"]
    context = _context(cluster, cert=_admin(cluster) if with_admin_cert else None)
    for method in ("GET", "POST", "DELETE"):
        for path in OTHER_PATHS:
            status, answer = _status_and_json(_exchange(
                join_listener, context, _request(method, path, b"{}" if method == "POST"
                                                 else b"")))
            assert status == 404, (method, path, answer)
    status, info = _status_and_json(_exchange(join_listener, context,
                                              _request("GET", "/v1/join")))
    assert status == 200, info
    pin = cluster.lmctl_json("tokens", "add", "--type", "node", "--ttl", "1m")["ca_pin"]
    assert isinstance(info, dict)
    assert (info["cluster"], info["tls_ca_pin"]) == (cluster.status()["cluster"], pin)
    assert set(info) == {"cluster", "tls_ca_pin", "tls_ca"}  # public copies only
    assert "PRIVATE" not in info["tls_ca"]


def test_the_join_listener_bounds_and_checks_bodies(cluster: LimenCluster) -> None:
    join_listener = cluster.listeners["auth_join"]
    big = json.dumps({"token": "x", "padding": "y" * (70 << 10)}).encode()
    status, answer = _status_and_json(_exchange(join_listener, _context(cluster),
                                                _request("POST", "/v1/join", big)))
    assert status == 400, answer
    assert answer == {"error": {"code": "bad_parameter", "message": "request body too large"}}
    before = len(cluster.audit("join"))
    status, answer = _status_and_json(_exchange(join_listener, _context(cluster),
                                                _request("POST", "/v1/join",
                                                         _join_body("not-a-token"))))
    assert status == 403, answer
    refused = cluster.audit("join")[before:]
    assert [(e["success"], e["remote_addr"]) for e in refused] == [(False, "127.0.0.1")]


def test_the_join_listener_is_listed_next_to_the_auth_port(cluster: LimenCluster) -> None:
    listeners = cluster.listeners
    auth_host, _, auth_port = listeners["auth"].rpartition(":")
    assert listeners["auth_join"] == f"{auth_host}:{int(auth_port) + 2}"
    status = cluster.lmctl("status").stdout
    assert f"auth_join: {listeners['auth_join']}" in status
    assert f"auth:      {listeners['auth']}" in status
