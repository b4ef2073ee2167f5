"""Finding (high): node identity hijack. A second join with a fresh node token and an existing
host id got a certificate for that id and was listed under it.

Against real processes: a node agent (``limen start --roles node``, joined through the proxy
with a token and the CA pin) is online under its host id. An attacker with a fresh node token
joins proposing that id: refused (403) and audited at auth (``join``, success false, reason
"already registered"); the fresh token is not spent by the refusal; the node is still listed
under its id with its own name; a forged proof (the attacker's own certificate relabelled)
is refused too. The host itself joins again under its id with its current credentials (what a
renewal does), and a join proposing no id gets a new one from auth.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integration.cluster import ClusterFactory, LimenCluster, wait_for
from limen.auth.host_proof import make_proof
from limen.auth.join_client import join_via_proxy
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole

from .join_attacks import join

NAME = "hijack"


@dataclass
class Site:
    cluster: LimenCluster
    node: LimenCluster
    host_id: str
    pin: str


def _token(cluster: LimenCluster) -> str:
    token: str = cluster.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")["token"]
    return token


def _nodes(cluster: LimenCluster) -> dict[str, str]:
    """host id -> hostname of the nodes online (``lmctl nodes ls``)."""
    return {n["host_id"]: n["hostname"] for n in cluster.lmctl_json("nodes", "ls")["items"]}


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Site]:
    cluster = module_clusters(NAME)
    issued = cluster.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
    node = LimenCluster(tmp_path_factory.mktemp("victim"), NAME, [
        "--roles", "node", "--nodename", "victim", "--proxy", cluster.web,
        "--token", issued["token"], "--ca-pin", issued["ca_pin"]])
    node.start()
    try:
        host_id = (node.data_dir / "host_uuid").read_text(encoding="utf-8").strip()
        wait_for(lambda: _nodes(cluster).get(host_id) == "victim", 30.0,
                 "the victim node to be listed under its host id")
        yield Site(cluster, node, host_id, issued["ca_pin"])
    finally:
        node.stop()


def test_a_fresh_token_does_not_buy_an_existing_host_id(site: Site) -> None:
    cluster = site.cluster
    token = _token(cluster)
    status, answer = join(cluster, token, host_id=site.host_id, hostname="victim",
                          addresses=["127.0.0.1"])
    assert status == 403, answer
    assert f"host id {site.host_id} is already registered" in answer["error"]["message"]
    refused = [e for e in cluster.audit("join")
               if e.get("host_id") == site.host_id and not e["success"]]
    assert len(refused) == 1
    assert "already registered" in refused[0]["reason"]
    assert refused[0]["token_id"]
    assert _nodes(cluster)[site.host_id] == "victim"
    # the refusal did not spend the token: it still joins, under a new id auth picks
    status, answer = join(cluster, token, hostname="attacker")
    assert status == 200, answer
    assert answer["host_id"] != site.host_id


def test_a_relabelled_certificate_is_no_proof(site: Site, tmp_path: Path) -> None:
    cluster = site.cluster
    own = asyncio.run(join_via_proxy(cluster.web, _token(cluster), site.pin, role="node",
                                     host_id="", hostname="attacker2"))
    forged = replace(own, host_id=site.host_id)
    proof = make_proof(forged, SystemRole.NODE, "ssh-ed25519 AAAA", datetime.now(UTC))
    status, answer = join(cluster, _token(cluster), host_id=site.host_id, hostname="victim",
                          proof=proof)
    assert status == 403, answer
    [event] = [e for e in cluster.audit("join")
               if e.get("host_id") == site.host_id and "proof" in e.get("reason", "")]
    assert event["success"] is False
    assert _nodes(cluster)[site.host_id] == "victim"


def test_the_host_itself_joins_again_with_its_current_certificate(site: Site) -> None:
    cluster = site.cluster
    current = HostCredentials.load(site.node.data_dir / "host")
    again = asyncio.run(join_via_proxy(cluster.web, _token(cluster), site.pin, role="node",
                                       host_id=site.host_id, hostname="victim",
                                       current=current))
    assert again.host_id == site.host_id
    assert again.private_key_pem != current.private_key_pem
    rejoined = [e for e in cluster.audit("join") if e.get("host_id") == site.host_id
                and e["success"] and e.get("rejoined")]
    assert len(rejoined) == 1
