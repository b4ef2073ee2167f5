"""HTTP/2 on the kube front (issue #15): the real kubectl, which picks ``h2`` when the proxy
offers it, against the project's Kubernetes emulator through a single-node cluster
(``kube_env``). ``get``, ``get -w`` receiving a change and ``logs -f`` go over HTTP/2 (Go's
own HTTP/2 log, ``GODEBUG=http2debug=1``, shows the client connection and its frames) and are
audited by the kube agent as ever; ``exec`` still goes over HTTP/1.1 (client-go opens its own
connection for upgrades). With the ``h2`` library over TLS: the web port's kube server name
speaks HTTP/2 as well; without a certificate each
stream gets the 401 ``Status`` and a failed ``kube.request``; attacks with a real kube
certificate: more streams than the limit at once (REFUSED_STREAM, a failed ``kube.request``
naming it) and an oversized header list (GOAWAY ENHANCE_YOUR_CALM, audited).
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import pytest
import yaml
from h2.errors import ErrorCodes

from limen.net.kube_sni import KUBE_SERVER_NAME

from .cluster import run, wait_for
from .kube_env import KubeEnv, KubePerson, start_kube_env

HTTP2_LOG = "http2: Transport creating client conn"
"""What Go's HTTP/2 client logs with GODEBUG=http2debug=1 when it opens a connection."""


@pytest.fixture(scope="module")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    yield from start_kube_env(tmp_path_factory.mktemp("kubeh2"))


def _alice(env: KubeEnv) -> KubePerson:
    env.alice.lmsh("kube", "login", "emu")
    return env.alice


def _h2_env(person: KubePerson) -> dict[str, str]:
    return {**person.env, "GODEBUG": "http2debug=1"}


def _read_until(process: subprocess.Popen[bytes], done: Callable[[bytes], bool],
                on_data: Callable[[bytes], None] | None = None) -> bytes:
    """What ``process`` printed until ``done`` says so (20 s at most)."""
    assert process.stdout is not None
    fd, seen = process.stdout.fileno(), b""
    deadline = time.monotonic() + 20.0
    while not done(seen) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        data = os.read(fd, 4096) if ready else b""
        if not data:
            break
        seen += data
        if on_data is not None:
            on_data(seen)
    return seen


def _stop(process: subprocess.Popen[bytes]) -> str:
    process.terminate()
    _out, err = process.communicate(timeout=10)
    return err.decode(errors="replace")


def test_kubectl_get_goes_over_http2_and_is_audited(kube_env: KubeEnv) -> None:
    alice = _alice(kube_env)
    kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "over-h2", "namespace": "default"}})
    result = run(["kubectl", "--request-timeout=20s", "get", "configmaps", "-o", "name"],
                 env=_h2_env(alice))
    assert "configmap/over-h2" in result.stdout
    assert HTTP2_LOG in result.stderr, result.stderr[-2000:]
    assert "http2: Transport received HEADERS" in result.stderr
    events = kube_env.wait_audit("the list audited", user="alice", verb="list",
                                 resource="configmaps")
    assert (events[-1]["response_code"], events[-1]["kubernetes_user"]) == (200, "alice")
    refused = alice.kubectl("get", "secrets", check=False)  # the agent's refusal, on a stream
    assert refused.returncode == 1
    assert "Limen: alice may not" in refused.stderr


def test_watch_over_http2_receives_a_change(kube_env: KubeEnv) -> None:
    alice = _alice(kube_env)
    kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "h2-listed", "namespace": "default"}})
    watch = subprocess.Popen(["kubectl", "get", "configmaps", "-w", "-o", "name"],
                             env=_h2_env(alice), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    created: list[bool] = []

    def create_once(seen: bytes) -> None:
        if b"configmap/h2-listed" in seen and not created:  # the watch starts from there
            created.append(True)
            kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "h2-watched", "namespace": "default"}})

    try:
        seen = _read_until(watch, lambda s: b"configmap/h2-watched" in s, create_once)
    finally:
        err = _stop(watch)
    assert b"configmap/h2-watched" in seen, (seen, err[-2000:])
    assert HTTP2_LOG in err


def test_logs_follow_over_http2_and_exec_over_http1(kube_env: KubeEnv) -> None:
    alice = _alice(kube_env)
    kube_env.api.run_pod("h2-ticker", ["sh", "-c", "echo up; while true; do echo tick; "
                                                   "sleep 0.2; done"])
    follow = subprocess.Popen(["kubectl", "logs", "-f", "h2-ticker"], env=_h2_env(alice),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = _read_until(follow, lambda s: s.count(b"tick") >= 5)
    finally:
        err = _stop(follow)
    assert seen.count(b"tick") >= 5, (seen, err[-2000:])
    assert HTTP2_LOG in err
    out = alice.kubectl("exec", "h2-ticker", "--", "sh", "-c", "echo h2 $((6*7))").stdout
    assert out.strip() == "h2 42"
    [event] = kube_env.wait_audit("the exec audited", user="alice", verb="exec")
    assert event["response_code"] == 101


# the h2 library as the client, with alice's real kube certificate (or none)


class _H2Client:
    def __init__(self, env: KubeEnv, person: KubePerson, tmp: Path, *,
                 certificate: bool = True, web_port: bool = False) -> None:
        config = yaml.safe_load(person.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        status = json.loads(person.lmsh("kube", "credentials", "--cluster", "emu").stdout)[
            "status"]
        (tmp / "c.pem").write_text(status["clientCertificateData"])
        (tmp / "k.pem").write_text(status["clientKeyData"])
        context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        if certificate:
            context.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
        context.set_alpn_protocols(["h2"])
        server = urlsplit(f"https://{env.cluster.web}" if web_port else cluster["server"])
        assert server.hostname is not None
        raw = socket.create_connection((server.hostname, server.port or 443), timeout=20)
        self.sock = context.wrap_socket(raw, server_hostname=KUBE_SERVER_NAME if web_port
                                        else cluster.get("tls-server-name") or server.hostname)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.client_addr = "{}:{}".format(*self.sock.getsockname()[:2])
        # the kernel soon reuses a closed port on loopback: an earlier client of this cluster
        # may have had the same address, and its refusals are not this client's
        self.earlier = {e["uid"] for e in env.cluster.audit("kube.request")}
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.authority = f"{server.hostname}:{server.port}"
        self.events: list[Any] = []

    def close(self) -> None:
        self.sock.close()

    def get(self, stream_id: int, path: str, extra: list[tuple[str, str]] | None = None
            ) -> None:
        self.conn.send_headers(stream_id, [
            (":method", "GET"), (":scheme", "https"), (":authority", self.authority),
            (":path", path), *(extra or [])], end_stream=True)

    def send(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20.0
        while not done() and time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                break
            if not data:
                break
            for event in self.conn.receive_data(data):
                self.events.append(event)
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                        event.stream_id)
            self.sock.sendall(self.conn.data_to_send())
        assert done(), what


def _refusals(env: KubeEnv, client: _H2Client) -> list[dict[str, Any]]:
    """The refused requests of ``client``'s connection (by its address, after it connected)."""
    return [e for e in env.cluster.audit("kube.request")
            if e.get("success") is False and e.get("remote_addr") == client.client_addr
            and e["uid"] not in client.earlier]


def test_no_certificate_is_a_401_status_on_each_stream(kube_env: KubeEnv,
                                                      tmp_path: Path) -> None:
    client = _H2Client(kube_env, _alice(kube_env), tmp_path, certificate=False)
    try:
        for stream_id in (1, 3):
            client.get(stream_id, "/api/v1/namespaces/default/configmaps")
        client.send()
        client.until(lambda: sum(isinstance(e, h2.events.StreamEnded)
                                 for e in client.events) == 2, "both streams answered")
        statuses = [dict(e.headers)[b":status"] for e in client.events
                    if isinstance(e, h2.events.ResponseReceived)]
        assert statuses == [b"401", b"401"]
        body = b"".join(e.data for e in client.events if isinstance(e, h2.events.DataReceived)
                        and e.stream_id == 1)
        status = json.loads(body)
        assert (status["kind"], status["reason"]) == ("Status", "Unauthorized")
        assert "no client certificate" in status["message"]
    finally:
        client.close()
    events = wait_for(lambda: len(_refusals(kube_env, client)) == 2 and
                      _refusals(kube_env, client), 15.0, "the refusals audited")
    assert all("no client certificate" in e["reason"] for e in events)


def test_the_web_ports_kube_name_speaks_http2_too(kube_env: KubeEnv, tmp_path: Path) -> None:
    client = _H2Client(kube_env, _alice(kube_env), tmp_path, web_port=True)
    try:
        client.get(1, "/api/v1/namespaces/default/configmaps")
        client.send()
        client.until(lambda: any(isinstance(e, h2.events.StreamEnded) for e in client.events),
                     "the answer")
        [response] = [e for e in client.events if isinstance(e, h2.events.ResponseReceived)]
        assert dict(response.headers)[b":status"] == b"200"
        body = b"".join(e.data for e in client.events if isinstance(e, h2.events.DataReceived))
        assert json.loads(body)["kind"] == "ConfigMapList"
    finally:
        client.close()
    events = kube_env.wait_audit("the list audited", user="alice", verb="list",
                                 remote_addr=client.client_addr)
    assert events[-1]["response_code"] == 200


def test_more_streams_than_the_limit_are_refused(kube_env: KubeEnv, tmp_path: Path) -> None:
    client = _H2Client(kube_env, _alice(kube_env), tmp_path)
    try:
        ids = [1 + 2 * i for i in range(251)]
        for stream_id in ids:  # all at once, before the server's SETTINGS could limit them
            client.get(stream_id, "/version")
        client.send()

        def ended() -> set[int]:
            return {e.stream_id for e in client.events
                    if isinstance(e, h2.events.StreamEnded | h2.events.StreamReset)}

        client.until(lambda: ended() >= set(ids), "every stream answered or refused")
        resets = [(e.stream_id, e.error_code) for e in client.events
                  if isinstance(e, h2.events.StreamReset)]
        assert resets == [(ids[-1], ErrorCodes.REFUSED_STREAM)]
        served = [e for e in client.events if isinstance(e, h2.events.ResponseReceived)]
        assert len(served) == 250
        assert all(dict(e.headers)[b":status"] == b"200" for e in served)
    finally:
        client.close()
    [event] = wait_for(lambda: _refusals(kube_env, client), 15.0,
                       "the refusal audited")
    assert event["user"] == "alice"
    assert event["reason"] == ("HTTP/2: more than 250 concurrent streams; stream 501 "
                               "refused (REFUSED_STREAM)")


def test_an_oversized_header_list_is_refused(kube_env: KubeEnv, tmp_path: Path) -> None:
    client = _H2Client(kube_env, _alice(kube_env), tmp_path)
    try:
        client.get(1, "/version", [("x-padding", "p" * 70_000)])
        client.send()
        client.until(lambda: any(isinstance(e, h2.events.ConnectionTerminated)
                                 for e in client.events), "GOAWAY")
        [goaway] = [e for e in client.events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert not any(isinstance(e, h2.events.ResponseReceived) for e in client.events)
    finally:
        client.close()
    [event] = wait_for(lambda: _refusals(kube_env, client), 15.0,
                       "the refusal audited")
    assert event["user"] == "alice"
    assert event["reason"].startswith("HTTP/2 protocol error (GOAWAY ENHANCE_YOUR_CALM)")
