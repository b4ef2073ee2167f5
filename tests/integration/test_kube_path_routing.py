"""Routing kubectl by the kube cluster the request names (issue #15): the path prefix
``/v1/limen/<b64url cluster>/<b64url kube cluster>/`` the kubeconfig's server URL carries, and
the server name ``<hex kube cluster>.kube-limen-proxy.limen.local``. The real kubectl against
the project's Kubernetes emulator with two kube clusters (``kube_env``: ``emu`` and
``emu-ops``) and ``kim``, whose roles admit both:

* ``lmsh kube login --all``: one certificate naming no kube cluster, a context per cluster;
  ``get`` and ``exec`` on both through the path, each audited with its kube cluster;
* one HTTP/2 connection whose streams name the two clusters: each routed (and checked);
  one HTTP/1.1 keep-alive connection naming a second cluster after the first: refused by
  the agent (403, audited);
* the server name naming a kube cluster, on the web port and on the kube listener;
* attacks: alice's certificate scoped to ``emu`` on ``emu-ops``'s path (403, audited with the
  reason, over kubectl's HTTP/2 and over HTTP/1.1); a crafted prefix (bad base64, NUL,
  slash, over-long: 400 ``Status``, audited); the cluster-less certificate without a prefix;
* ``lmsh kube logout`` removes the ``--all`` certificate and its contexts.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import yaml
from cryptography import x509

from limen.ca.x509_certs import identity_from_cert
from limen.net.kube_path import route_path
from limen.net.kube_sni import kube_server_name

from .cluster import run, wait_for
from .kube_env import KubeEnv, KubePerson, start_kube_env

CLUSTER = "kubetest"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture(scope="module")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    yield from start_kube_env(tmp_path_factory.mktemp("kubepath"))


@pytest.fixture(scope="module")
def kim(kube_env: KubeEnv) -> KubePerson:
    """Roles kube-dev (emu) and kube-ops (emu-ops), logged in to both with one certificate."""
    person = KubePerson(kube_env.cluster.signed_up_user("kim", roles=["kube-dev", "kube-ops"]))
    person.user.login()
    person.lmsh("kube", "login", "--all")
    return person


@pytest.fixture(scope="module")
def kim_credential(kim: KubePerson) -> tuple[str, str]:
    """kim's certificate naming no kube cluster, and the key."""
    return _credentials(kim, "--all")


def _clusters(person: KubePerson) -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(person.kubeconfig.read_text())
    return {c["name"]: c["cluster"] for c in config["clusters"]}


def _credentials(person: KubePerson, *args: str) -> tuple[str, str]:
    status = json.loads(person.lmsh("kube", "credentials", *args).stdout)["status"]
    return status["clientCertificateData"], status["clientKeyData"]


def _tls(person: KubePerson, tmp: Path, credential: tuple[str, str], address: str, *,
         server_name: str, alpn: str) -> ssl.SSLSocket:
    cluster = next(iter(_clusters(person).values()))
    (tmp / "c.pem").write_text(credential[0])
    (tmp / "k.pem").write_text(credential[1])
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    context.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    context.set_alpn_protocols([alpn])
    host, port = address.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=20)
    return context.wrap_socket(raw, server_hostname=server_name)


def _http1(sock: ssl.SSLSocket, target: str) -> tuple[int, bytes]:
    """One request on a kept-alive connection: the status and the body."""
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: k\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b"\0"
    head, _, body = data.partition(b"\r\n\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in
              (line.partition(b":") for line in head.split(b"\r\n")[1:])}
    chunked = fields.get(b"transfer-encoding") == b"chunked"
    length = int(fields.get(b"content-length", b"-1"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
            (chunked and body.endswith(b"0\r\n\r\n")) or (length >= 0 and len(body) >= length)):
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return int(head.split(b" ")[1]), body


def _refused(env: KubeEnv, reason: str, **match: Any) -> dict[str, Any]:
    """The failed ``kube.request`` matching ``match`` whose reason holds ``reason``."""
    events = wait_for(lambda: [e for e in env.audit(success=False, **match)
                               if reason in str(e.get("reason"))], 15.0,
                      f"a refusal audited: {reason}")
    return events[-1]


def test_login_all_writes_prefixed_contexts_for_one_cluster_less_certificate(
        kube_env: KubeEnv, kim: KubePerson) -> None:
    clusters = _clusters(kim)
    web_or_kube = clusters[f"{CLUSTER}-emu"]["server"].split("/v1/limen/")[0]
    for name in ("emu", "emu-ops"):
        assert clusters[f"{CLUSTER}-{name}"]["server"] == web_or_kube + route_path(CLUSTER,
                                                                                  name)
    users = yaml.safe_load(kim.kubeconfig.read_text())["users"]
    assert all("--all" in u["user"]["exec"]["args"] for u in users)
    cert = x509.load_pem_x509_certificate(_credentials(kim, "--all")[0].encode())
    identity = identity_from_cert(cert)
    assert identity is not None
    assert (identity.route_to_kube, identity.usage) == (None, ("kube",))


def test_one_certificate_gets_and_execs_on_both_clusters_by_path(kube_env: KubeEnv,
                                                                 kim: KubePerson) -> None:
    kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "by-path", "namespace": "default"}})
    for name in ("emu", "emu-ops"):
        out = kim.kubectl("--context", f"{CLUSTER}-{name}", "get", "configmaps",
                          "-o", "name").stdout
        assert "configmap/by-path" in out
        kube_env.wait_audit(f"the list on {name}", user="kim", kube_cluster=name,
                            verb="list", resource="configmaps", response_code=200)
    kube_env.api.run_pod("routed", ["sh", "-c", "sleep 30"])
    out = kim.kubectl("--context", f"{CLUSTER}-emu-ops", "exec", "routed", "--", "sh", "-c",
                      "echo routed $((6*7))").stdout
    assert out.strip() == "routed 42"
    [event] = kube_env.wait_audit("the exec audited", user="kim", verb="exec",
                                  kube_cluster="emu-ops")
    assert event["path"] == "/api/v1/namespaces/default/pods/routed/exec"  # prefix removed
    # RBAC still decides for the routed cluster: kube-dev denies secrets on emu
    refused = kim.kubectl("--context", f"{CLUSTER}-emu", "get", "secrets", check=False)
    assert refused.returncode == 1
    assert "Limen: kim may not" in refused.stderr


def test_streams_of_one_http2_connection_are_routed_each(kube_env: KubeEnv, kim: KubePerson,
                                                         kim_credential: tuple[str, str],
                                                         tmp_path: Path) -> None:
    server = _clusters(kim)[f"{CLUSTER}-emu"]["server"].split("/v1/limen/")[0]
    address = server.removeprefix("https://")
    sock = _tls(kim, tmp_path, kim_credential, address,
                server_name=address.rsplit(":", 1)[0], alpn="h2")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding=None))
    conn.initiate_connection()
    paths = {1: route_path(CLUSTER, "emu") + CONFIGMAPS,
             3: route_path(CLUSTER, "emu-ops") + CONFIGMAPS,
             5: CONFIGMAPS,  # names nothing: the certificate does not either
             7: "/v1/limen/a3ViZXRlc3Q/ZW*1/api"}  # crafted: a 400 on its stream
    try:
        for stream_id, path in paths.items():
            conn.send_headers(stream_id, [(":method", "GET"), (":scheme", "https"),
                                          (":authority", address), (":path", path)],
                              end_stream=True)
        sock.sendall(conn.data_to_send())
        statuses: dict[int, bytes] = {}
        ended: set[int] = set()
        deadline = time.monotonic() + 20
        while len(ended) < len(paths) and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    statuses[event.stream_id] = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.StreamEnded):
                    ended.add(event.stream_id)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length,
                                                   event.stream_id)
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    assert statuses == {1: b"200", 3: b"200", 5: b"403", 7: b"400"}
    for name in ("emu", "emu-ops"):
        kube_env.wait_audit(f"the stream to {name}", user="kim", kube_cluster=name,
                            verb="list", response_code=200)
    _refused(kube_env, "names no kube cluster and neither does the request", user="kim",
             kube_cluster="")
    _refused(kube_env, "not base64url (HTTP/2 stream 7)", user="kim")


def test_a_keep_alive_connection_naming_another_cluster_is_refused(
        kube_env: KubeEnv, kim: KubePerson, kim_credential: tuple[str, str],
        tmp_path: Path) -> None:
    address = kube_env.cluster.listeners["kube"]
    sock = _tls(kim, tmp_path, kim_credential, address,
                server_name=address.rsplit(":", 1)[0], alpn="http/1.1")
    try:
        assert _http1(sock, route_path(CLUSTER, "emu") + CONFIGMAPS)[0] == 200
        status, body = _http1(sock, route_path(CLUSTER, "emu-ops") + CONFIGMAPS)
    finally:
        sock.close()
    assert status == 403
    assert "open another connection" in json.loads(body)["message"]
    _refused(kube_env, "names kube cluster 'emu-ops'", user="kim", kube_cluster="emu",
             response_code=403)


def test_the_server_name_names_the_kube_cluster(kube_env: KubeEnv, kim: KubePerson) -> None:
    config = yaml.safe_load(kim.kubeconfig.read_text())
    cluster = dict(config["clusters"][0]["cluster"])
    for port, address in (("web", kube_env.cluster.web),
                          ("kube", kube_env.cluster.listeners["kube"])):
        name = f"sni-{port}"
        config["clusters"].append({"name": name, "cluster": {
            **cluster, "server": f"https://{address}",
            "tls-server-name": kube_server_name("emu-ops")}})
        config["contexts"].append({"name": name, "context": {
            "cluster": name, "user": f"{CLUSTER}-emu"}})
    path = kim.kubeconfig.with_name("sni-kubeconfig")
    path.write_text(yaml.safe_dump(config))
    env = {**kim.env, "KUBECONFIG": str(path)}
    for port in ("web", "kube"):
        out = run(["kubectl", "--request-timeout=20s", "--context", f"sni-{port}", "get",
                   "namespaces", "-o", "name"], env=env).stdout
        assert "namespace/default" in out  # kube-ops on emu-ops: everything
    events = kube_env.wait_audit("the lists by server name", user="kim",
                                 kube_cluster="emu-ops", resource="namespaces", verb="list")
    assert len(events) >= 2


def test_a_scoped_certificate_is_refused_on_another_clusters_path(kube_env: KubeEnv,
                                                                  tmp_path: Path) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    server = _clusters(alice)[f"{CLUSTER}-emu"]["server"]
    other = server.replace(route_path(CLUSTER, "emu"), route_path(CLUSTER, "emu-ops"))
    refused = alice.kubectl("--server", other, "get", "configmaps", check=False)  # HTTP/2
    assert refused.returncode == 1
    assert "Error from server (Forbidden)" in refused.stderr
    raw = alice.kubectl("get", "--raw", route_path(CLUSTER, "emu-ops") + CONFIGMAPS,
                        check=False)  # --raw: the path as it is (kubectl shows the message)
    assert raw.returncode == 1
    assert "this certificate is for kube cluster 'emu'" in raw.stderr
    _refused(kube_env, "this certificate is for kube cluster 'emu'", user="alice",
             kube_cluster="emu-ops")
    address = server.removeprefix("https://").split("/")[0]
    sock = _tls(alice, tmp_path, _credentials(alice, "--cluster", "emu"), address,
                server_name=address.rsplit(":", 1)[0], alpn="http/1.1")
    try:
        status, body = _http1(sock, route_path(CLUSTER, "emu-ops") + CONFIGMAPS)
    finally:
        sock.close()
    assert (status, json.loads(body)["reason"]) == (403, "Forbidden")


@pytest.mark.parametrize(("prefix", "why"), [
    ("/v1/limen/a3ViZXRlc3Q/ZW*1", "not base64url"),
    ("/v1/limen/a3ViZXRlc3Q/" + base64.urlsafe_b64encode(b"e\0mu").decode(),
     "control character"),
    ("/v1/limen/a3ViZXRlc3Q/" + base64.urlsafe_b64encode(b"emu/x").decode(), "'/'"),
    ("/v1/limen/a3ViZXRlc3Q/" + "QUFB" * 200, "longer than"),
    ("/v1/limen//ZW11", "names no cluster"),
])
def test_a_crafted_prefix_is_a_400_status_and_audited(kube_env: KubeEnv, kim: KubePerson,
                                                      kim_credential: tuple[str, str],
                                                      tmp_path: Path, prefix: str,
                                                      why: str) -> None:
    address = kube_env.cluster.listeners["kube"]
    sock = _tls(kim, tmp_path, kim_credential, address,
                server_name=address.rsplit(":", 1)[0], alpn="http/1.1")
    try:
        status, body = _http1(sock, prefix + CONFIGMAPS)
    finally:
        sock.close()
    answer = json.loads(body)
    assert (status, answer["kind"], answer["reason"]) == (400, "Status", "BadRequest")
    assert why in answer["message"]
    event = _refused(kube_env, why, user="kim")
    assert event["reason"].startswith("bad request")


def test_logout_removes_the_certificate_and_the_contexts_of_login_all(
        kube_env: KubeEnv, kim: KubePerson) -> None:
    """Last: kim logs out."""
    assert f"{CLUSTER}-emu-ops" in _clusters(kim)
    kim.lmsh("kube", "logout")
    config = yaml.safe_load(kim.kubeconfig.read_text())
    assert not [c for c in config["contexts"] if c["name"].startswith(f"{CLUSTER}-")]
    assert not list(kim.user.home.rglob("kim-kube-any/*"))
