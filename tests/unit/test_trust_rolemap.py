"""role_map semantics (limen.trust.rolemap): exact, glob, regex with captures, drops."""

from __future__ import annotations

from typing import Any

import pytest

from limen.errors import BadParameter
from limen.trust.rolemap import compile_role_map, map_roles

DESIGN_MAP = [{"remote": "ops", "local": ["visitor"]},
              {"remote": "^admin-(.*)$", "local": ["ops-$1"]}]

CASES: list[tuple[str, list[str], list[dict[str, Any]], list[str]]] = [
    ("exact match", ["ops"], DESIGN_MAP, ["visitor"]),
    ("exact is not a prefix", ["ops2"], DESIGN_MAP, []),
    ("regex capture expanded", ["admin-db"], DESIGN_MAP, ["ops-db"]),
    ("regex is a full match", ["xadmin-db"], DESIGN_MAP, []),
    ("both entries", ["ops", "admin-web"], DESIGN_MAP, ["ops-web", "visitor"]),
    ("unmapped roles dropped", ["dev", "auditor"], DESIGN_MAP, []),
    ("no remote roles", [], DESIGN_MAP, []),
    ("empty role map", ["ops"], [], []),
    ("one remote to several local", ["dev"],
     [{"remote": "dev", "local": ["access", "editor"]}], ["access", "editor"]),
    ("sorted and unique", ["dev", "qa"],
     [{"remote": "dev", "local": ["b", "a"]}, {"remote": "qa", "local": ["a"]}], ["a", "b"]),
    ("wildcard maps everything", ["x", "y"], [{"remote": "*", "local": ["guest"]}], ["guest"]),
    ("glob", ["team-red", "other"], [{"remote": "team-*", "local": ["member"]}], ["member"]),
    ("glob capture", ["team-red"], [{"remote": "team-*", "local": ["t-$1"]}], ["t-red"]),
    ("glob dot is literal", ["axb"], [{"remote": "a.b", "local": ["z"]}], []),
    ("two captures, braces", ["env-prod-db"],
     [{"remote": "^env-([a-z]+)-([a-z]+)$", "local": ["${2}-$1"]}], ["db-prod"]),
    ("missing group expands to nothing", ["admin-x"],
     [{"remote": "^admin-(.*)$", "local": ["ops-$2"]}], ["ops-"]),
    ("empty expansion dropped", ["admin-"],
     [{"remote": "^admin-(.*)$", "local": ["$1"]}], []),
    ("regex alternation", ["dba", "sre"],
     [{"remote": "^(dba|sre)$", "local": ["ops-$1"]}], ["ops-dba", "ops-sre"]),
    ("a remote matched by several entries", ["admin-db"],
     [{"remote": "^admin-.*$", "local": ["admin"]}, {"remote": "admin-*", "local": ["x-$1"]}],
     ["admin", "x-db"]),
]


@pytest.mark.parametrize(("remote", "role_map", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_map_roles(remote: list[str], role_map: list[dict[str, Any]],
                   expected: list[str]) -> None:
    assert map_roles(remote, role_map) == expected


def test_compiled_map_is_accepted() -> None:
    assert map_roles(["admin-db"], compile_role_map(DESIGN_MAP)) == ["ops-db"]


@pytest.mark.parametrize(("entry", "message"), [
    ({"remote": "^admin-($", "local": ["x"]}, "invalid regular expression"),
    ({"remote": "^admin", "local": ["x"]}, "not anchored"),
    ({"remote": "", "local": ["x"]}, "remote must be"),
    ({"remote": "dev", "local": []}, "local must be"),
])
def test_invalid_entries_are_rejected(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        compile_role_map([entry])
