"""Preset roles: their content, their creation at auth's start (origin preset, audited,
again when missing), and their takeover by Git, lmctl apply and Kubernetes; a prune never
deletes a preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from limen.api.loader import SourceDocument, load_path
from limen.api.resources import ORIGIN_LABEL, Kind, Origin, Resource
from limen.api.validation import validate
from limen.auth.core import AuthServer
from limen.auth.preset_roles import ensure_presets
from limen.backend.memory import MemoryBackend
from limen.config import ClusterSettings
from limen.events.emitter import MemoryEmitter
from limen.operator.documents import declare, ownership, taking_over
from limen.rbac.presets import PRESET_NAMES, SESSION_PARTICIPANT, preset_roles
from limen.rbac.roleset import RoleSet
from limen.rbac.rule_context import rule_context
from limen.services.plan import Action

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"


@pytest.fixture
async def auth() -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), MemoryEmitter())
    await server.start()
    return server


def _events(auth: AuthServer, event_type: str) -> list[dict[str, Any]]:
    assert isinstance(auth.emitter, MemoryEmitter)
    return [e.to_dict() for e in auth.emitter.events if e.type == event_type]


def _doc(name: str, spec: dict[str, Any]) -> Resource:
    (role,) = validate([SourceDocument("<test>", 0, 1,
                                       Resource(Kind.ROLE, name, spec=spec).to_document())])
    return role


# -- content ---------------------------------------------------------------------------------

def test_presets_are_valid_roles() -> None:
    documents = [SourceDocument("<preset>", i, 1, r.to_document())
                 for i, r in enumerate(preset_roles())]
    assert [r.name for r in validate(documents)] == ["access", "editor", "auditor"]
    assert PRESET_NAMES == ("access", "editor", "auditor")


def test_access_grants_the_users_own_logins_everywhere_and_their_own_sessions() -> None:
    access = next(r for r in preset_roles() if r.name == "access")
    roles = RoleSet.from_roles([access], {"logins": ["me", "ubuntu"], "db_users": ["app"],
                                          "db_names": ["shop"],
                                          "kubernetes_groups": ["viewers"]})
    assert roles.warnings == ()
    assert roles.allowed_logins() == ("me", "ubuntu")
    assert roles.check_ssh({"env": "prod"}, "ubuntu").allowed
    assert not roles.check_ssh({"env": "prod"}, "root").allowed
    assert roles.check_db({"env": "dev"}, "app", "shop").allowed
    assert not roles.check_db({"env": "dev"}, "postgres").allowed
    assert roles.kube_groups() == ("viewers",)
    assert roles.check_app({"any": "thing"}).allowed
    assert access.spec["allow"]["rules"] == [
        {"resources": ["session"], "verbs": ["list", "read"], "where": SESSION_PARTICIPANT}]
    mine = rule_context("me", ["access"], session={"user": "me", "session_id": "s1"})
    theirs = rule_context("me", ["access"], session={"user": "bob", "session_id": "s2"})
    assert roles.check_rule("session", "read", mine).allowed
    assert not roles.check_rule("session", "read", theirs).allowed
    assert not roles.check_rule("role", "list").allowed
    assert not roles.check_rule("event", "list").allowed


def test_editor_administers_limen_objects_without_node_access() -> None:
    editor = next(r for r in preset_roles() if r.name == "editor")
    roles = RoleSet.from_roles([editor], {"logins": ["me"]})
    for kind in ("user", "role", "trusted_cluster", "resource", "token", "cluster"):
        for verb in ("create", "read", "update", "delete", "list"):
            assert roles.check_rule(kind, verb).allowed, (kind, verb)
    assert roles.allowed_logins() == ()
    assert not roles.check_ssh({}, "me").allowed
    assert not roles.check_rule("session", "read").allowed


def test_auditor_reads_sessions_and_events_only() -> None:
    auditor = next(r for r in preset_roles() if r.name == "auditor")
    roles = RoleSet.from_roles([auditor], {"logins": ["me"]})
    for kind in ("session", "event"):
        for verb in ("list", "read"):
            assert roles.check_rule(kind, verb).allowed
        assert not roles.check_rule(kind, "delete").allowed
    assert roles.check_rule("session", "read", rule_context(
        "me", ["auditor"], session={"user": "someone-else"})).allowed
    assert not roles.check_rule("role", "update").allowed
    assert roles.allowed_logins() == ()


def test_preset_copies_are_not_shared() -> None:
    first = preset_roles()[0]
    first.spec["allow"]["logins"].append("root")
    assert preset_roles()[0].spec["allow"]["logins"] == ["{{internal.logins}}"]


# -- creation at auth's start ------------------------------------------------------------------

async def test_missing_presets_are_created_with_origin_preset_and_audited(
        auth: AuthServer) -> None:
    assert await ensure_presets(auth) == ["access", "editor", "auditor"]
    for name in PRESET_NAMES:
        stored = await auth.store.get(Kind.ROLE, name)
        assert stored.origin is Origin.PRESET
        assert stored.labels[ORIGIN_LABEL] == "preset"
    created = _events(auth, "role.created")
    assert [(e["name"], e["user"], e["origin"]) for e in created] == [
        (name, "preset", "preset") for name in PRESET_NAMES]
    assert await ensure_presets(auth) == []  # every start: nothing more when all exist
    assert len(_events(auth, "role.created")) == 3


async def test_a_deleted_preset_comes_back_and_a_changed_one_is_left_alone(
        auth: AuthServer) -> None:
    await ensure_presets(auth)
    await auth.remove(Kind.ROLE, "editor", Origin.API, actor="admin")
    assert await auth.store.find(Kind.ROLE, "editor") is None
    mine = _doc("access", {"allow": {"logins": ["ops"]}})
    await auth.apply([mine], Origin.API, actor="admin")
    assert await ensure_presets(auth) == ["editor"]
    access = await auth.store.get(Kind.ROLE, "access")
    assert (access.origin, access.spec["allow"]["logins"]) == (Origin.API, ["ops"])


# -- takeover and pruning ----------------------------------------------------------------------

async def test_git_takes_over_a_preset_and_its_prune_spares_the_others(
        auth: AuthServer) -> None:
    await ensure_presets(auth)
    plan = await auth.apply(validate(load_path(EXAMPLES)), Origin.GIT, actor="gitops",
                            prune=True)
    assert plan.conflicts == ()
    assert {e.name: e.action for e in plan.entries if e.kind is Kind.ROLE} == {
        "auditor": Action.UPDATE, "dev": Action.CREATE, "ops": Action.CREATE}
    auditor = await auth.store.get(Kind.ROLE, "auditor")
    assert auditor.origin is Origin.GIT
    assert auditor.spec["options"]["max_session_ttl"] == "12h"  # the repository's
    assert auditor.spec["deny"]["logins"] == ["*"]
    updated = _events(auth, "role.updated")
    assert [(e["name"], e["origin"]) for e in updated] == [("auditor", "git")]
    # the presets Git does not declare are not its own: never pruned
    for name in ("access", "editor"):
        assert (await auth.store.get(Kind.ROLE, name)).origin is Origin.PRESET
    assert _events(auth, "role.deleted") == []
    # a later sync without the role prunes the taken-over one (Git owns it now) ...
    later = [r for r in validate(load_path(EXAMPLES)) if r.name != "auditor"]
    again = await auth.apply(later, Origin.GIT, actor="gitops", prune=True)
    assert {e.name: e.action for e in again.changes} == {"auditor": Action.DELETE}
    # ... and the next start of auth creates the preset again
    assert await ensure_presets(auth) == ["auditor"]


async def test_lmctl_apply_takes_over_a_preset(auth: AuthServer) -> None:
    await ensure_presets(auth)
    plan = await auth.apply([_doc("editor", {"allow": {"rules": [
        {"resources": ["user"], "verbs": ["list"]}]}})], Origin.API, actor="admin")
    assert [(e.name, e.action) for e in plan.entries] == [("editor", Action.UPDATE)]
    assert (await auth.store.get(Kind.ROLE, "editor")).origin is Origin.API
    # taken over, the role is the API's: Git now needs the adopt annotation
    conflict = await auth.admin.plan([_doc("editor", {})], Origin.GIT)
    assert conflict.conflicts


async def test_kubernetes_takes_over_a_preset(auth: AuthServer) -> None:
    await ensure_presets(auth)
    current = (await auth.store.get(Kind.ROLE, "auditor")).to_document()
    declared = declare(Kind.ROLE, {"metadata": {"namespace": "limen", "name": "auditor"},
                                   "spec": {"name": "auditor", "allow": {"rules": [
                                       {"resources": ["event"], "verbs": ["list"]}]}}})
    check = ownership(current, declared)
    assert (check.status, check.reason) == (True, "Owned")
    document = taking_over(current, declared)
    assert "limen.dev/adopt" not in document["metadata"]["annotations"]
    plan = await auth.apply(validate([SourceDocument("cr", 0, 1, document)]),
                            Origin.KUBERNETES, actor="operator")
    assert [(e.name, e.action) for e in plan.entries] == [("auditor", Action.UPDATE)]
    assert (await auth.store.get(Kind.ROLE, "auditor")).origin is Origin.KUBERNETES
