"""The reconciler of CA rotations declared on the Cluster document
(limen.auth.rotation_declared) against a real AuthServer on the memory backend: each request
goes through rotate_ca (what lmctl auth rotate reaches), audited with ``via: cluster
document``; a refused step is audited once and written to the document's status; a request
is never applied twice; a document for another cluster is ignored. And the attack: a user
whose roles may write Cluster documents applies one declaring a rotation through the auth API
(``lmctl apply``): refused with 403 and audited, as ``lmctl auth rotate`` would be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from auth_api_identities import alice_credentials, running_auth, statuses

from limen.api.loader import load_text
from limen.api.resources import Kind, Origin
from limen.api.validation import validate
from limen.auth.core import AuthServer
from limen.auth.rotation import Phase
from limen.auth.rotation_declared import DeclaredRotation, declared_status
from limen.auth.rotation_service import rotate_ca
from limen.auth.store_keys import GITOPS_STATUS_KEY
from limen.ca.authority import CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.events.emitter import MemoryEmitter

HOST = CertAuthorityType.HOST


async def _declare(auth: AuthServer, rotation: list[dict[str, Any]], *, name: str = "unit",
                   origin: Origin = Origin.API) -> None:
    text = yaml.safe_dump({
        "apiVersion": "limen.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": name},
        "spec": {"public_address": "proxy.example.com:3080", "rotation": rotation}})
    await auth.apply(validate(load_text(text, "cluster.yaml")), origin, actor="test",
                     kinds=[Kind.CLUSTER])


def _rotations(auth: AuthServer) -> list[dict[str, Any]]:
    emitter = auth.emitter
    assert isinstance(emitter, MemoryEmitter)
    return [{"success": e.success, "user": e.user, **e.fields}
            for e in emitter.events if e.type.value == "ca.rotation"]


def _host(rid: str, phase: str) -> dict[str, Any]:
    return {"id": rid, "type": "host", "mode": "manual", "phase": phase}


async def test_a_manual_request_moves_one_step_per_document_change(auth: AuthServer) -> None:
    reconciler = DeclaredRotation(auth)
    for phase in ("init", "update_clients", "update_servers", "standby"):
        await _declare(auth, [_host("h1", phase)])
        await reconciler.reconcile()
        assert auth.authorities.rotation(HOST).phase is Phase(phase)
        if phase == "init":
            assert len(auth.authorities.get(HOST).key_pairs) == 2
        await reconciler.reconcile()  # the same document again: nothing more
    assert len(auth.authorities.get(HOST).key_pairs) == 1
    state = auth.authorities.rotation(HOST)
    assert (state.request, state.last_request) == ("h1", "h1")
    moves = [(e["from"], e["to"], e["via"], e["request_id"], e["user"])
             for e in _rotations(auth)]
    assert moves == [
        ("standby", "init", "cluster document", "h1", "cluster-document:api"),
        ("init", "update_clients", "cluster document", "h1", "cluster-document:api"),
        ("update_clients", "update_servers", "cluster document", "h1", "cluster-document:api"),
        ("update_servers", "standby", "cluster document", "h1", "cluster-document:api")]
    assert (await declared_status(auth))["host"]["state"] == "Done"
    # a restart: a new reconciler over the same stored document runs nothing again
    await DeclaredRotation(auth).reconcile()
    assert len(_rotations(auth)) == 4


async def test_a_jump_is_refused_audited_once_and_the_rest_applies(auth: AuthServer) -> None:
    reconciler = DeclaredRotation(auth)
    await _declare(auth, [_host("h1", "update_servers"),
                          {"id": "u1", "type": "user", "mode": "manual", "phase": "init"}])
    await reconciler.reconcile()
    await reconciler.reconcile()
    await DeclaredRotation(auth).reconcile()  # after a restart: the status shows it already
    assert auth.authorities.rotation(HOST).phase is Phase.STANDBY
    assert auth.authorities.rotation(CertAuthorityType.USER).phase is Phase.INIT
    refused = [e for e in _rotations(auth) if not e["success"]]
    assert len(refused) == 1
    assert refused[0]["ca_type"] == "host"
    assert refused[0]["via"] == "cluster document"
    assert refused[0]["request_id"] == "h1"
    assert "a new rotation starts at init, not update_servers" in refused[0]["reason"]
    status = await declared_status(auth)
    assert status["host"]["state"] == "Refused"
    assert status["host"]["message"] == refused[0]["reason"]
    assert status["user"]["state"] == "Reached"  # started at the first pass
    assert auth.status()["ca_rotation"]["user"]["request"] == "u1"


async def test_a_new_request_waits_for_a_rotation_by_command(auth: AuthServer) -> None:
    await rotate_ca(auth, "host", actor="admin")
    reconciler = DeclaredRotation(auth)
    await _declare(auth, [_host("h2", "init")])
    await reconciler.reconcile()
    assert (await declared_status(auth))["host"]["state"] == "Waiting"
    for phase in ("update_clients", "update_servers", "standby"):
        await rotate_ca(auth, "host", actor="admin", phase=phase)
    await reconciler.reconcile()
    state = auth.authorities.rotation(HOST)
    assert (state.phase, state.request) == (Phase.INIT, "h2")


async def test_a_document_for_another_cluster_is_ignored(auth: AuthServer) -> None:
    await _declare(auth, [_host("h1", "init")], name="elsewhere")
    await DeclaredRotation(auth).reconcile()
    assert auth.authorities.rotation(HOST).phase is Phase.STANDBY
    assert _rotations(auth) == []
    assert await declared_status(auth) == {}


async def test_the_git_revision_is_audited_when_the_sync_stored_it(auth: AuthServer) -> None:
    await _declare(auth, [_host("h1", "init")], origin=Origin.GIT)
    await auth.backend.put(GITOPS_STATUS_KEY, json.dumps({"live": {"sha": "ab" * 20}}).encode())
    await DeclaredRotation(auth).reconcile()
    [event] = _rotations(auth)
    assert (event["git_revision"], event["user"]) == ("ab" * 20, "gitops")


CLUSTER_EDITOR = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: cluster-editor}
spec:
  allow:
    rules:
    - resources: [cluster]
      verbs: [list, read, create, update]
"""


async def test_a_user_may_not_declare_a_rotation_through_the_api(tmp_path: Path) -> None:
    async with running_auth(tmp_path) as service:
        auth = service.server
        await auth.apply(validate(load_text(CLUSTER_EDITOR, "role.yaml")), Origin.API,
                         actor="test")
        alice = alice_credentials(service, roles=("cluster-editor",))
        declared = yaml.safe_load(yaml.safe_dump({
            "apiVersion": "limen.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "unit"},
            "spec": {"public_address": "proxy.example.com:3080",
                     "rotation": [_host("evil", "init")]}}))
        apply = [("POST", "/v1/resources/apply")]
        assert await statuses(service, alice, apply, {"documents": [declared]}) == \
            {"/v1/resources/apply": 403}
        assert await auth.store.find(Kind.CLUSTER, "unit") is None
        await DeclaredRotation(auth).reconcile()
        assert auth.authorities.rotation(HOST).phase is Phase.STANDBY
        [refused] = _rotations(auth)
        assert (refused["success"], refused["user"], refused["via"]) == (
            False, "alice", "cluster document")
        assert "only an admin or the Git sync" in refused["reason"]
        # the same document without the rotation is the user's to write (their rules)
        plain = {**declared, "spec": {"public_address": "proxy.example.com:3080"}}
        assert await statuses(service, alice, apply, {"documents": [plain]}) == \
            {"/v1/resources/apply": 200}
        admin = HostCredentials.load(service.settings.data_dir / "admin")
        assert await statuses(service, admin, apply, {"documents": [declared]}) == \
            {"/v1/resources/apply": 200}
        await DeclaredRotation(auth).reconcile()
        assert auth.authorities.rotation(HOST).phase is Phase.INIT


async def test_two_documents_for_this_cluster_are_both_refused(auth: AuthServer) -> None:
    await _declare(auth, [_host("h1", "init")])
    text = yaml.safe_dump({
        "apiVersion": "limen.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "other"},
        "spec": {"public_address": "proxy.example.com:3080", "cluster_name": "unit",
                 "rotation": [_host("h9", "init")]}})
    await auth.apply(validate(load_text(text, "other.yaml")), Origin.API, actor="test",
                     kinds=[Kind.CLUSTER])
    await DeclaredRotation(auth).reconcile()
    assert auth.authorities.rotation(HOST).phase is Phase.STANDBY
    for name in ("unit", "other"):
        found = await auth.store.find(Kind.CLUSTER, name)
        assert found is not None
        assert "several Cluster documents describe cluster unit (other, unit)" in \
            found.status["rotationError"]
