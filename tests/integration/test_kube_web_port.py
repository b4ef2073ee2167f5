"""kubectl through the proxy's web port (single-port mode, issue #15): a cluster whose proxy
publishes no kube listener (``listeners.kube: ""``), so ``lmsh kube login`` points kubectl at
the web port with ``tls-server-name: kube-limen-proxy.limen.local``, which the web port
routes to the kube front. The real kubectl against the project's Kubernetes emulator
(``kube_env``): ``get``, ``get -w`` receiving a change, ``exec``, each audited as on the kube
listener; on the kube server name, no client certificate and another CA's certificate are
refused in the TLS handshake and audited; ALPN ``limen-kube`` reaches the same front; the
HTTPS API on the same port is unchanged for a connection without the kube server name.
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from limen.net.kube_path import route_path
from limen.net.kube_sni import ALPN_KUBE, KUBE_SERVER_NAME

from .cluster import wait_for
from .kube_env import KubeEnv, KubePerson, start_kube_env

REQUEST = b"GET /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: k\r\n\r\n"


@pytest.fixture(scope="module")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    yield from start_kube_env(tmp_path_factory.mktemp("kubeweb"),
                              extra_config='listeners: {kube: ""}\n')


def _login(env: KubeEnv) -> KubePerson:
    env.alice.lmsh("kube", "login", "emu")
    return env.alice


def _web(env: KubeEnv) -> tuple[str, int]:
    host, port = env.cluster.web.rsplit(":", 1)
    return host, int(port)


def _ca(person: KubePerson) -> str:
    config = yaml.safe_load(person.kubeconfig.read_text())
    return base64.b64decode(config["clusters"][0]["cluster"]
                            ["certificate-authority-data"]).decode()


def _credentials(person: KubePerson) -> tuple[bytes, bytes]:
    status = json.loads(person.lmsh("kube", "credentials", "--cluster", "emu").stdout)["status"]
    return status["clientCertificateData"].encode(), status["clientKeyData"].encode()


def _another_cas(real_pem: bytes) -> tuple[bytes, bytes]:
    """The real kube certificate's names and extensions signed by another CA."""
    real = x509.load_pem_x509_certificate(real_pem)
    other_ca, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(real.subject).issuer_name(real.issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(hours=1)))
    for extension in real.extensions:
        if not isinstance(extension.value, x509.SubjectKeyIdentifier):
            builder = builder.add_extension(extension.value, extension.critical)
    return (builder.sign(other_ca, hashes.SHA256()).public_bytes(Encoding.PEM),
            key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


def _exchange(env: KubeEnv, person: KubePerson, tmp: Path, *, server_name: str,
              alpn: list[str], cert: tuple[bytes, bytes] | None) -> tuple[str, bytes]:
    """Send :data:`REQUEST` to the web port as told; the client's own address and the answer
    (empty when the connection was refused)."""
    context = ssl.create_default_context(cadata=_ca(person))
    context.set_alpn_protocols(alpn)
    if cert is not None:
        (tmp / "c.pem").write_bytes(cert[0])
        (tmp / "k.pem").write_bytes(cert[1])
        context.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    answer = b""
    with socket.create_connection(_web(env), timeout=20) as raw:
        local = "{}:{}".format(*raw.getsockname()[:2])
        try:  # TLS 1.3: the client may finish its side before the server's alert arrives
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.sendall(REQUEST)
                while b"\r\n\r\n" not in answer:
                    data = tls.recv(65536)
                    if not data:
                        break
                    answer += data
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
    return local, answer


def _refused(env: KubeEnv, client_addr: str) -> list[dict[str, Any]]:
    return [e for e in env.cluster.audit("kube.request")
            if e.get("success") is False and e.get("remote_addr") == client_addr]


def test_login_points_kubectl_at_the_web_port_and_get_works(kube_env: KubeEnv) -> None:
    assert "kube" not in kube_env.cluster.listeners
    alice = _login(kube_env)
    cluster = yaml.safe_load(alice.kubeconfig.read_text())["clusters"][0]["cluster"]
    assert cluster["server"] == f"https://{kube_env.cluster.web}" + route_path("kubetest", "emu")
    assert cluster["tls-server-name"] == KUBE_SERVER_NAME
    kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "via-web", "namespace": "default"}})
    assert "configmap/via-web" in alice.kubectl("get", "configmaps", "-o", "name").stdout
    events = kube_env.wait_audit("the list audited", user="alice", verb="list",
                                 resource="configmaps")
    assert (events[-1]["response_code"], events[-1]["kube_cluster"]) == (200, "emu")


def test_watch_and_exec_stream_through_the_web_port(kube_env: KubeEnv) -> None:
    alice = _login(kube_env)
    kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "before", "namespace": "default"}})
    watch = subprocess.Popen(["kubectl", "get", "configmaps", "-w", "-o", "name"],
                             env=alice.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[str] = []
    try:
        assert watch.stdout is not None
        fd, pending, created = watch.stdout.fileno(), b"", False
        deadline = time.monotonic() + 20.0
        while "configmap/during" not in lines and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
            data = os.read(fd, 4096) if ready else b""
            if not data:
                break
            *complete, pending = (pending + data).split(b"\n")
            lines += [line.decode().strip() for line in complete]
            if "configmap/before" in lines and not created:  # the watch runs from here
                created = True
                kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "during", "namespace": "default"}})
    finally:
        watch.terminate()
        _out, err = watch.communicate(timeout=10)
    assert "configmap/during" in lines, (lines, err)
    kube_env.api.run_pod("shell", ["sh", "-c", "while true; do sleep 1; done"])
    out = alice.kubectl("exec", "shell", "--", "sh", "-c", "echo web $((6*7))").stdout
    assert out.strip() == "web 42"
    [event] = kube_env.wait_audit("the exec audited", user="alice", verb="exec")
    assert (event["command"], event["response_code"]) == (["sh", "-c", "echo web $((6*7))"], 101)


def test_no_client_certificate_on_the_kube_name_is_refused_in_the_handshake(
        kube_env: KubeEnv, tmp_path: Path) -> None:
    alice = _login(kube_env)
    local, answer = _exchange(kube_env, alice, tmp_path, server_name=KUBE_SERVER_NAME,
                              alpn=["h2", "http/1.1"], cert=None)
    assert answer == b""
    [event] = wait_for(lambda: _refused(kube_env, local), 15.0, "the refusal audited")
    assert event["reason"].startswith("TLS handshake failed: no client certificate")


def test_another_cas_certificate_on_the_kube_name_is_refused_in_the_handshake(
        kube_env: KubeEnv, tmp_path: Path) -> None:
    alice = _login(kube_env)
    forged = _another_cas(_credentials(alice)[0])
    local, answer = _exchange(kube_env, alice, tmp_path, server_name=KUBE_SERVER_NAME,
                              alpn=["http/1.1"], cert=forged)
    assert answer == b""
    [event] = wait_for(lambda: _refused(kube_env, local), 15.0, "the refusal audited")
    assert "TLS handshake failed" in event["reason"]
    assert event["reason"] == "TLS handshake failed: certificate signature failure"
    assert event.get("user") is None


def test_alpn_limen_kube_reaches_the_same_front(kube_env: KubeEnv, tmp_path: Path) -> None:
    alice = _login(kube_env)
    _local, answer = _exchange(kube_env, alice, tmp_path, server_name="localhost",
                               alpn=[ALPN_KUBE], cert=_credentials(alice))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    local, answer = _exchange(kube_env, alice, tmp_path, server_name="localhost",
                              alpn=[ALPN_KUBE], cert=None)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    [event] = wait_for(lambda: _refused(kube_env, local), 15.0, "the refusal audited")
    assert "no client certificate" in event["reason"]


def test_the_https_api_on_the_same_port_is_unchanged(kube_env: KubeEnv) -> None:
    context = ssl.create_default_context(cadata=_ca(kube_env.alice))
    request = b"GET /v1/webapi/ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    with socket.create_connection(_web(kube_env), timeout=20) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() is None
        tls.sendall(request)
        answer = b""
        while data := tls.recv(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["kube_server_name"] == KUBE_SERVER_NAME
