"""Auth's trust answer pushed to a node apart over its tunnel (issue #17), with real processes:
auth, a proxy and a node agent as three ``limen start`` processes (the layout of
test_ca_rotation), the node with ``--diag-addr`` so that its trust answers are counted
(``limen_trust_answers_total{source, outcome}``).

A CA rotation phase at auth reaches the node through the proxy's push within a few seconds
(the proxy asks auth every second), the node asks auth nothing meanwhile, and the user's
certificate from the new key is accepted by the node (OpenSSH through ``lmsh ssh``).
"""

from __future__ import annotations

import getpass
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .apart_cluster import apart_cluster, password_login
from .cluster import LimenCluster, LimenUser, wait_for
from .diag_scrape import scrape, value

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
PUSHED = re.compile(r"trusted roots: revision (\w+) \(\d+ root\(s\)\) pushed by proxy")


@dataclass
class Layout:
    auth: LimenCluster
    proxy: LimenCluster
    node: LimenCluster
    user: LimenUser

    def answers(self, source: str, *outcomes: str) -> float:
        samples = scrape(self.node.listeners["diag"])
        return sum(value(samples, "limen_trust_answers_total", source=source, outcome=o)
                   for o in outcomes)

    def pushed_revisions(self) -> list[str]:
        return PUSHED.findall(self.node.output())


def _ssh(user: LimenUser, marker: str) -> bool:
    result = user.lmsh("ssh", f"{LOGIN}@{HOST}", f"echo {marker}", check=False)
    return result.returncode == 0 and result.stdout.strip() == marker


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    with apart_cluster(tmp_path_factory.mktemp("push"), "push", "pia",
                       node_flags=("--diag-addr", "127.0.0.1:0")) as apart:
        yield Layout(*apart)


def test_a_rotation_phase_reaches_the_node_by_push_without_a_poll(layout: Layout) -> None:
    wait_for(lambda: layout.answers("push", "accepted") > 0, 15.0,
             "the node to accept a pushed trust answer")
    polls = layout.answers("poll", "answered", "failed")
    seen = len(layout.pushed_revisions())
    layout.auth.lmctl("auth", "rotate", "--type", "user", "--manual")  # init: a new key
    start = time.monotonic()
    wait_for(lambda: len(layout.pushed_revisions()) > seen, 5.0,
             "the rotation's answer pushed to the node")
    took = time.monotonic() - start
    assert took < 3.0, f"{took:.1f} s\n{layout.node.output()[-2000:]}"
    layout.auth.lmctl("auth", "rotate", "--type", "user", "--phase", "update_clients")
    wait_for(lambda: len(layout.pushed_revisions()) > seen + 1, 5.0,
             "the next phase pushed to the node")
    password_login(layout.user)  # a certificate of the new key: the node learned it from the push
    # (the proxy apart polls auth for its own trust every 3 s: it may refuse it until then)
    wait_for(lambda: _ssh(layout.user, "new-key"), 10.0, "ssh with the new key")
    assert layout.answers("poll", "answered", "failed") == polls
    assert layout.answers("push", "refused") == 0
