"""The hot paths a 10,000-object Git sync goes through outside limen.gitops (see
bench/bench_gitops.py): the loader's node limit for documents without aliases, the
per-object audit events that ``AuthServer.apply`` emits together, and the compiled schema
check that spares valid documents the jsonschema walk."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator, FormatChecker

from limen.api import loader
from limen.api.fastschema import compile_schema
from limen.api.loader import load_path, load_text
from limen.api.resources import Kind, Origin, Resource
from limen.api.schemas import json_schema
from limen.api.validation import parse_duration
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.config import ClusterSettings
from limen.errors import BadParameter, ValidationFailed
from limen.events.emitter import MemoryEmitter
from limen.events.filelog import FileLog


def test_the_node_limit_holds_for_documents_without_anchors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_DOCUMENT_NODES", 50)
    items = ", ".join(["x"] * 60)
    with pytest.raises(ValidationFailed, match="expands to more than 50 YAML nodes"):
        load_text(f"kind: Role\nspec: {{logins: [{items}]}}\n", "big.yaml")
    small = ", ".join(["x"] * 10)
    assert len(load_text(f"kind: Role\nspec: {{logins: [{small}]}}\n", "ok.yaml")) == 1
    bomb = "a: &a [x, x, x, x, x, x, x, x]\nb: [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    with pytest.raises(ValidationFailed, match="expands to more than 50 YAML nodes"):
        load_text(bomb, "bomb.yaml")


async def test_apply_emits_every_event_in_plan_order() -> None:
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), emitter)
    await auth.start()
    roles = [Resource(Kind.ROLE, f"r{i:03d}", spec={"allow": {"logins": ["a"]}})
             for i in reversed(range(200))]

    plan = await auth.apply(roles, Origin.GIT, actor="gitops")

    names = [e.fields["name"] for e in emitter.events if e.type == "role.created"]
    assert names == [e.name for e in plan.changes]
    assert names == sorted(names)
    assert len(names) == 200


async def test_apply_writes_every_event_to_the_audit_log_in_plan_order(tmp_path: Path) -> None:
    log = FileLog(tmp_path / "events", fsync=False)
    auth = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), log)
    try:
        await auth.start()
        roles = [Resource(Kind.ROLE, f"r{i:03d}", spec={"allow": {"logins": ["a"]}})
                 for i in reversed(range(300))]
        plan = await auth.apply(roles, Origin.GIT, actor="gitops")
    finally:
        log.close()
    lines = [json.loads(line) for path in sorted((tmp_path / "events").iterdir())
             for line in path.read_text(encoding="utf-8").splitlines()]
    created = [(e["name"], e["user"], e["origin"]) for e in lines if e["event"] == "role.created"]
    assert created == [(e.name, "gitops", "git") for e in plan.changes]


# -- the compiled schema check agrees with jsonschema, both ways ----------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"
CLUSTER = {
    "apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
    "spec": {"public_address": "limen.example.com:443", "cluster_name": "main",
             "auth": {"replicas": 2, "image": "limen:1"},
             "proxy": {"replicas": 1, "service_type": "LoadBalancer", "resources": {"x": 1}},
             "backend": {"type": "postgres", "dsn_secret_ref": {"secret": "pg", "key": "dsn"}}},
}
FIELD_NAMES = ["spec", "kind", "allow", "deny", "logins", "options", "max_session_ttl",
               "node_labels", "roles", "traits", "token_secret_ref", "file", "env", "secret",
               "key", "role_map", "remote", "local", "enabled", "proxy_address", "replicas",
               "service_type", "address", "protocol", "rules", "verbs", "resources", "x"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False),
    st.sampled_from(["", "8h", "8 hours", "ssh", "db", "postgres", "ClusterIP", "sqlite",
                     "root.example.com:3080", "a b:1", "^(x)$", "{{internal.logins}}", "*",
                     "sha256:" + "a" * 64, "dev", "ops", "read", "list"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(FIELD_NAMES), inner, max_size=3)), max_leaves=8)


def _documents() -> list[dict[str, Any]]:
    docs = [d.data for d in load_path(EXAMPLES)]
    return [{k: v for k, v in d.items() if k not in ("metadata", "status")} for d in docs] + \
        [CLUSTER]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


@pytest.mark.parametrize("kind", sorted({Kind(d["kind"]) for d in _documents()}))
def test_every_kind_in_git_has_a_compiled_check(kind: Kind) -> None:
    """A keyword the compiler does not know would quietly send a kind back to jsonschema
    (10x slower on a large repository): every schema a Git document can have compiles."""
    assert compile_schema(json_schema(kind), {"duration": parse_duration}) is not None


@settings(max_examples=int(os.environ.get("FASTSCHEMA_EXAMPLES", "400")), deadline=None)
@given(data=st.data())
def test_the_compiled_check_accepts_exactly_what_jsonschema_accepts(data: st.DataObject) -> None:
    document = copy.deepcopy(data.draw(st.sampled_from(_documents())))
    kind = Kind(document["kind"])
    for _ in range(data.draw(st.integers(0, 3))):
        path = data.draw(st.sampled_from(_paths(document)))
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "add", "delete"]))
        if not path:
            continue
        if action == "replace" or not isinstance(parent, dict):
            parent[path[-1]] = data.draw(VALUES)
        elif action == "add":
            parent[data.draw(st.sampled_from(FIELD_NAMES))] = data.draw(VALUES)
        else:
            del parent[path[-1]]
    formats = {"duration": parse_duration}
    checker = FormatChecker(formats=())
    checker.checks("duration", raises=BadParameter)(
        lambda v: not isinstance(v, str) or parse_duration(v) is not None)
    reference = Draft4Validator(json_schema(kind), format_checker=checker)
    compiled = compile_schema(json_schema(kind), formats)
    assert compiled is not None
    valid = next(reference.iter_errors(document), None) is None
    assert compiled(document) == valid
    event(f"valid: {valid}")
