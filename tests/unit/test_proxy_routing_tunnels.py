"""Routing with several proxies: a presence record lists every proxy holding the agent's tunnel
(``tunnels``; older records name one ``tunnel``), and a proxy without the tunnel answers with
the proxies that have it (the error of a single-proxy cluster, listing them all)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from limen.auth.client import AuthClient
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity
from limen.errors import ConnectionProblem
from limen.events.emitter import MemoryEmitter
from limen.net.relay import Relay
from limen.proxy.routing import ClusterView, Node, collect_nodes
from limen.proxy.sshproxy import SSHConnector
from limen.tunnel.server import TunnelServer

DOC = {"metadata": {"name": "far"}, "spec": {"kind": "ssh"}}


@pytest.mark.parametrize(("item", "tunnels", "tunnel"), [
    ({"host_id": "h2", "tunnel": "p2", "tunnels": ["p1", "p2"], "resource": DOC},
     ("p1", "p2"), "p2"),
    ({"host_id": "h2", "tunnel": "p2", "resource": DOC}, ("p2",), "p2"),
    ({"host_id": "h2", "tunnels": ["p1", 7, ""], "resource": DOC}, ("p1",), ""),
    ({"host_id": "h2", "resource": DOC}, (), ""),
])
def test_presence_names_the_proxies_holding_the_tunnel(
        item: dict[str, Any], tunnels: tuple[str, ...], tunnel: str) -> None:
    (node,) = collect_nodes({}, [item], [])
    assert (node.connected_here, node.tunnels, node.tunnel) == (False, tunnels, tunnel)


def _connector(host_id: str) -> SSHConnector:
    creds = HostCredentials(cluster="unit", host_id=host_id, role="proxy", hostname=host_id,
                            private_key_pem=b"", tls_cert_pem=b"", tls_ca_pem=b"")
    return SSHConnector(creds, cast(TunnelServer, None),
                        ClusterView(cast(AuthClient, None)), MemoryEmitter())


@pytest.mark.parametrize(("tunnels", "message"), [
    (("p2",), "node 'far' is connected to proxy p2, not this one"),
    (("p2", "p3"), "node 'far' is connected to proxies p2, p3, not this one"),
    (("p1", "p2"), "node 'far' is offline"),  # presence lags: here, but already gone
    ((), "node 'far' is offline"),
])
async def test_a_proxy_without_the_tunnel_says_which_proxies_have_it(
        tunnels: tuple[str, ...], message: str) -> None:
    node = Node("far", host_id="h2", tunnels=tunnels)
    identity = Identity(username="alice", cluster="unit")
    with pytest.raises(ConnectionProblem) as caught:
        await _connector("p1")._connect_agent(node, identity, Relay(), "1.2.3.4:5", "s", "far")
    assert str(caught.value) == message
