"""``/readyz`` and the tunnel metrics when a part is taken away and comes back, with real
processes: auth, a proxy and a node agent as three ``limen start`` processes (the node killed
and restarted: the proxy's ``limen_tunnel_agents_connected`` drops and comes back, its
``limen_tunnel_reconnects_total`` counts the return; the proxy killed: the node's ``/readyz``
fails ``node-tunnel`` until the proxy is back), and an auth whose PostgreSQL is stopped
(``/readyz`` fails ``auth-backend`` with the reason, then recovers without a restart)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from dbservers import PostgresServer, start_postgres
from ports import free_ports

from .cluster import LimenCluster, wait_for
from .diag_scrape import readyz, scrape, total

DIAG = ["--diag-addr", "127.0.0.1:0"]


def _private(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass
class Apart:
    auth: LimenCluster
    proxy: LimenCluster
    node: LimenCluster


@pytest.fixture
def apart(tmp_path: Path) -> Iterator[Apart]:
    token = secrets.token_hex(24)
    auth_yaml = tmp_path / "auth.yaml"
    auth_yaml.write_text(yaml.safe_dump({"auth": {"proxy_token_file": str(
        _private(tmp_path / "proxy-token", token))}}), encoding="utf-8")
    auth = LimenCluster(tmp_path / "auth", "seen", ["--roles", "auth", "-c", str(auth_yaml)])
    started: list[LimenCluster] = []
    try:
        started.append(auth.start())
        node_token = auth.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
        proxy_yaml = tmp_path / "proxy.yaml"
        # fixed ports, the diagnostics listener's too: the restarted proxy keeps them, and
        # no listener of its own can take a port chosen for another
        names = ("web", "ssh_proxy", "tunnel", "postgres", "mysql", "kube", "diag")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        proxy_yaml.write_text(yaml.safe_dump({"listeners": {
            name: f"127.0.0.1:{port}" for name, port in ports.items() if name != "diag"}}),
            encoding="utf-8")
        proxy = LimenCluster(tmp_path / "proxy", "seen", [
            "--roles", "proxy", "-c", str(proxy_yaml), "--auth-server", auth.auth,
            "--token", token, "--ca-pin", node_token["ca_pin"],
            "--diag-addr", f"127.0.0.1:{ports['diag']}"], random_ports=False)
        started.append(proxy.start())
        node = LimenCluster(tmp_path / "node", "seen", [
            "--roles", "node", "--proxy", proxy.web, "--token", node_token["token"],
            "--ca-pin", node_token["ca_pin"], *DIAG])
        started.append(node.start())
        yield Apart(auth, proxy, node)
    finally:
        for process in reversed(started):
            process.kill()


def _agents(proxy: LimenCluster) -> float:
    return total(scrape(proxy.listeners["diag"]), "limen_tunnel_agents_connected")


def test_a_killed_agent_leaves_the_proxy_and_its_return_counts_as_a_reconnect(
        apart: Apart) -> None:
    wait_for(lambda: _agents(apart.proxy) == 1, 15.0, "the node's tunnel at the proxy")
    assert total(scrape(apart.proxy.listeners["diag"]), "limen_tunnel_reconnects_total") == 0
    assert readyz(apart.node.listeners["diag"]) == (200, "ready\nok node-tunnel\n")
    apart.node.kill()
    wait_for(lambda: _agents(apart.proxy) == 0, 30.0, "the proxy to drop the killed node")
    apart.node.start()
    wait_for(lambda: _agents(apart.proxy) == 1, 15.0, "the restarted node's tunnel")
    samples = scrape(apart.proxy.listeners["diag"])
    assert total(samples, "limen_tunnel_reconnects_total") == 1
    assert total(samples, "limen_tunnel_connections_total") == 2
    wait_for(lambda: total(scrape(apart.proxy.listeners["diag"]),
                           "limen_heartbeats_total") >= 1, 20.0, "a heartbeat at the proxy")


def test_the_node_is_unready_while_its_tunnel_is_gone(apart: Apart) -> None:
    node_diag = apart.node.listeners["diag"]
    wait_for(lambda: readyz(node_diag)[0] == 200, 15.0, "the node to be ready")
    status, body = readyz(apart.proxy.listeners["diag"])
    assert (status, body) == (200, "ready\nok proxy-auth\nok proxy-listeners\n")
    apart.proxy.kill()
    status, body = wait_for(lambda: (answer := readyz(node_diag))[0] == 503 and answer, 30.0,
                            "the node to turn unready")
    assert body.startswith("not ready\nfail node-tunnel: no tunnel to any proxy"), body
    apart.proxy.start()
    wait_for(lambda: readyz(node_diag) == (200, "ready\nok node-tunnel\n"), 30.0,
             "the node to be ready again through the restarted proxy")


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    with start_postgres(tmp_path / "pg") as server:
        yield server


def test_auth_is_unready_while_its_backend_is_gone(tmp_path: Path,
                                                   postgres: PostgresServer) -> None:
    postgres.create_user("limen_seen")
    postgres.sql("CREATE DATABASE limen_seen OWNER limen_seen")
    config = tmp_path / "limen.yaml"
    config.write_text(yaml.safe_dump({"backend": {
        "type": "postgres",
        "dsn_file": str(_private(tmp_path / "dsn", f"host={postgres.root} port="
                                 f"{postgres.port} user=limen_seen dbname=limen_seen")),
        "ca_key_file": str(_private(tmp_path / "ca.key", secrets.token_hex(32)))}}))
    auth = LimenCluster(tmp_path / "auth", "seen", ["--roles", "auth", "-c", str(config), *DIAG])
    try:
        auth.start()
        diag = auth.listeners["diag"]
        assert readyz(diag) == (200, "ready\nok auth-backend\nok auth-ca\n")
        postgres.stop()
        _status, body = wait_for(lambda: (answer := readyz(diag))[0] == 503 and answer, 30.0,
                                "auth to turn unready")
        assert "fail auth-backend: the backend" in body, body
        assert "ok auth-ca" in body
        assert "password" not in body
        postgres.start()
        wait_for(lambda: readyz(diag)[0] == 200, 30.0, "auth to be ready again", interval=0.5)
        samples = scrape(diag)
        assert total(samples, "limen_backend_operation_errors_total") >= 1
    finally:
        auth.stop()
