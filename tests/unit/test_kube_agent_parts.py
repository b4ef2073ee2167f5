"""The kube agent's pure parts: the strict HTTP/1.1 request head (``http1``: framing that
could let the agent and the API server disagree refused; fuzzed), the headers sent upstream
(``forwarder.upstream_headers``: the client's Authorization and Impersonate-* dropped, the
agent's own added), and where the agent reads a cluster's kubeconfig (``upstream``: a
Resource's ``kubeconfig_ref`` names a file inside the secrets directory only — a name with a
path, a symlink out of it and a non-regular file are refused —, an env var with the fixed
prefix, the in-cluster account; exec plugins refused).
"""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from k8s_emulator.tls import tls_material
from limen.agents.kube.forwarder import upstream_headers
from limen.agents.kube.http1 import chunk, parse_request_head
from limen.agents.kube.session import Impersonation
from limen.agents.kube.upstream import Upstream, Upstreams, parse_kubeconfig
from limen.api.resources import Resource
from limen.errors import AccessDenied, BadParameter

CA_PEM = tls_material()[0]


def _kubeconfig(user: dict[str, object], server: str = "https://10.0.0.1:6443") -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(CA_PEM).decode()}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]})


def test_a_request_head() -> None:
    head = parse_request_head(b"GET /api/v1/pods?watch=true HTTP/1.1\r\nHost: k\r\n"
                              b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket")
    assert (head.method, head.path, head.query) == ("GET", "/api/v1/pods", "watch=true")
    assert head.keep_alive
    assert head.is_upgrade
    assert chunk(b"abc") == b"3\r\nabc\r\n"
    assert chunk(b"") == b""


@pytest.mark.parametrize("raw", [
    b"GET /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked",
    b"GET /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked",
    b"GET /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4",
    b"GET /x HTTP/1.1\r\nContent-Length: -1",
    b"GET /x HTTP/1.1\r\nX: a\r\n folded",
    b"GET http://evil/x HTTP/1.1",
    b"GET /x HTTP/2.0",
    b"GET /x HTTP/1.1\r\nBad Name: v",
    b"GET /x HTTP/1.1\r\nX: a\x00b",
], ids=["cl-te", "te-not-chunked", "two-lengths", "negative", "folding", "absolute-form",
        "http2", "header-name", "nul"])
def test_ambiguous_or_malformed_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(BadParameter):
        parse_request_head(raw)


@given(st.binary(max_size=300))
def test_fuzz_request_heads(raw: bytes) -> None:
    with contextlib.suppress(BadParameter):
        parse_request_head(raw)


def test_the_clients_credentials_and_impersonation_never_go_upstream() -> None:
    head = parse_request_head(
        b"GET /api/v1/pods HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer stolen\r\n"
        b"Impersonate-User: admin\r\nimpersonate-group: system:masters\r\n"
        b"Impersonate-Extra-scopes: x\r\nImpersonate-Uid: 0\r\nConnection: close, X-Hop\r\n"
        b"X-Hop: 1\r\nAccept: application/json")
    upstream = Upstream(server="https://10.0.0.1:6443", ssl=None,  # type: ignore[arg-type]
                        static_token="agent-token")
    headers = upstream_headers(head, upstream, Impersonation("alice", ("dev", "ops")))
    assert headers.getall("Authorization") == ["Bearer agent-token"]
    assert headers.getall("Impersonate-User") == ["alice"]
    assert headers.getall("Impersonate-Group") == ["dev", "ops"]
    assert not [k for k in headers if k.lower().startswith("impersonate-extra")
                or k.lower() == "impersonate-uid"]
    assert "X-Hop" not in headers
    assert "Connection" not in headers
    assert headers["Accept"] == "application/json"


def test_kubeconfig_credentials() -> None:
    token = parse_kubeconfig(_kubeconfig({"token": "t0k"}))
    assert (token.server, token.token(), token.host_header) == \
        ("https://10.0.0.1:6443", "t0k", "10.0.0.1:6443")
    with pytest.raises(BadParameter, match="exec and auth-provider"):
        parse_kubeconfig(_kubeconfig({"exec": {"command": "aws"}}))
    with pytest.raises(BadParameter, match="https://"):
        parse_kubeconfig(_kubeconfig({"token": "t"}, server="http://10.0.0.1:8080"))


def _resource(ref: dict[str, str] | None) -> Resource:
    spec: dict[str, object] = {"kind": "kube"}
    if ref is not None:
        spec["kubeconfig_ref"] = ref
    return Resource.from_document({"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
                                   "metadata": {"name": "prod"}, "spec": spec})


def test_a_kubeconfig_ref_reads_only_inside_the_secrets_directory(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "prod.kubeconfig").write_text(_kubeconfig({"token": "inside"}))
    outside = tmp_path / "outside.kubeconfig"
    outside.write_text(_kubeconfig({"token": "outside"}))
    os.symlink(outside, secrets / "escape")
    os.mkfifo(secrets / "fifo")
    upstreams = Upstreams(secrets, {}, environ={
        "LIMEN_SECRET_KC": _kubeconfig({"token": "from-env"}), "HOME": "/root"})
    assert upstreams.get(_resource({"file": "prod.kubeconfig"}), static=False).token() == \
        "inside"
    assert upstreams.get(_resource({"env": "LIMEN_SECRET_KC"}), static=False).token() == \
        "from-env"
    for ref, error in (({"file": "../outside.kubeconfig"}, AccessDenied),
                       ({"file": "escape"}, AccessDenied),
                       ({"file": "fifo"}, AccessDenied),
                       ({"env": "HOME"}, AccessDenied),
                       ({"secret": "kc", "key": "config"}, BadParameter)):
        with pytest.raises(error):
            Upstreams(secrets, {}, environ={"HOME": "/root"}).get(_resource(ref),
                                                                   static=False)


def test_the_in_cluster_service_account(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_bytes(CA_PEM)
    upstreams = Upstreams(tmp_path / "none", {}, in_cluster_dir=tmp_path, environ={
        "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    upstream = upstreams.get(_resource(None), static=False)
    assert (upstream.server, upstream.token()) == ("https://10.96.0.1:443", "sa-token")
    with pytest.raises(BadParameter, match="not in a pod"):
        Upstreams(tmp_path, {}, environ={}).get(_resource(None), static=False)
