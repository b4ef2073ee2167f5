"""A proxy that publishes one port (issue #20, TLS routing): auth, a proxy whose tunnel
listener is off (``listeners.tunnel: ""``) and a node agent apart, joined with ``--proxy`` at
the proxy's web port, as three ``limen start`` processes.

The proxy binds no tunnel port: its ping and ``listeners.json`` name ``tls://<web>``, and the
node's tunnel (control, data, and its route to auth) runs through the web port with ALPN
``limen-tunnel``. The node shows in ``lmsh ls``; real OpenSSH with the ``lmsh config`` block
reaches it; a stream on that ALPN that is neither SSH nor a data preamble is dropped while the
web API on the same port still answers. (The refusal of an agent whose host certificate is not
valid inside the TLS stream, audited, is in ``tests/unit/test_tunnel_web_port.py``, against the
same TunnelServer and TLSRouter.)
"""

from __future__ import annotations

import getpass
import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from limen.net.address import parse_address
from limen.net.tunnel_address import ALPN_TUNNEL

from .apart_cluster import apart_cluster
from .cluster import LimenCluster, LimenUser, describe, run, wait_for

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
CLUSTER = "oneport"


@dataclass
class OnePort:
    auth: LimenCluster
    proxy: LimenCluster
    node: LimenCluster
    user: LimenUser
    ssh_config: Path

    def ssh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(["ssh", "-F", self.ssh_config, *args], env=self.user.env, check=False)

    def tls(self, alpn: str) -> ssl.SSLSocket:
        """A TLS connection to the web port asking for ``alpn``, the proxy verified."""
        cas = (self.proxy.data_dir / "host" / "cas.pem").read_text(encoding="utf-8")
        context = ssl.create_default_context(cadata=cas)
        context.check_hostname = False
        context.set_alpn_protocols([alpn])
        raw = socket.create_connection(parse_address(self.proxy.web), timeout=10)
        try:
            return context.wrap_socket(raw)
        except BaseException:
            raw.close()
            raise


@pytest.fixture(scope="module")
def oneport(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnePort]:
    root = tmp_path_factory.mktemp("oneport")
    with apart_cluster(root, CLUSTER, "olga",
                       proxy_settings={"listeners": {"tunnel": ""}}) as apart:
        ssh_config = apart.user.home / "ssh_config"
        ssh_config.write_text(apart.user.lmsh("config").stdout, encoding="utf-8")
        yield OnePort(apart.auth, apart.proxy, apart.node, apart.user, ssh_config)


def _listed(env: OnePort) -> list[dict[str, object]]:
    items = json.loads(env.user.lmsh("ls", "-o", "json").stdout)["items"]
    return [n for n in items if n["hostname"] == HOST]


def test_the_proxy_binds_no_tunnel_port_and_names_its_web_port(oneport: OnePort) -> None:
    assert oneport.proxy.listeners["tunnel"] == f"tls://{oneport.proxy.web}"
    line = f"connected to proxy {_proxy_id(oneport)} at tls://{oneport.proxy.web}"
    wait_for(lambda: line in oneport.node.output(), 20.0, "the node's tunnel via the web port")


def _proxy_id(env: OnePort) -> str:
    meta = json.loads((env.proxy.data_dir / "host" / "meta.json").read_text(encoding="utf-8"))
    return str(meta["host_id"])


def test_the_node_tunnelled_through_the_web_port_is_listed(oneport: OnePort) -> None:
    wait_for(lambda: _listed(oneport), 20.0, "the node's heartbeat to reach lmsh ls")


def test_openssh_reaches_the_node_through_its_tunnel_on_the_web_port(oneport: OnePort) -> None:
    attempts: list[subprocess.CompletedProcess[str]] = []

    def reached() -> bool:
        attempts.append(oneport.ssh(f"{LOGIN}@{HOST}.{CLUSTER}", "echo through-443"))
        return attempts[-1].stdout.strip() == "through-443"

    try:
        wait_for(reached, 20.0, "ssh to the node tunnelled through the web port")
    except AssertionError:
        raise AssertionError(describe(attempts[-1])) from None
    node_id = (oneport.node.data_dir / "host_uuid").read_text(encoding="utf-8").strip()
    wait_for(lambda: [e for e in oneport.auth.audit("exec", user="olga")
                      if e.get("server_id") == node_id], 15.0,
             "the node's exec event, sent to auth through the tunnel on the web port")


def test_garbage_on_the_tunnel_alpn_is_dropped_and_the_web_api_answers(
        oneport: OnePort) -> None:
    with oneport.tls(ALPN_TUNNEL) as conn:
        assert conn.selected_alpn_protocol() == ALPN_TUNNEL
        conn.sendall(b"GET /v1/webapi/ping HTTP/1.1\r\nHost: proxy\r\n\r\n")
        assert conn.recv(100) == b""  # neither "SSH-" nor a data preamble: dropped
    with oneport.tls("http/1.1") as conn:
        conn.sendall(b"GET /v1/webapi/ping HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["tunnel"] == f"tls://{oneport.proxy.web}"
    assert oneport.proxy.running
