"""Data-connection nonces: single use, expiring, bound to the agent they were issued to."""

from __future__ import annotations

from limen.tunnel.nonces import NonceTable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_nonce_pairs_once_with_its_purpose_and_agent() -> None:
    table = NonceTable(clock=Clock())
    entry = table.issue("node-1", "dial")
    taken = table.take(entry.nonce)
    assert taken == entry
    assert (taken.host_id, taken.purpose) == ("node-1", "dial")
    assert table.take(entry.nonce) is None  # single use


def test_nonces_expire() -> None:
    clock = Clock()
    table = NonceTable(ttl=10.0, clock=clock)
    entry = table.issue("node-1", "dial")
    clock.now += 9.99
    live = table.issue("node-1", "auth")
    clock.now += 0.01
    assert table.take(entry.nonce) is None  # expired exactly at issue + ttl
    assert table.take(live.nonce) == live


def test_unknown_nonces_and_sweeping() -> None:
    clock = Clock()
    table = NonceTable(ttl=1.0, clock=clock)
    assert table.take("0" * 32) is None
    for _ in range(5):
        table.issue("node-1", "dial")
    assert len(table) == 5
    clock.now += 2
    table.sweep()
    assert len(table) == 0


def test_forgetting_an_agent_revokes_only_its_nonces() -> None:
    table = NonceTable(clock=Clock())
    mine = table.issue("node-1", "dial")
    other = table.issue("node-2", "dial")
    table.discard_host("node-1")
    assert table.take(mine.nonce) is None
    assert table.take(other.nonce) == other


def test_nonces_are_distinct() -> None:
    table = NonceTable(clock=Clock())
    assert len({table.issue("n", "dial").nonce for _ in range(1000)}) == 1000
