"""The hot paths a 10,000-object Git sync goes through outside limen.gitops (see
bench/bench_gitops.py): the loader's node limit for documents without aliases, and the
per-object audit events that ``AuthServer.apply`` now emits together."""

from __future__ import annotations

import pytest

from limen.api import loader
from limen.api.loader import load_text
from limen.api.resources import Kind, Origin, Resource
from limen.auth.server import AuthServer
from limen.backend.memory import MemoryBackend
from limen.config import ClusterSettings
from limen.errors import ValidationFailed
from limen.events.emitter import MemoryEmitter


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
