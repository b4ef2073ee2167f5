"""The operator forwards a Cluster CR's phased CA rotation (``spec.rotation``) to the auth of
that cluster, and reads back what auth made of it.

::

    Cluster reconcile (create / update / resume / refresh timer; the rotation timer every
    ROTATION_POLL_SECONDS while pending()) ──▶ RotationForwarder.forward(body)
      no spec.rotation, nothing forwarded before ──▶ nothing (auth is not called)
      spec.ca_rotation rotates one of its types ──▶ RotationRequest=False (MixedRotation)
      auth: the configured one (--auth / --data-dir), else this Cluster's own
            (<name>-auth.<ns>.svc:3025, deployed_auth.endpoint_of)
        /v1/status cluster ≠ the CR's cluster name ──▶ False (AnotherCluster)
        the Cluster document of that name ──ownership (documents.ownership)──▶ not ours:
            False (OwnedElsewhere / NameConflict: a Git document for this cluster, say)
        differs from rotation_document.forwarded(body)? ──▶ apply (origin kubernetes)
        spec.rotation dropped ──▶ our document deleted ──▶ True (Removed)
        its status.rotation + /v1/status ca_rotation ──▶ rotation_document.outcome ──▶
            status.rotation, status.caPhases, RotationRequest (True Applied / False Refused,
            NotApplied / Unknown Pending)
      auth unreachable ──▶ False (AuthUnreachable), looked at again by the rotation timer

Auth's own reconciler (``limen.auth.rotation_declared``) then drives the phases exactly as for
a document from Git. Called by ``limen.operator.cluster``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from limen.api.resources import Kind
from limen.errors import AccessDenied, ConnectionProblem, LimenError
from limen.operator.auth import LimenAuth
from limen.operator.conditions import Check, condition, find, merge_conditions
from limen.operator.context import OperatorContext
from limen.operator.documents import InvalidObject, declared_by, drift, ownership, taking_over
from limen.operator.naming import object_ref
from limen.operator.rotation_document import (
    CONDITION,
    Outcome,
    forwarded,
    mixed_problem,
    outcome,
    removed,
    requested,
)

__all__ = ["ROTATION_POLL_SECONDS", "RotationForwarder", "poll_seconds",
           "with_rotation_condition"]

ROTATION_POLL_SECONDS = 10.0
"""How often the operator reads auth again while a request is pending (at most)."""
_PLURAL = Kind.CLUSTER.plural


def poll_seconds(resync_seconds: float) -> float:
    """The rotation timer's interval: :data:`ROTATION_POLL_SECONDS`, or the resync interval
    when that is shorter."""
    return min(ROTATION_POLL_SECONDS, resync_seconds)


class RotationForwarder:
    """See the module doc. Holds one auth client per deployed Cluster (no auth configured)."""

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self._clients: dict[str, LimenAuth] = {}

    async def forget(self, uid: str) -> None:
        """The Cluster ``uid`` is gone: close its auth client."""
        client = self._clients.pop(uid, None)
        if client is not None:
            await client.shutdown()

    async def shutdown(self) -> None:
        """At the operator's cleanup: close every auth client for good."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.shutdown()

    def _auth(self, body: Mapping[str, Any]) -> LimenAuth:
        config = self.ctx.config
        if config.auth_address or config.data_dir is not None:
            if self.ctx.auth is None:
                raise ConnectionProblem("the operator's configured auth API is not set up")
            return self.ctx.auth
        uid = str(body["metadata"].get("uid") or "")
        client = self._clients.get(uid)
        if client is None:
            client = LimenAuth(partial(self.ctx.deployed.endpoint_of, uid),
                               call_timeout=config.call_timeout_seconds)
            self._clients[uid] = client
        return client

    async def forward(self, body: Mapping[str, Any]) -> Outcome:
        """Forward ``spec.rotation`` and read back its outcome (the module doc)."""
        status = body.get("status") or {}
        shown = find(status.get("conditions"), CONDITION)
        if not requested(body) and not status.get("rotation") and (
                shown is None or shown.get("reason") == "Removed"):
            return Outcome()
        problem = mixed_problem(body)
        if problem is not None:
            return self._failed(body, Check(False, "MixedRotation", problem))
        try:
            result = await self._forward(body)
        except ConnectionProblem as err:
            return self._failed(body, Check(False, "AuthUnreachable", str(err)))
        except InvalidObject as err:
            return self._failed(body, Check(False, "Invalid", str(err)))
        except AccessDenied as err:
            return self._failed(body, Check(False, "AccessDenied", str(err)))
        except LimenError as err:  # auth refused the document itself
            return self._failed(body, Check(False, "NotApplied", str(err)))
        if result.check is not None and result.check.status is False:
            self._warn(body, result.check)
        return result

    async def _forward(self, body: Mapping[str, Any]) -> Outcome:
        auth = self._auth(body)
        info = await auth.status()
        name = str((body.get("spec") or {}).get("cluster_name") or body["metadata"]["name"])
        if info.get("cluster") != name:
            return Outcome({}, Check(False, "AnotherCluster", (
                f"the auth this operator reaches serves cluster {info.get('cluster')!r}, not "
                f"{name!r}: its rotation requests are not sent there")))
        ca_rotation = info.get("ca_rotation") or {}
        current = await auth.get(_PLURAL, name)
        if not requested(body):
            meta = body["metadata"]
            if current is not None and declared_by(
                    current, object_ref(_PLURAL, meta.get("namespace"), str(meta["name"]))):
                await auth.delete(_PLURAL, name)
            return removed(ca_rotation)
        declared = forwarded(body)
        owned = ownership(current, declared)
        if not owned.status:
            return Outcome({}, Check(False, owned.reason, owned.message))
        stored = dict((current or {}).get("status") or {})
        if current is None or drift(current, declared):
            await auth.apply(taking_over(current, declared))
            stored = {}  # auth's reconciler answers the new requests shortly
        shown = stored.get("rotation")
        return outcome(body, shown if isinstance(shown, Mapping) else {},
                       str(stored.get("rotationError") or ""), ca_rotation)

    def _failed(self, body: Mapping[str, Any], check: Check) -> Outcome:
        self._warn(body, check)
        return Outcome({}, check)

    def _warn(self, body: Mapping[str, Any], check: Check) -> None:
        """A Warning Event when the refusal is new (not at every poll)."""
        old = find((body.get("status") or {}).get("conditions"), CONDITION) or {}
        if (old.get("status"), old.get("reason"), old.get("message")) != (
                "False", check.reason, check.message):
            self.ctx.post_event(body, "Warning", f"Rotation{check.reason}", check.message)


def with_rotation_condition(status: dict[str, Any], previous: Mapping[str, Any],
                            check: Check | None, generation: int, now: datetime) -> dict[str, Any]:
    """``status`` (built by ``conditions.build_status``) with the :data:`CONDITION` condition
    set to ``check`` (kept as it was when None)."""
    if check is None:
        return status
    mine = condition(CONDITION, check.status, check.reason, check.message, generation, now)
    others = [c for c in status["conditions"] if c.get("type") != CONDITION]
    old = previous.get("conditions")
    status["conditions"] = merge_conditions(old if isinstance(old, list) else None,
                                            [*others, mine])
    return status
