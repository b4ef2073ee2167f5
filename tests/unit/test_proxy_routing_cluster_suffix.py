"""The proxy resolves ``<name>.<cluster>`` (lmsh config's host pattern, ssh -J) like ``<name>``."""

from __future__ import annotations

import pytest

from limen.errors import NotFound
from limen.proxy.routing import Node, resolve

WEB1 = Node("web1", {"env": "dev"}, host_id="h-web1", connected_here=True)


@pytest.mark.parametrize("typed", ["web1", "web1.demo", "h-web1", "h-web1.demo"])
def test_cluster_suffix_is_optional(typed: str) -> None:
    assert resolve(typed, 3022, [WEB1], "demo") is WEB1


def test_another_clusters_suffix_does_not_match() -> None:
    with pytest.raises(NotFound):
        resolve("web1.other", 3022, [WEB1], "demo")
