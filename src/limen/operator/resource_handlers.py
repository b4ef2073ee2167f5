"""kopf handlers for User, Role, TrustedCluster and Resource: push each custom resource into
Limen (origin ``kubernetes``) and report the outcome in its status.

::

    create / update / resume ─┐
    resync timer (drift) ─────┴─▶ Reconciler.reconcile (one object at a time)
        declare ──invalid──▶ Valid=False, Stalled=True, Warning Event; nothing reaches Limen
        name claimed by an older object ──▶ Owned=False (NameConflict), Stalled=True
        auth.get ──▶ ownership ──not ours──▶ Owned=False (OwnedElsewhere / NameConflict)
                 ──▶ differs? auth.apply ──▶ Ready=True (Applied | DriftCorrected: changed inside
                                    Limen since this generation was applied, or while the
                                    object was taken over there and until it was given back)
        auth unreachable ──▶ Ready=False, Reconciling=True, Warning; retried by kopf
    delete (finalizer limen.dev/finalizer) ──▶ Reconciler.finalize
        auth.delete when the Limen object is this CR's; auth unreachable ──▶ retry until the
        deadline, or at once with limen.dev/force-delete ──▶ let go + Warning Event

Only ``status`` is written (observedGeneration, limenName and the conditions of
``limen.operator.conditions``), and only when it changed; kopf keeps its own bookkeeping in
``limen.dev/*`` annotations. Objects are filtered by the ``limen.dev/operator-id`` label.
Called by ``limen.operator.main`` (registration).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import kopf

from limen.api.resources import API_GROUP, Kind
from limen.errors import AccessDenied, AlreadyExists, BadParameter, CompareFailed, LimenError
from limen.errors import ConnectionProblem as Unreachable
from limen.operator.auth import release_decision
from limen.operator.conditions import Check, Observation, build_status, find, status_changes
from limen.operator.context import OperatorContext
from limen.operator.documents import (
    MANAGED_KINDS,
    Declared,
    InvalidObject,
    declare,
    declared_by,
    drift,
    ownership,
    taking_over,
)
from limen.operator.naming import Claim, limen_name, winner
from limen.operator.settings import FORCE_DELETE_ANNOTATION, OPERATOR_ID_LABEL

__all__ = ["API_VERSION_NAME", "Reconciler", "register_resource_handlers"]

API_VERSION_NAME = "v1alpha1"
Logger = logging.Logger | logging.LoggerAdapter[Any]
_UNCHECKED = Check(None, "NotChecked", "")


def register_resource_handlers(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    """Register the handlers of the four Limen kinds for the operator of ``ctx``."""
    labels = {OPERATOR_ID_LABEL: ctx.config.operator_id or kopf.ABSENT}
    for kind in MANAGED_KINDS:
        _register_kind(registry, Reconciler(kind, ctx), labels)


def _register_kind(registry: kopf.OperatorRegistry, reconciler: Reconciler,
                   labels: dict[str, Any]) -> None:
    plural = reconciler.kind.plural
    index_id = f"{plural}_by_limen_name"
    config = reconciler.ctx.config

    @kopf.index(API_GROUP, API_VERSION_NAME, plural, id=index_id, labels=labels,
                registry=registry)
    def claims(body: kopf.Body, **_: Any) -> dict[str, Claim]:
        meta = body.get("metadata") or {}
        name = limen_name(meta.get("namespace"), str(meta.get("name") or ""), body.get("spec"))
        return {name: Claim.of(body)}

    @kopf.on.resume(API_GROUP, API_VERSION_NAME, plural, id="reconcile", labels=labels,
                    registry=registry)
    @kopf.on.create(API_GROUP, API_VERSION_NAME, plural, id="reconcile", labels=labels,
                    registry=registry)
    @kopf.on.update(API_GROUP, API_VERSION_NAME, plural, id="reconcile", labels=labels,
                    registry=registry)
    async def reconcile(body: kopf.Body, patch: kopf.Patch, logger: Logger,
                        **kwargs: Any) -> None:
        await reconciler.reconcile(body, patch, logger, kwargs[index_id], resync=False)

    @kopf.timer(API_GROUP, API_VERSION_NAME, plural, id="resync", labels=labels,
                interval=config.resync_seconds, initial_delay=config.resync_seconds,
                registry=registry)
    async def resync(body: kopf.Body, patch: kopf.Patch, logger: Logger,
                     **kwargs: Any) -> None:
        await reconciler.ctx.run_timer(
            reconciler.reconcile(body, patch, logger, kwargs[index_id], resync=True),
            kwargs["stopped"])

    @kopf.on.delete(API_GROUP, API_VERSION_NAME, plural, id="finalize", labels=labels,
                    registry=registry)
    async def finalize(body: kopf.Body, logger: Logger, **_: Any) -> None:
        await reconciler.finalize(body, logger)


class Reconciler:
    """Reconciles and finalizes the objects of one kind."""

    def __init__(self, kind: Kind, ctx: OperatorContext) -> None:
        self.kind = kind
        self.ctx = ctx

    # -- reconcile ---------------------------------------------------------------------------
    async def reconcile(self, body: Mapping[str, Any], patch: Any, logger: Logger,
                        claims: Mapping[str, Iterable[Claim]] | None, *, resync: bool) -> None:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        async with self.ctx.lock(uid), self.ctx.reconciling(str(self.kind.value)):
            self.ctx.reconciles[uid] += 1
            previous = body.get("status") or {}
            try:
                declared = declare(self.kind, body)
            except InvalidObject as err:
                invalid = Check(False, "Invalid", str(err))
                self._write(body, patch, Observation(invalid, invalid, _UNCHECKED, stalled=True))
                return
            extra = {"limenName": declared.name}
            conflict = self._claimed_by_other(declared, uid, claims)
            if conflict is not None:
                self._write(body, patch, Observation(conflict, _valid(), conflict, stalled=True),
                            extra)
                return
            try:
                observation = await self._push(body, declared, previous, resync=resync)
            except kopf.TemporaryError:
                raise
            except (Unreachable, AccessDenied, AlreadyExists, CompareFailed) as err:
                reason = ("AuthUnreachable" if isinstance(err, Unreachable) else
                          "AccessDenied" if isinstance(err, AccessDenied) else "Conflict")
                failed = Check(False, reason, str(err))
                owned = _previous(previous, "Owned")
                self._write(body, patch, Observation(failed, _valid(), owned, reconciling=True),
                            extra)
                if resync:
                    return  # the timer fires again on its own
                raise kopf.TemporaryError(str(err),
                                          delay=self.ctx.config.retry_seconds) from None
            except BadParameter as err:  # auth's own validation disagreed
                invalid = Check(False, "Invalid", str(err))
                self._write(body, patch, Observation(invalid, invalid, _UNCHECKED, stalled=True),
                            extra)
                return
            self._write(body, patch, observation, extra)
            logger.debug("reconciled %s/%s", self.kind.value, declared.name)

    def _claimed_by_other(self, declared: Declared, uid: str,
                          claims: Mapping[str, Iterable[Claim]] | None) -> Check | None:
        first = winner((claims or {}).get(declared.name, ()))
        if first is None or first.uid == uid:
            return None
        return Check(False, "NameConflict",
                     f"{self.kind.value}/{declared.name} is claimed by the older object "
                     f"{first.describe()}; set a different spec.name")

    async def _push(self, body: Mapping[str, Any], declared: Declared,
                    previous: Mapping[str, Any], *, resync: bool) -> Observation:
        auth = self.ctx.auth
        if auth is None:
            raise AccessDenied("the operator has no auth API configured (--auth and "
                               "--identity, or --data-dir) and has deployed no Cluster")
        old_name = previous.get("limenName")
        if isinstance(old_name, str) and old_name != declared.name:
            await self._forget(old_name, declared.ref)
        current = await auth.get(self.kind.plural, declared.name)
        owned = ownership(current, declared)
        if not owned.status:
            return Observation(owned, _valid(), owned, stalled=True)
        changed = drift(current, declared) if current is not None else None
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        was_ready = (find(previous.get("conditions"), "Ready") or {}).get("status") == "True"
        # handed back after a takeover inside Limen: what changed there meanwhile is drift too
        given_back = (find(previous.get("conditions"), "Owned") or {}).get(
            "reason") == "TakenOver"
        settled = (was_ready or given_back) and previous.get(
            "observedGeneration") == generation and old_name == declared.name
        key = f"{self.kind.value}/{declared.name}"
        if current is None or changed:
            action = await auth.apply(taking_over(current, declared))
            if settled and changed:
                message = (f"{key} was changed inside Limen ({', '.join(changed)}); restored "
                           "from this object")
                self._warn(body, reason="DriftCorrected", message=message)
                return Observation(Check(True, "DriftCorrected", message), _valid(), owned)
            self.ctx.post_event(body, "Normal", "Applied", f"{key} {action} in Limen")
            return Observation(Check(True, "Applied", f"{key} {action} in Limen"), _valid(),
                               owned)
        if settled:  # nothing to do: keep the reason (e.g. DriftCorrected) of this generation
            return Observation(_previous(previous, "Ready"), _valid(), owned)
        return Observation(Check(True, "Applied", f"{key} is up to date in Limen"), _valid(),
                           owned)

    async def _forget(self, old_name: str, ref: str) -> None:
        """spec.name changed: delete the Limen object of the old name if this CR pushed it."""
        assert self.ctx.auth is not None
        current = await self.ctx.auth.get(self.kind.plural, old_name)
        if current is not None and declared_by(current, ref):
            await self.ctx.auth.delete(self.kind.plural, old_name)

    def _write(self, body: Mapping[str, Any], patch: Any, observation: Observation,
               extra: Mapping[str, Any] | None = None) -> None:
        """Patch the status fields that changed; post a Warning when the failure is new."""
        previous = body.get("status") or {}
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        status = build_status(previous, observation, generation, self.ctx.clock(), extra)
        for key, value in status_changes(previous, status).items():
            patch.status[key] = value
        ready = observation.ready
        old = find(previous.get("conditions"), "Ready") or {}
        if not ready.status and (old.get("reason"), old.get("message")) != (
                ready.reason, ready.message):
            self._warn(body, reason=ready.reason, message=ready.message)

    def _warn(self, body: Mapping[str, Any], *, reason: str, message: str) -> None:
        self.ctx.post_event(body, "Warning", reason, message)

    # -- finalize ----------------------------------------------------------------------------
    async def finalize(self, body: Mapping[str, Any], logger: Logger) -> None:
        """Delete the Limen object this CR pushed; never block the deletion forever."""
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        self.ctx.forget(str(meta.get("uid") or ""))
        name = status.get("limenName")
        owned = (find(status.get("conditions"), "Owned") or {}).get("status") == "True"
        if not isinstance(name, str) or not owned:
            return  # it never reached Limen (invalid, conflicting or not owned)
        ref = f"{self.kind.plural}/{meta.get('namespace') or ''}/{meta.get('name')}"
        force = FORCE_DELETE_ANNOTATION in (meta.get("annotations") or {})
        key = f"{self.kind.value}/{name}"
        try:
            if self.ctx.auth is None:
                raise AccessDenied("the operator has no auth API configured")
            current = await self.ctx.auth.get(self.kind.plural, name)
            if current is not None and declared_by(current, ref):
                await self.ctx.auth.delete(self.kind.plural, name)
                logger.info("deleted %s from Limen", key)
        except LimenError as err:
            decision = release_decision(
                deletion_requested=_deletion_time(meta, self.ctx.clock()), now=self.ctx.clock(),
                deadline=self.ctx.config.delete_deadline_seconds,
                retry=self.ctx.config.retry_seconds, force=force)
            if decision.release:
                self._warn(body, reason=decision.reason,
                          message=f"released without deleting {key} from Limen ({err}); "
                                  "it may remain there")
                return
            raise kopf.TemporaryError(f"cannot delete {key} from Limen yet: {err}",
                                      delay=decision.retry_after) from None


def _valid() -> Check:
    return Check(True, "Valid", "")


def _previous(status: Mapping[str, Any], type_: str) -> Check:
    """The previous condition of ``type_`` as a Check (Unknown when there is none)."""
    found = find(status.get("conditions"), type_)
    if not found or not found.get("reason"):
        return _UNCHECKED
    value = {"True": True, "False": False}.get(str(found.get("status")))
    return Check(value, str(found["reason"]), str(found.get("message") or ""))


def _deletion_time(meta: Mapping[str, Any], now: datetime) -> datetime:
    text = meta.get("deletionTimestamp")
    if isinstance(text, str):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    return now
