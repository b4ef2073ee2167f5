"""Finding (high): node tokens were reusable until expiry although the README and
``lmctl tokens add`` said single use.

Against a real ``limen start --random-ports``: ``lmctl tokens add --type node`` makes a single
use token (``lmctl tokens ls`` says so in its USE column); its first join succeeds and a second
is refused (403) and audited; two joins racing with one token give exactly one success (the
token is used in the same backend transaction that registers the host); ``--reusable`` makes
the other kind, listed as reusable, which joins twice.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from integration.cluster import ClusterFactory, LimenCluster

from .join_attacks import join

NAME = "tokens"


@pytest.fixture(scope="module")
def cluster(module_clusters: ClusterFactory) -> LimenCluster:
    return module_clusters(NAME)


def _use_column(cluster: LimenCluster, token_id: str) -> str:
    listing = cluster.lmctl("tokens", "ls").stdout
    [line] = [line for line in listing.splitlines() if token_id in line]
    return "single use" if "single use" in line else "reusable" if "reusable" in line else line


def _joins(cluster: LimenCluster, token_id: str) -> list[bool]:
    return [e["success"] for e in cluster.audit("join") if e.get("token_id") == token_id]


def test_a_node_token_joins_once(cluster: LimenCluster) -> None:
    issued = cluster.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
    assert issued["single_use"] is True
    assert _use_column(cluster, issued["id"]) == "single use"
    status, answer = join(cluster, issued["token"], hostname="first")
    assert status == 200, answer
    status, answer = join(cluster, issued["token"], hostname="second")
    assert status == 403, answer
    assert "join refused" in answer["error"]["message"]
    refused = [e for e in cluster.audit("join") if e.get("hostname") == "second"]
    assert [e["success"] for e in refused] == [False]
    assert "join token" in refused[0]["reason"]
    assert _joins(cluster, issued["id"]) == [True]
    assert issued["id"] not in cluster.lmctl("tokens", "ls").stdout


def test_two_racing_joins_with_one_token_give_one_success(cluster: LimenCluster) -> None:
    issued = cluster.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: join(cluster, issued["token"], hostname=f"race{i}"),
                                range(4)))
    assert sorted(status for status, _ in results) == [200, 403, 403, 403], results
    outcomes = [e["success"] for e in cluster.audit("join")
                if str(e.get("hostname", "")).startswith("race")]
    assert sorted(outcomes) == [False, False, False, True]


def test_a_reusable_token_says_so_and_joins_twice(cluster: LimenCluster) -> None:
    issued = cluster.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m",
                                "--reusable")
    assert issued["single_use"] is False
    assert _use_column(cluster, issued["id"]) == "reusable"
    for hostname in ("many1", "many2"):
        status, answer = join(cluster, issued["token"], hostname=hostname)
        assert status == 200, answer
    assert _joins(cluster, issued["id"]) == [True, True]
    text = cluster.lmctl("tokens", "add", "--type", "node", "--reusable").stdout
    assert "(reusable)" in text
    refused = cluster.lmctl("tokens", "add", "--type", "trusted_cluster", "--reusable",
                            check=False)
    assert refused.returncode != 0
    assert "single use" in refused.stderr
