"""The reconciler of CA rotations declared on the Cluster document (``spec.rotation``).

A ``limen start`` service in the auth process. It watches the stored Cluster documents (from
the Git sync or ``lmctl apply``) and this cluster's CAs, and on each change::

    the Cluster document of this cluster (metadata.name, or spec.cluster_name, equal to the
    cluster's name; a document for another cluster is ignored, two for this one are refused)
      └─ each request of spec.rotation ─▶ limen.auth.rotation_requests.decide(request, state)
           start / step ─▶ limen.auth.rotation_service.rotate_ca (what lmctl auth rotate
                           reaches), audited ca.rotation with via: cluster document, request_id
                           and, when the Git sync applied the document, git_revision
           refused ─▶ audited ca.rotation success: false (once per request, phase and reason)
      └─ status.rotation: per CA type {id, mode, phase, state, message, ca_phase} (lmctl get
         cluster NAME; lmctl status and lmctl gitops status through limen.auth.http)

A request is never run twice: the CA's rotation state records the request that started it
(``limen.auth.rotation.RotationState.request`` / ``last_request``), in the same transaction
as the keys. With ``leadership`` (several auth replicas on one backend) only the replica
holding the lease acts; one that takes the lease over reconciles at once. Built by
``limen.cli.compose``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from limen.aio.backoff import Backoff
from limen.aio.tasks import cancel_and_wait
from limen.api.resources import Kind, Origin, Resource
from limen.api.rotation_request import RotationRequest, parse_requests
from limen.auth.core import AuthServer
from limen.auth.rotation_requests import Action, Outcome, decide
from limen.auth.rotation_service import rotate_ca
from limen.auth.store_keys import GITOPS_STATUS_KEY
from limen.ca.authority import CertAuthorityType
from limen.errors import BadParameter, CompareFailed, LimenError, NotFound
from limen.services.leadership import Leadership

__all__ = ["ROTATION_LEASE_KEY", "VIA", "DeclaredRotation", "cluster_documents",
           "declared_status"]

log = logging.getLogger(__name__)

ROTATION_LEASE_KEY = "/leases/ca-rotation-requests"
"""The lease of the replica that applies declared rotations (``leadership``)."""
VIA = "cluster document"
"""The ``via`` of the ``ca.rotation`` events this reconciler causes."""
GIT_REVISION_WAIT = 2.0
"""Seconds to wait for the Git sync's status to name the commit that stored the document."""


def cluster_documents(documents: list[Resource], cluster: str) -> list[Resource]:
    """The Cluster documents that describe ``cluster``: ``spec.cluster_name``, or the name."""
    return [d for d in documents
            if str(d.spec.get("cluster_name") or d.name) == cluster]


async def declared_status(auth: AuthServer) -> dict[str, Any]:
    """``status.rotation`` of this cluster's Cluster document (``lmctl status``): per CA
    type, the request applied or refused and why; empty without a document."""
    found = cluster_documents(await auth.store.list(Kind.CLUSTER), auth.cluster_name)
    if len(found) != 1:
        return {}
    rotation = found[0].status.get("rotation")
    return dict(rotation) if isinstance(rotation, Mapping) else {}


class DeclaredRotation:
    """See the module doc. ``interval``: seconds between checks when nothing changed (a
    watch that failed silently, a request waiting for standby)."""

    name = "ca-rotation-requests"

    def __init__(self, auth: AuthServer, *, leadership: Leadership | None = None,
                 interval: float = 5.0) -> None:
        self.auth = auth
        self.leadership = leadership
        self.interval = interval
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._audited: dict[str, tuple[str, str, str]] = {}
        """CA type -> (request id, phase, reason) of the refusal last audited."""

    @property
    def leading(self) -> bool:
        return self.leadership is None or self.leadership.leading

    async def start(self) -> dict[str, str]:
        if self.leadership is not None:
            await self.leadership.start()
        self._tasks = [
            asyncio.create_task(self._watch(Kind.CLUSTER), name="rotation-requests-docs"),
            asyncio.create_task(self._watch(Kind.CERT_AUTHORITY), name="rotation-requests-cas"),
            asyncio.create_task(self._work(), name="rotation-requests")]
        if self.leadership is not None:
            self._tasks.append(asyncio.create_task(self._follow(self.leadership),
                                                   name="rotation-requests-leader"))
        return {}

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        if self.leadership is not None:
            await self.leadership.stop()

    async def _follow(self, leadership: Leadership) -> None:
        while True:
            await leadership.wait_until(True)
            self._kick.set()
            await leadership.wait_until(False)

    async def _watch(self, kind: Kind) -> None:
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                after = await self.auth.backend.current_revision()
                self._kick.set()
                async for _change in self.auth.store.watch(kind, after=after):
                    backoff.reset()
                    self._kick.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # a closed or compacted watch: watch again after a pause
                log.exception("declared CA rotation: the %s watch failed", kind.value)
            await asyncio.sleep(backoff.next_delay())

    async def _work(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._kick.wait()
            self._kick.clear()
            if not self.leading:
                continue
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("declared CA rotation: reconciling failed; trying again")
                await asyncio.sleep(self.interval)
                self._kick.set()

    # -- one pass --------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """Apply this cluster's Cluster document's rotation requests once (module doc)."""
        documents = await self.auth.store.list(Kind.CLUSTER)
        own = cluster_documents(documents, self.auth.cluster_name)
        if len(own) > 1:
            names = ", ".join(sorted(d.name for d in own))
            for document in own:
                await self._write_status(document, {}, f"several Cluster documents describe "
                                                       f"cluster {self.auth.cluster_name} "
                                                       f"({names}): none is applied")
            return
        if not own:
            return
        document = own[0]
        try:
            requests = parse_requests(document.spec)
        except BadParameter as err:
            await self._write_status(document, {}, str(err))
            return
        await self.auth.authorities.refresh()
        entries: dict[str, Any] = {}
        for request in requests:
            entries[request.type] = await self._apply(document, request)
        await self._write_status(document, entries, "")

    async def _apply(self, document: Resource, request: RotationRequest) -> dict[str, Any]:
        ca_type = CertAuthorityType(request.type)
        state = self.auth.authorities.rotation(ca_type)
        action = decide(request, state)
        if action.outcome is Outcome.REFUSED:
            await self._refused(document, request, action.message)
        elif action.target is not None:
            action = await self._change(document, request, action)
        return action.to_status(request, self.auth.authorities.rotation(ca_type))

    async def _change(self, document: Resource, request: RotationRequest,
                      action: Action) -> Action:
        assert action.target is not None
        audit = {"via": VIA, "request_id": request.id, "cluster_document": document.name,
                 **await self._git_revision(document)}
        start = action.outcome is Outcome.START
        try:
            await rotate_ca(
                self.auth, request.type, actor=_actor(document), phase=action.target.value,
                manual=not request.auto, request=request.id if start else "",
                expect_request=None if start else request.id, audit=audit,
                grace_period_seconds=int(request.grace_period.total_seconds()) or None)
        except LimenError as err:  # audited by rotate_ca, with the reason
            self._audited[request.type] = (request.id, request.phase or "", str(err))
            return Action(Outcome.REFUSED, str(err))
        self._audited.pop(request.type, None)
        return action

    async def _refused(self, document: Resource, request: RotationRequest,
                       reason: str) -> None:
        """Audit a refusal once (per request, phase and reason; what the status already
        shows after a restart is not audited again)."""
        key = (request.id, request.phase or "", reason)
        shown = (document.status.get("rotation") or {}).get(request.type) or {}
        if self._audited.get(request.type) == key or (
                shown.get("state") == Outcome.REFUSED.value and shown.get("id") == request.id
                and shown.get("phase") == (request.phase or "") and shown.get("message") == reason):
            return
        self._audited[request.type] = key
        await self.auth.emit("ca.rotation", success=False, user=_actor(document),
                             ca_type=request.type, via=VIA, request_id=request.id,
                             cluster_document=document.name, to=request.phase or "",
                             reason=reason, **await self._git_revision(document))

    async def _git_revision(self, document: Resource) -> dict[str, str]:
        """``{"git_revision": sha}`` when the Git sync stored ``document``: the live commit
        once the sync's status was written after the document (so that commit holds this
        document as stored); empty otherwise."""
        if document.origin is not Origin.GIT:
            return {}
        deadline = time.monotonic() + GIT_REVISION_WAIT
        while True:
            item = await self.auth.backend.get(GITOPS_STATUS_KEY)
            if item is not None and item.revision > document.revision:
                stored = await self.auth.store.find(Kind.CLUSTER, document.name)
                if stored is None or stored.revision != document.revision:
                    return {}  # changed since: another commit, not at hand for this one
                try:
                    sha = str((json.loads(item.value).get("live") or {}).get("sha") or "")
                except (ValueError, AttributeError):
                    return {}
                return {"git_revision": sha} if sha else {}
            if time.monotonic() >= deadline:
                return {}
            await asyncio.sleep(0.05)

    async def _write_status(self, document: Resource, entries: Mapping[str, Any],
                            error: str) -> None:
        status = dict(document.status)
        status["rotation"] = dict(entries)
        if error:
            status["rotationError"] = error
        else:
            status.pop("rotationError", None)
        if status == dict(document.status):
            return
        try:
            await self.auth.store.update(document.replace(status=status))
        except (CompareFailed, NotFound):
            self._kick.set()  # changed meanwhile: look again


def _actor(document: Resource) -> str:
    """The ``user`` of the audit events: ``gitops`` for a document from Git, else the
    document's origin."""
    origin = document.origin
    if origin is Origin.GIT:
        return "gitops"
    return f"cluster-document:{origin.value if origin else 'unknown'}"

