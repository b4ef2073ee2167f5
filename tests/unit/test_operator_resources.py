"""The User/Role/TrustedCluster/Resource handlers at handler level: a real kopf Patch, the
real services layer (plans, ownership, adoption) behind LimenAuth's interface, a fake clock.

What the end-to-end test shows against an API server and a real auth, this shows branch by
branch: invalid objects, name conflicts, ownership and adoption, drift correction, auth down,
renames, and the finalizer's deadline and force-delete."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from limen.agents.db.catalog import DatabaseCatalog
from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Origin, parse_kind
from limen.api.validation import validate
from limen.backend.memory import MemoryBackend
from limen.errors import ConnectionProblem, NotFound
from limen.operator.conditions import find
from limen.operator.context import OperatorContext
from limen.operator.naming import Claim
from limen.operator.resource_handlers import Reconciler
from limen.operator.settings import OperatorConfig
from limen.services.admin import AdminOps
from limen.services.resource_store import ResourceStore

LOG = logging.getLogger("test")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class StoreAuth:
    """LimenAuth's interface over the real services layer (no HTTP); ``down`` makes every call
    fail as an unreachable auth does."""

    def __init__(self) -> None:
        self.store = ResourceStore(MemoryBackend(sweep_interval=None))
        self.admin = AdminOps(self.store)
        self.down = False
        self.applied: list[dict[str, Any]] = []

    def _check(self) -> None:
        if self.down:
            raise ConnectionProblem("cannot reach https://auth:3025: connection refused")

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        self._check()
        try:
            return (await self.store.get(parse_kind(plural), name)).to_document()
        except NotFound:
            return None

    async def apply(self, document: dict[str, Any]) -> str:
        self._check()
        self.applied.append(document)
        plan = await self.admin.apply(validate([SourceDocument("<api>", 0, 1, document)]),
                                      Origin.KUBERNETES)
        return plan.entries[0].action.value

    async def delete(self, plural: str, name: str) -> bool:
        self._check()
        try:
            await self.admin.remove(parse_kind(plural), name, Origin.KUBERNETES)
        except NotFound:
            return False
        return True

    async def put_api_object(self, kind: Kind, name: str, spec: dict[str, Any],
                             annotations: dict[str, str] | None = None) -> None:
        """An object someone created with lmctl (origin api)."""
        doc = {"apiVersion": "limen.dev/v1alpha1", "kind": kind.value,
               "metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}
        await self.admin.apply(validate([SourceDocument("x", 0, 1, doc)]), Origin.API)


class Harness:
    def __init__(self, kind: Kind = Kind.ROLE) -> None:
        self.auth = StoreAuth()
        self.now = T0
        self.events: list[tuple[str, str, str]] = []
        self.ctx = OperatorContext(
            config=OperatorConfig(retry_seconds=5, delete_deadline_seconds=60),
            auth=self.auth,  # type: ignore[arg-type]
            clock=lambda: self.now,
            post_event=lambda _b, t, r, m: self.events.append((t, r, m)))
        self.reconciler = Reconciler(kind, self.ctx)

    async def reconcile(self, body: dict[str, Any], *, resync: bool = False,
                        claims: dict[str, list[Claim]] | None = None) -> dict[str, Any]:
        """Run one reconcile; apply its status patch to ``body`` as the API server would."""
        patch = kopf.Patch()
        try:
            await self.reconciler.reconcile(body, patch, LOG, claims, resync=resync)
        finally:
            status = body.setdefault("status", {})
            status.update(dict(patch.get("status") or {}))
        return body

    def condition(self, body: dict[str, Any], type_: str) -> dict[str, Any]:
        found = find(body["status"]["conditions"], type_)
        assert found is not None
        return dict(found)


def role(name: str = "dev", namespace: str = "team-a", spec: dict[str, Any] | None = None,
         **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}",
                         "generation": 1, "creationTimestamp": "2024-05-01T00:00:00Z", **meta},
            "spec": spec if spec is not None else {"allow": {"logins": ["ubuntu"]}}}


def statuses(h: Harness, body: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in body["status"]["conditions"]}


@pytest.fixture
def h() -> Harness:
    return Harness()


async def test_create_pushes_with_origin_kubernetes_and_reports_ready(h: Harness) -> None:
    body = await h.reconcile(role(labels={"env": "dev"}))
    stored = await h.auth.store.get(Kind.ROLE, "team-a.dev")
    assert stored.origin is Origin.KUBERNETES
    assert stored.spec == {"allow": {"logins": ["ubuntu"]}}
    assert stored.labels["env"] == "dev"
    assert stored.annotations["limen.dev/kubernetes-object"] == "roles/team-a/dev"
    assert body["status"]["limenName"] == "team-a.dev"
    assert body["status"]["observedGeneration"] == 1
    assert statuses(h, body) == {"Ready": "True", "Reconciling": "False", "Stalled": "False",
                                 "Valid": "True", "Owned": "True"}
    assert h.events == [("Normal", "Applied", "Role/team-a.dev created in Limen")]


async def test_unchanged_object_is_not_written_again(h: Harness) -> None:
    body = await h.reconcile(role())
    before = dict(body["status"])
    patch = kopf.Patch()
    await h.reconciler.reconcile(body, patch, LOG, None, resync=True)
    assert len(h.auth.applied) == 1
    assert not patch  # same status: nothing to patch
    assert body["status"] == before


async def test_invalid_object_never_reaches_limen(h: Harness) -> None:
    bad = role(spec={"allow": {"node_labels": {"env": "^prod"}}})
    body = await h.reconcile(bad)
    assert h.auth.applied == []
    assert statuses(h, body) == {"Ready": "False", "Reconciling": "False", "Stalled": "True",
                                 "Valid": "False", "Owned": "Unknown"}
    valid = h.condition(body, "Valid")
    assert valid["reason"] == "Invalid"
    assert valid["message"].startswith("spec.allow.node_labels.env: '^prod' looks like a regular")
    assert h.events == [("Warning", "Invalid", valid["message"])]
    await h.reconcile(body)  # same failure again: no second Warning
    assert len(h.events) == 1


async def test_spec_name_allows_email_user_names() -> None:
    h = Harness(Kind.USER)
    user = {"apiVersion": "limen.dev/v1alpha1", "kind": "User",
            "metadata": {"name": "alice", "namespace": "people", "uid": "u-alice",
                         "generation": 1},
            "spec": {"name": "alice@example.com", "roles": ["dev"]}}
    body = await h.reconcile(user)
    assert (await h.auth.store.get(Kind.USER, "alice@example.com")).spec["roles"] == ["dev"]
    assert body["status"]["limenName"] == "alice@example.com"


async def test_younger_object_claiming_a_taken_name_is_stalled(h: Harness) -> None:
    older = Claim("2024-01-01T00:00:00Z", "team-b", "dev", "uid-team-b-dev")
    mine = Claim("2024-05-01T00:00:00Z", "team-a", "dev", "uid-team-a-dev")
    body = await h.reconcile(role(spec={"name": "dev"}), claims={"dev": [older, mine]})
    assert h.auth.applied == []
    owned = h.condition(body, "Owned")
    assert (owned["status"], owned["reason"]) == ("False", "NameConflict")
    assert "team-b/dev" in owned["message"]
    assert statuses(h, body)["Stalled"] == "True"


async def test_object_owned_by_another_origin_is_not_touched_until_adopted(
        h: Harness) -> None:
    await h.auth.put_api_object(Kind.ROLE, "dev", {"allow": {"logins": ["root"]}})
    body = await h.reconcile(role(spec={"name": "dev", "allow": {"logins": ["ubuntu"]}}))
    stored = await h.auth.store.get(Kind.ROLE, "dev")
    assert stored.origin is Origin.API
    assert stored.spec["allow"]["logins"] == ["root"]
    owned = h.condition(body, "Owned")
    assert (owned["status"], owned["reason"]) == ("False", "OwnedElsewhere")
    assert "limen.dev/adopt: kubernetes" in owned["message"]
    # the adopt annotation on the CR hands it over
    body["metadata"]["annotations"] = {"limen.dev/adopt": "kubernetes"}
    body["metadata"]["generation"] = 2
    body = await h.reconcile(body)
    stored = await h.auth.store.get(Kind.ROLE, "dev")
    assert stored.origin is Origin.KUBERNETES
    assert stored.spec["allow"]["logins"] == ["ubuntu"]
    assert statuses(h, body)["Owned"] == "True"
    assert h.condition(body, "Owned")["reason"] == "Adopted"


async def test_object_pushed_by_another_cr_is_a_conflict(h: Harness) -> None:
    await h.reconcile(role("dev", "team-b", spec={"name": "dev"}))
    body = await h.reconcile(role("dev", "team-a", spec={"name": "dev",
                                                          "allow": {"logins": ["x"]}}))
    owned = h.condition(body, "Owned")
    assert (owned["status"], owned["reason"]) == ("False", "NameConflict")
    assert "roles/team-b/dev" in owned["message"]
    stored = await h.auth.store.get(Kind.ROLE, "dev")
    assert stored.annotations["limen.dev/kubernetes-object"] == "roles/team-b/dev"


async def test_drift_inside_limen_is_corrected_and_reported(h: Harness) -> None:
    body = await h.reconcile(role())
    ready_since = h.condition(body, "Ready")["lastTransitionTime"]
    stored = await h.auth.store.get(Kind.ROLE, "team-a.dev")
    await h.auth.store.put(stored.replace(spec={"allow": {"logins": ["root"]}}))
    h.now = T0 + timedelta(minutes=1)
    body = await h.reconcile(body, resync=True)
    assert (await h.auth.store.get(Kind.ROLE, "team-a.dev")).spec == {
        "allow": {"logins": ["ubuntu"]}}
    ready = h.condition(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "DriftCorrected")
    assert "spec.allow.logins" in ready["message"]
    assert ready["lastTransitionTime"] == ready_since  # still True: no transition
    assert h.events[-1][:2] == ("Warning", "DriftCorrected")
    body = await h.reconcile(body, resync=True)  # nothing drifted since: the report stays
    assert h.condition(body, "Ready")["reason"] == "DriftCorrected"


async def test_auth_down_is_retried_and_recovers(h: Harness) -> None:
    h.auth.down = True
    with pytest.raises(kopf.TemporaryError) as caught:
        await h.reconcile(role())
    assert caught.value.delay == 5
    body = role()
    body["status"] = {}
    with pytest.raises(kopf.TemporaryError):
        await h.reconcile(body)
    assert statuses(h, body) == {"Ready": "False", "Reconciling": "True", "Stalled": "False",
                                 "Valid": "True", "Owned": "Unknown"}
    assert h.condition(body, "Ready")["reason"] == "AuthUnreachable"
    assert ("Warning", "AuthUnreachable") in [e[:2] for e in h.events]
    # the resync timer does not raise (it fires again on its own)
    await h.reconcile(body, resync=True)
    h.auth.down = False
    body = await h.reconcile(body)
    assert statuses(h, body)["Ready"] == "True"
    assert await h.auth.store.find(Kind.ROLE, "team-a.dev") is not None


async def test_rename_deletes_the_old_limen_object(h: Harness) -> None:
    body = await h.reconcile(role())
    body["spec"] = {"name": "developers", "allow": {"logins": ["ubuntu"]}}
    body["metadata"]["generation"] = 2
    body = await h.reconcile(body)
    assert await h.auth.store.find(Kind.ROLE, "team-a.dev") is None
    assert await h.auth.store.find(Kind.ROLE, "developers") is not None
    assert body["status"]["limenName"] == "developers"


# -- finalizer -------------------------------------------------------------------------------


def deleting(body: dict[str, Any], at: datetime = T0, **annotations: str) -> dict[str, Any]:
    body["metadata"]["deletionTimestamp"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    body["metadata"].setdefault("annotations", {}).update(annotations)
    return body


async def test_delete_removes_the_limen_object(h: Harness) -> None:
    body = await h.reconcile(role())
    await h.reconciler.finalize(deleting(body), LOG)
    assert await h.auth.store.find(Kind.ROLE, "team-a.dev") is None


async def test_delete_of_a_never_owned_object_leaves_limen_alone(h: Harness) -> None:
    await h.auth.put_api_object(Kind.ROLE, "dev", {})
    body = await h.reconcile(role(spec={"name": "dev"}))
    h.auth.down = True  # it must not even ask
    await h.reconciler.finalize(deleting(body), LOG)
    h.auth.down = False
    assert (await h.auth.store.get(Kind.ROLE, "dev")).origin is Origin.API


async def test_delete_leaves_an_object_taken_over_in_limen(h: Harness) -> None:
    body = await h.reconcile(role())
    stored = await h.auth.store.get(Kind.ROLE, "team-a.dev")
    await h.auth.store.put(stored.with_origin(Origin.API))
    await h.reconciler.finalize(deleting(body), LOG)
    assert await h.auth.store.find(Kind.ROLE, "team-a.dev") is not None


async def test_delete_waits_for_auth_until_the_deadline(h: Harness) -> None:
    body = deleting(await h.reconcile(role()))
    h.auth.down = True
    h.now = T0 + timedelta(seconds=58)
    with pytest.raises(kopf.TemporaryError) as caught:
        await h.reconciler.finalize(body, LOG)
    assert caught.value.delay == pytest.approx(2)  # min(retry, time left)
    h.now = T0 + timedelta(seconds=60)
    await h.reconciler.finalize(body, LOG)  # released
    assert h.events[-1][:2] == ("Warning", "DeadlinePassed")
    assert "may remain" in h.events[-1][2]


async def test_force_delete_releases_at_once(h: Harness) -> None:
    body = deleting(await h.reconcile(role()), **{"limen.dev/force-delete": "true"})
    h.auth.down = True
    await h.reconciler.finalize(body, LOG)
    assert h.events[-1][:2] == ("Warning", "ForceDeleted")


async def test_force_delete_still_deletes_when_auth_answers(h: Harness) -> None:
    body = deleting(await h.reconcile(role()), **{"limen.dev/force-delete": "true"})
    await h.reconciler.finalize(body, LOG)
    assert await h.auth.store.find(Kind.ROLE, "team-a.dev") is None


async def test_object_handed_to_lmctl_is_reported_not_fought_over(h: Harness) -> None:
    """lmctl get -o yaml | edit | lmctl apply with limen.dev/adopt: api: an explicit hand-over
    (Limen's plan lets only api write it now); the operator reports it and writes nothing."""
    body = await h.reconcile(role())
    stored = (await h.auth.store.get(Kind.ROLE, "team-a.dev")).to_document()
    stored["metadata"]["annotations"]["limen.dev/adopt"] = "api"
    stored["spec"] = {"allow": {"logins": ["root"]}}
    del stored["metadata"]["resourceVersion"]
    await h.auth.admin.apply(validate([SourceDocument("x", 0, 1, stored)]), Origin.API)
    applied = len(h.auth.applied)
    body = await h.reconcile(body, resync=True)
    assert len(h.auth.applied) == applied
    assert (await h.auth.store.get(Kind.ROLE, "team-a.dev")).spec["allow"]["logins"] == ["root"]
    owned = h.condition(body, "Owned")
    assert (owned["status"], owned["reason"]) == ("False", "TakenOver")
    # without the hand-over annotation in Limen, the CR takes it back
    handed = (await h.auth.store.get(Kind.ROLE, "team-a.dev"))
    await h.auth.store.put(handed.replace(annotations={
        k: v for k, v in handed.annotations.items() if k != "limen.dev/adopt"}))
    body = await h.reconcile(body, resync=True)
    back = await h.auth.store.get(Kind.ROLE, "team-a.dev")
    assert back.origin is Origin.KUBERNETES
    assert back.spec == {"allow": {"logins": ["ubuntu"]}}
    assert h.condition(body, "Owned")["status"] == "True"
    applied = len(h.auth.applied)
    await h.reconcile(body, resync=True)  # converged: the adopt annotation left is not drift
    assert len(h.auth.applied) == applied


# -- Resource of kind db -----------------------------------------------------------------------


def db_resource(name: str = "orders", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
            "metadata": {"name": name, "namespace": "shop", "uid": f"uid-shop-{name}",
                         "generation": 1, "labels": labels or {"env": "dev"}},
            "spec": {"kind": "db", "protocol": "postgres", "address": "orders-pg.shop.svc:5432",
                     "database": "orders",
                     "tls": {"mode": "verify-full", "server_name": "orders-pg.shop.svc",
                             "ca_file": "/etc/limen/db-ca/ca.pem"}}}


async def test_a_db_resource_is_pushed_and_served_by_matching_db_agents() -> None:
    h = Harness(Kind.RESOURCE)
    body = await h.reconcile(db_resource())
    assert statuses(h, body) == {"Ready": "True", "Reconciling": "False", "Stalled": "False",
                                 "Valid": "True", "Owned": "True"}
    assert body["status"]["limenName"] == "shop.orders"
    stored = await h.auth.store.get(Kind.RESOURCE, "shop.orders")
    assert stored.origin is Origin.KUBERNETES
    assert stored.spec == db_resource()["spec"]
    assert stored.labels["env"] == "dev"
    assert h.events == [("Normal", "Applied", "Resource/shop.orders created in Limen")]
    # a db agent whose selectors (spec.db.resources of the Cluster) match serves it
    await h.reconcile(db_resource("billing", {"env": "prod"}))
    catalog = DatabaseCatalog((), [{"labels": {"env": "dev"}}],
                              lambda: h.auth.store.list(Kind.RESOURCE))
    await catalog.refresh(force=True)
    assert [r.name for r in catalog.databases()] == ["shop.orders"]
    [served] = catalog.databases()
    assert (served.spec["protocol"], served.spec["tls"]["mode"]) == ("postgres", "verify-full")


async def test_a_db_resource_without_protocol_never_reaches_limen() -> None:
    h = Harness(Kind.RESOURCE)
    bad = db_resource()
    del bad["spec"]["protocol"]
    body = await h.reconcile(bad)
    assert h.auth.applied == []
    valid = h.condition(body, "Valid")
    assert (valid["status"], valid["reason"]) == ("False", "Invalid")
    assert "spec.protocol" in valid["message"]
