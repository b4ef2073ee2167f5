"""Identity (limen.ca.identity): normalisation, validation and the compact JSON wire format,
including a hypothesis round-trip property."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from limen.ca.identity import Identity, RouteToDatabase, SystemRole
from limen.errors import BadParameter

FULL = Identity(
    username="alice@example.com", cluster="root", roles=("dev", "ops"),
    traits={"logins": ["alice"], "team": ("core", "infra")}, logins=("alice", "ubuntu"),
    kubernetes_groups=("viewers",), kubernetes_users=("alice",), db_users=("ro",),
    db_names=("app",), route_to_cluster="leaf",
    route_to_db=RouteToDatabase("pg", "ro", "app"), usage=("db",),
)


def test_json_round_trip_and_compactness() -> None:
    data = FULL.to_json()
    assert b" " not in data
    assert Identity.from_json(data) == FULL
    doc = json.loads(data)
    assert doc["v"] == 1
    assert doc["route_db"] == {"service": "pg", "user": "ro", "name": "app"}
    assert "not_before" not in doc
    assert "nbf" not in doc


def test_empty_fields_are_omitted() -> None:
    assert json.loads(Identity("bob", "root").to_json()) == {"v": 1, "user": "bob",
                                                             "cluster": "root"}


def test_validity_is_not_encoded_but_attached_on_decode() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    timed = FULL.with_validity(start, start + timedelta(hours=1))
    assert timed.to_json() == FULL.to_json()
    back = Identity.from_json(FULL.to_json(), not_before=start, not_after=start)
    assert back.not_before == start


def test_normalisation() -> None:
    ident = Identity("a", "c", roles=["r"], traits={"b": ["2"], "a": ["1"]},  # type: ignore[arg-type]
                     system_role="node")  # type: ignore[arg-type]
    assert ident.roles == ("r",)
    assert list(ident.traits) == ["a", "b"]
    assert ident.traits["b"] == ("2",)
    assert ident.system_role is SystemRole.NODE
    assert ident.is_system
    with pytest.raises(TypeError):
        ident.traits["c"] = ("x",)  # type: ignore[index]
    hash(ident)
    plus_two = timezone(timedelta(hours=2))
    local = Identity("a", "c", not_before=datetime(2030, 1, 1, 2, tzinfo=plus_two))
    assert local.not_before == datetime(2030, 1, 1, tzinfo=UTC)
    assert local.not_before.tzinfo is UTC  # type: ignore[union-attr]


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"username": ""}, "username"),
    ({"cluster": ""}, "cluster"),
    ({"roles": "dev"}, "roles"),
    ({"roles": ("dev", 1)}, "roles"),
    ({"usage": (b"db",)}, "usage"),
    ({"logins": ("-limen-no-login-",)}, "invalid login"),
    ({"logins": ("a,b",)}, "invalid login"),
    ({"logins": ("",)}, "invalid login"),
    ({"not_after": datetime(2030, 1, 1)}, "timezone-aware"),
    ({"system_role": "superuser"}, "unknown system role"),
    ({"traits": {"x": "notalist"}}, "trait"),
    ({"host_id": ""}, "host_id"),
])
def test_validation(kwargs: dict[str, object], reason: str) -> None:
    values: dict[str, object] = {"username": "a", "cluster": "c", **kwargs}
    with pytest.raises(BadParameter, match=reason):
        Identity(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("data", "reason"), [
    (b"not json", "not valid JSON"),
    (b"[]", "JSON object"),
    (b'{"v":2,"user":"a","cluster":"c"}', "unsupported identity version"),
    (b'{"v":1,"cluster":"c"}', "'user'"),
    (b'{"v":1,"user":"a","cluster":"c","roles":"dev"}', "'roles'"),
    (b'{"v":1,"user":"a","cluster":"c","roles":[1]}', "roles"),
    (b'{"v":1,"user":"a","cluster":"c","route_db":"pg"}', "route_db"),
    (b'{"v":1,"user":"a","cluster":"c","hostname":5}', "'hostname'"),
])
def test_decode_rejects_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(BadParameter, match=reason):
        Identity.from_json(data)


def test_unknown_keys_are_ignored() -> None:
    data = b'{"v":1,"user":"a","cluster":"c","future_field":{"x":1}}'
    assert Identity.from_json(data) == Identity("a", "c")


def test_host_identity() -> None:
    host = Identity.for_host("root", "h-1", "web1", SystemRole.PROXY)
    assert (host.username, host.host_id, host.hostname) == ("h-1", "h-1", "web1")
    assert Identity.from_json(host.to_json()) == host


_names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
_logins = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.", min_size=1, max_size=8)
_lists = st.lists(_names, max_size=3).map(tuple)


@given(
    username=_names, cluster=_names, roles=_lists, logins=st.lists(_logins, max_size=3),
    traits=st.dictionaries(_names, _lists, max_size=3), groups=_lists,
    route=st.none() | st.builds(RouteToDatabase, _names, _names, _names),
    role=st.none() | st.sampled_from(SystemRole), host=st.none() | _names,
)
def test_round_trip_property(
    username: str, cluster: str, roles: tuple[str, ...], logins: list[str],
    traits: dict[str, tuple[str, ...]], groups: tuple[str, ...],
    route: RouteToDatabase | None, role: SystemRole | None, host: str | None,
) -> None:
    ident = Identity(username=username, cluster=cluster, roles=roles, traits=traits,
                     logins=tuple(logins), kubernetes_groups=groups, route_to_db=route,
                     system_role=role, host_id=host, hostname=host)
    assert Identity.from_json(ident.to_json()) == ident
