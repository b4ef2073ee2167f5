"""Limen names of custom resources: spec.name or <namespace>.<name>, never colliding, and the
oldest object winning a name several claim."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from limen.operator.naming import Claim, limen_name, name_problem, object_ref, winner

DNS_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
K8S_NAME = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?", fullmatch=True)


def test_spec_name_wins_over_the_derived_name() -> None:
    assert limen_name("team-a", "alice", {"name": "alice@example.com"}) == "alice@example.com"
    assert limen_name("team-a", "dev", {"allow": {}}) == "team-a.dev"
    assert limen_name("team-a", "dev", None) == "team-a.dev"
    assert limen_name("team-a", "dev", {"name": ""}) == "team-a.dev"


@given(st.lists(st.tuples(DNS_LABEL, K8S_NAME), unique=True, min_size=2, max_size=30))
def test_derived_names_never_collide(objects: list[tuple[str, str]]) -> None:
    names = [limen_name(ns, name, {}) for ns, name in objects]
    assert len(set(names)) == len(objects)
    for (ns, name), derived in zip(objects, names, strict=True):
        assert derived.split(".", 1) == [ns, name]  # the first dot separates the parts


def test_known_tricky_pairs_differ() -> None:
    pairs = [("a", "b.c"), ("a-b", "c"), ("a", "b-c"), ("ab", "c")]
    derived = {limen_name(ns, n, {}) for ns, n in pairs}
    assert len(derived) == len(pairs)
    for first, second in itertools.combinations(pairs, 2):
        assert limen_name(*first, {}) != limen_name(*second, {})


def test_name_problems() -> None:
    assert name_problem("team-a.dev") is None
    assert name_problem("alice@example.com") is None
    problem = name_problem("a" * 120 + "." + "b" * 140)
    assert problem is not None
    assert "at most 253" in problem
    problem = name_problem("Dev")
    assert problem is not None
    assert "not a valid Limen name" in problem


def test_object_ref() -> None:
    assert object_ref("roles", "team-a", "dev") == "roles/team-a/dev"


def test_oldest_claim_wins_ties_by_namespace_and_name() -> None:
    old = Claim("2024-01-01T00:00:00Z", "b", "x", "uid-1")
    new = Claim("2024-06-01T00:00:00Z", "a", "y", "uid-2")
    same_time = Claim("2024-01-01T00:00:00Z", "a", "z", "uid-3")
    assert winner([new, old]) == old
    assert winner([old, same_time, new]) == same_time
    assert winner([]) is None


def test_claim_of_body() -> None:
    body = {"metadata": {"name": "dev", "namespace": "team-a", "uid": "u1",
                         "creationTimestamp": "2024-01-01T00:00:00Z"}}
    claim = Claim.of(body)
    assert claim == Claim("2024-01-01T00:00:00Z", "team-a", "dev", "u1")
    assert claim.describe() == "team-a/dev"
