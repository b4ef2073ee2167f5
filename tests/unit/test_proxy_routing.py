"""The proxy's SSH routing: the resolution table, the subsystem form, and how the node list is
assembled from the tunnel registry, auth presence and agentless Resources."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from limen.api.resources import Kind, Resource
from limen.errors import BadParameter, NotFound
from limen.proxy.routing import (
    Node,
    address_of,
    collect_nodes,
    parse_labels_query,
    parse_subsystem,
    resolve,
)
from limen.tunnel.registry import AgentRecord

WEB1 = Node("web1", {"env": "dev", "team": "core"}, host_id="h-web1", hostnames=("web1.lan",),
            address="10.0.0.5:3022", connected_here=True)
WEB2 = Node("web2", {"env": "dev", "team": "infra"}, host_id="h-web2", connected_here=True)
DB1 = Node("db1", {"env": "prod"}, host_id="h-db1", connected_here=True)
LEGACY = Node("legacy", {"env": "dev"}, address="192.168.1.9:22", agentless=True)
TWIN_A = Node("twin", {}, host_id="h-twin-a", connected_here=True)
TWIN_B = Node("twin", {}, host_id="h-twin-b", connected_here=True)
NODES = [WEB1, WEB2, DB1, LEGACY, TWIN_A, TWIN_B]


@pytest.mark.parametrize(("host", "port", "expected"), [
    ("web1", 22, WEB1),                      # name, any port
    ("web1", 0, WEB1),
    ("web1.lan", 22, WEB1),                  # spec.hostname / certificate hostname
    ("h-web2", 22, WEB2),                    # host id
    ("h-web2.root", 22, WEB2),               # host id . cluster
    ("10.0.0.5", 3022, WEB1),                # host:port of a registered node
    ("192.168.1.9", 22, LEGACY),             # agentless by address
    ("legacy", 2222, LEGACY),                # agentless by name: its own address is used
    ("env=prod", 22, DB1),                   # labels
    ("env=dev,team=infra", 22, WEB2),
    ("h-twin-a", 22, TWIN_A),                # the host id disambiguates
])
def test_resolution_table(host: str, port: int, expected: Node) -> None:
    assert resolve(host, port, NODES, "root") == expected


@pytest.mark.parametrize(("host", "port", "error", "text"), [
    ("nosuch", 22, NotFound, "^unknown node 'nosuch'$"),
    ("10.0.0.5", 22, NotFound, "^unknown node '10.0.0.5'$"),      # right host, wrong port
    ("env=qa", 22, NotFound, "^no node has the labels 'env=qa'$"),
    ("env=dev", 22, BadParameter, "^'env=dev' matches 3 nodes: use one of h-web1, h-web2, "
                                  "legacy$"),
    ("twin", 22, BadParameter, "^'twin' matches 2 nodes: use one of h-twin-a, h-twin-b$"),
    ("h-web2.leaf", 22, NotFound, "^unknown node 'h-web2.leaf'$"),
])
def test_resolution_failures(host: str, port: int, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        resolve(host, port, NODES, "root")


def test_earlier_tiers_win() -> None:
    by_id = Node("x", {}, host_id="web9", connected_here=True)
    by_name = Node("web9", {}, host_id="h-other", connected_here=True)
    assert resolve("web9", 22, [by_name, by_id]) == by_id


@pytest.mark.parametrize(("subsystem", "expected"), [
    ("proxy:web1:3022@root", ("web1", 3022, "root")),
    ("proxy:web1:22", ("web1", 22, None)),
    ("proxy:web1@leaf", ("web1", 0, "leaf")),
    ("proxy:[::1]:22@root", ("::1", 22, "root")),
    ("proxy:10.0.0.5:22", ("10.0.0.5", 22, None)),
])
def test_parse_subsystem(subsystem: str, expected: tuple[str, int, str | None]) -> None:
    assert parse_subsystem(subsystem) == expected


@pytest.mark.parametrize("subsystem", ["sftp", "proxy:", "proxy:@root", "proxy:a:b:c",
                                       "proxy:web1:notaport", "proxy:web1:70000"])
def test_parse_subsystem_refuses(subsystem: str) -> None:
    with pytest.raises(BadParameter):
        parse_subsystem(subsystem)


def test_parse_labels_query() -> None:
    assert parse_labels_query("web1") is None
    assert parse_labels_query("env=dev, team = core") == {"env": "dev", "team": "core"}
    with pytest.raises(BadParameter):
        parse_labels_query("env=dev,=x")


def test_collect_nodes_merges_registry_presence_and_agentless_resources() -> None:
    now = datetime.now(UTC)
    local = AgentRecord("h1", "web1", "root", "node", "1.2.3.4:5", now).with_heartbeat(
        {"kind": "Resource", "metadata": {"name": "claims-db1", "labels": {"env": "dev"}},
         "spec": {"kind": "ssh", "hostname": "db1", "address": "10.0.0.5:3022"}}, now)
    presence: list[dict[str, Any]] = [
        {"host_id": "h1", "tunnel": "p1", "resource": {"metadata": {"name": "stale"},
                                                        "spec": {"kind": "ssh"}}},
        {"host_id": "h2", "tunnel": "p2", "resource": {
            "metadata": {"name": "far", "labels": {"env": "dev"}}, "spec": {"kind": "ssh"}}},
        {"host_id": 5, "resource": {}},
    ]
    resources = [
        Resource(Kind.RESOURCE, "legacy", {"kind": "ssh", "address": "192.168.1.9:22"},
                 {"env": "dev"}),
        Resource(Kind.RESOURCE, "declared-only", {"kind": "ssh"}),
        Resource(Kind.RESOURCE, "pg", {"kind": "db", "protocol": "postgres",
                                       "address": "db:5432"}),
    ]
    nodes = {n.name: n for n in collect_nodes({"h1": local}, presence, resources)}
    assert set(nodes) == {"web1", "far", "legacy"}
    assert nodes["web1"].connected_here
    # an agent is named by its certificate; its heartbeat cannot claim other names
    assert nodes["web1"].hostnames == ("web1",)
    assert nodes["web1"].address == "10.0.0.5:3022"
    assert nodes["web1"].labels == {"env": "dev"}
    assert (nodes["far"].connected_here, nodes["far"].tunnel) == (False, "p2")
    assert nodes["legacy"].agentless
    assert address_of(nodes["legacy"]) == "192.168.1.9:22"
    assert address_of(Node("x", address="host")) == "host:22"
