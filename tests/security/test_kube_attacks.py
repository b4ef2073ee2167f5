"""Attacks on Kubernetes access, performed for real against a cluster with a kube agent in
front of the authenticating Kubernetes API emulator (``kube_env``: alice with role
``kube-dev``, olga with ``kube-ops``); each refusal is asserted with its audit event:

- a kube cluster whose labels no role of the user matches: ``lmsh kube login`` refused (auth
  refuses the certificate too, with ``access.denied``: tests/unit/test_kube_access.py); and a
  certificate obtained while a role matched, used after the role stopped matching: refused
  by the proxy (``kube.request``, 403);
- a namespace and a kind outside ``kubernetes_resources`` (configmaps in ``kube-system``;
  secrets, denied): 403 from Limen, never sent to the API server; what the granted groups
  may not do in Kubernetes (get a namespace): 403 from the API server for alice, audited;
- the client's own impersonation: ``kubectl --as admin --as-group system:masters`` and a raw
  request with ``Impersonate-User: admin`` and the emulator admin's bearer token: stripped,
  the API server acts as alice (``auth whoami``, its audit log);
- a certificate of a throwaway CA copying alice's kube certificate: refused in the TLS
  handshake, audited; alice's login certificate (not a kube certificate): 401, audited;
- a request with both Content-Length and Transfer-Encoding (smuggling) and a path whose
  segment decodes to ``..``: 400, audited;
after which the front still serves. The expired certificate (proxy and agent) is refused in
``tests/unit/test_kube_expired_cert.py``.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
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

from integration.cluster import wait_for
from integration.kube_env import KubeEnv, KubePerson, start_kube_env
from k8s_emulator.fixtures import TOKEN as ADMIN_TOKEN
from limen.ca.keys import load_private_key, private_key_to_pem
from limen.ca.x509_certs import IDENTITY_OID

STALE_ROLE = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: kube-ops}
spec:
  allow:
    kubernetes_labels: {env: staging}
    kubernetes_groups: [operators]
"""


@pytest.fixture(scope="module")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    yield from start_kube_env(tmp_path_factory.mktemp("kubeattacks"))


def _credentials(person: KubePerson, cluster: str) -> tuple[bytes, bytes]:
    """The certificate and key kubectl gets from ``lmsh kube credentials``."""
    out = person.lmsh("kube", "credentials", "--cluster", cluster).stdout
    status = json.loads(out)["status"]
    return status["clientCertificateData"].encode(), status["clientKeyData"].encode()


def _front(env: KubeEnv) -> tuple[str, int]:
    host, port = env.cluster.listeners["kube"].rsplit(":", 1)
    return host, int(port)


def _ca(person: KubePerson) -> str:
    config = yaml.safe_load(person.kubeconfig.read_text())
    return base64.b64decode(config["clusters"][0]["cluster"]
                            ["certificate-authority-data"]).decode()


def _raw(env: KubeEnv, person: KubePerson, cert: bytes, key: bytes, request: bytes,
         tmp: Path) -> bytes:
    """Send ``request`` as it is on a TLS connection to the kube front presenting
    ``cert``/``key``; the whole answer (the front closes after a refusal)."""
    (tmp / "c.pem").write_bytes(cert)
    (tmp / "k.pem").write_bytes(key)
    context = ssl.create_default_context(cadata=_ca(person))
    context.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    context.set_alpn_protocols(["http/1.1"])
    host, port = _front(env)
    with socket.create_connection((host, port), timeout=20) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not _complete(answer):
            data = tls.recv(65536)
            if not data:
                break
            answer += data
        return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return head.lower().find(b"transfer-encoding: chunked") < 0 or body.endswith(b"0\r\n\r\n")


def _refusals(env: KubeEnv, user: str | None, reason: str) -> list[dict[str, Any]]:
    return [e for e in env.cluster.audit("kube.request")
            if e.get("success") is False and e.get("user") == user
            and reason in str(e.get("reason", ""))]


def test_a_cluster_no_role_matches(kube_env: KubeEnv) -> None:
    alice, olga = kube_env.alice, kube_env.olga
    refused = alice.lmsh("kube", "login", "emu-ops", check=False)
    assert refused.returncode != 0
    assert "no kube cluster 'emu-ops' you may use" in refused.stderr
    denied = olga.lmsh("kube", "login", "emu", check=False)
    assert denied.returncode != 0
    olga.lmsh("kube", "login", "emu-ops")
    assert olga.kubectl("get", "configmaps").returncode == 0
    roles = kube_env.cluster.root / "stale-role.yaml"
    roles.write_text(STALE_ROLE)
    kube_env.cluster.lmctl("apply", "-f", roles)
    try:
        def refused_now() -> str | None:
            result = olga.kubectl("get", "configmaps", check=False)
            return result.stderr if result.returncode != 0 else None
        message = wait_for(refused_now, 15.0, "the changed role to apply")
        # refused by the proxy, or by the agent when it saw the change first (both decide)
        assert ("access to kube cluster emu-ops denied" in message
                or "may not list configmaps in default on emu-ops: no role's "
                   "allow.kubernetes_labels match the cluster" in message), message
        assert _refusals(kube_env, "olga", "no role's allow.kubernetes_labels match")
    finally:
        (kube_env.cluster.root / "ops-role.yaml").write_text(STALE_ROLE.replace(
            "env: staging", "env: ops"))
        kube_env.cluster.lmctl("apply", "-f", kube_env.cluster.root / "ops-role.yaml")


def test_namespace_and_kind_outside_kubernetes_resources(kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    before = len(kube_env.api.audit_events())
    other = alice.kubectl("get", "configmaps", "-n", "kube-system", check=False)
    assert other.returncode == 1
    assert "Forbidden" in other.stderr
    assert "list configmaps in kube-system is outside the kubernetes_resources" in other.stderr
    secrets = alice.kubectl("get", "secrets", check=False)
    assert "role 'kube-dev' denies list secrets in default" in secrets.stderr
    [namespace] = _refusals(kube_env, "alice", "outside the kubernetes_resources")
    assert (namespace["namespace"], namespace["resource"], namespace["response_code"]) == \
        ("kube-system", "configmaps", 403)
    [kind] = _refusals(kube_env, "alice", "denies list secrets")
    assert kind["resource"] == "secrets"
    # neither request reached the API server
    reached = [e for e in kube_env.api.audit_events()[before:]
               if (e.get("objectRef") or {}).get("resource") in ("secrets",)
               or (e.get("objectRef") or {}).get("namespace") == "kube-system"]
    assert reached == []


def test_what_the_granted_groups_may_not_do_is_refused_by_the_api_server(
        kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    # Limen's roles allow getting the namespace default; the group developers has no
    # Kubernetes RBAC for namespaces: the API server refuses alice, as herself
    result = alice.kubectl("get", "namespace", "default", check=False)
    assert result.returncode == 1
    assert 'User "alice" cannot get resource "namespaces"' in result.stderr
    [event] = wait_for(lambda: [e for e in kube_env.cluster.audit("kube.request")
                                if e.get("user") == "alice" and e.get("resource") == "namespaces"
                                and e.get("response_code") == 403], 15.0,
                       "the API server's refusal audited")
    assert event["success"] is False
    assert (event["kubernetes_user"], event["kubernetes_groups"]) == ("alice", ["developers"])


def test_the_clients_own_impersonation_is_stripped(kube_env: KubeEnv, tmp_path: Path) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    out = alice.kubectl("auth", "whoami", "-o", "json", "--as", "admin",
                        "--as-group", "system:masters").stdout
    info = json.loads(out)["status"]["userInfo"]
    assert info["username"] == "alice"
    assert "system:masters" not in info["groups"]
    cert, key = _credentials(alice, "emu")
    body = b'{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}'
    answer = _raw(kube_env, alice, cert, key, (
        b"POST /apis/authentication.k8s.io/v1/selfsubjectreviews HTTP/1.1\r\n"
        b"Host: kube\r\nContent-Type: application/json\r\n"
        b"Impersonate-User: admin\r\nImpersonate-Group: system:masters\r\n"
        b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        + body), tmp_path)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
    review = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert review["status"]["userInfo"]["username"] == "alice"
    impersonated = {(e.get("impersonatedUser") or {}).get("username")
                    for e in kube_env.api.audit_events()}
    assert "admin" not in impersonated
    assert {e["user"]["username"] for e in kube_env.api.audit_events()
            if (e.get("impersonatedUser") or {}).get("username") == "alice"} == \
        {"system:serviceaccount:limen:kube-agent"}


def _forged(real_pem: bytes) -> tuple[bytes, bytes]:
    """A certificate of a throwaway CA copying the real one (subject, issuer name, every
    extension with the Limen identity); only the keys differ."""
    real = x509.load_pem_x509_certificate(real_pem)
    throwaway_ca = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(real.subject).issuer_name(real.issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(hours=1)))
    for extension in real.extensions:
        if not isinstance(extension.value, x509.SubjectKeyIdentifier):
            builder = builder.add_extension(extension.value, extension.critical)
    assert real.extensions.get_extension_for_oid(IDENTITY_OID)
    cert = builder.sign(throwaway_ca, hashes.SHA256())
    return (cert.public_bytes(Encoding.PEM),
            key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


def test_foreign_and_login_certificates_are_refused(kube_env: KubeEnv, tmp_path: Path) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    cert, _key = _credentials(alice, "emu")
    forged_cert, forged_key = _forged(cert)
    request = b"GET /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: k\r\n\r\n"
    try:  # TLS 1.3: the client may finish its side before the server's alert arrives
        answer = _raw(kube_env, alice, forged_cert, forged_key, request, tmp_path)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        answer = b""
    assert answer == b""
    wait_for(lambda: _refusals(kube_env, None, "TLS handshake failed"), 15.0,
             "the forged certificate's refusal audited")
    home = alice.user.home
    [login_cert] = list(home.glob("keys/*/alice.crt"))
    [login_key] = [p for p in home.glob("keys/*/alice") if p.is_file()]
    key_pem = private_key_to_pem(load_private_key(login_key.read_bytes())).encode()
    answer = _raw(kube_env, alice, login_cert.read_bytes(), key_pem, request, tmp_path)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"not for a kube cluster" in answer
    assert _refusals(kube_env, "alice", "not for a kube cluster")


@pytest.mark.parametrize(("request_bytes", "reason"), [
    (b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: k\r\n"
     b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     "Content-Length and Transfer-Encoding together"),
    (b"GET /api/v1/namespaces/%2e%2e/secrets HTTP/1.1\r\nHost: k\r\n\r\n",
     "invalid path segment"),
], ids=["cl-te-smuggling", "encoded-dot-dot"])
def test_malformed_requests_are_refused(kube_env: KubeEnv, tmp_path: Path,
                                        request_bytes: bytes, reason: str) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    cert, key = _credentials(alice, "emu")
    answer = _raw(kube_env, alice, cert, key, request_bytes, tmp_path)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert reason.encode() in answer
    wait_for(lambda: _refusals(kube_env, "alice", reason), 15.0, f"{reason} audited")
    assert alice.kubectl("get", "configmaps").returncode == 0  # the front still serves
