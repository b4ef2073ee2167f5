"""What every handler of one running operator shares: its settings, the auth API, the
Kubernetes API (Cluster children), a clock, per-object locks and counters, and the timers
still running.

The auth API: the configured one (``--auth``/``--identity``, or ``--data-dir``), else, once a
Cluster is deployed, that Cluster's (:meth:`OperatorContext.cluster_deployed`).

One ``OperatorContext`` per operator; ``limen.operator.main`` builds it and the handler
modules close over it when they register into a registry. The clock and the Event poster are
injectable so handlers are tested without waiting and without an API server.

Timers and shutdown: kopf stops a timer on exit only by setting its ``stopped`` flag and does
not wait for it (timers have no cancellation timeout); a timer spawned by an event handled
while the operator stops does not even get the flag. A timer in the middle of a reconcile then
outlives the operator's cleanup and patches its status through a fresh aiohttp session after
kopf closed its own — a session nobody closes. So timers run their work through
:meth:`OperatorContext.run_timer`, which abandons it (cancelled) when ``stopped`` is set or the
operator is stopping, and runs nothing once it is; the cleanup handler calls
:meth:`OperatorContext.stop_timers` first (stop every reconcile, let each timer finish its
last status patch, cancel the ones still alive), then closes the auth and Kubernetes clients;
kopf closes its own sessions after that.
Called by ``limen.operator.main``, ``limen.operator.resource_handlers`` and
``limen.operator.cluster``.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import kopf

from limen.diag.metrics import Metrics
from limen.operator.auth import LimenAuth
from limen.operator.deployed_auth import DeployedCluster, DeployedClusters
from limen.operator.kopf_session import SessionTracker
from limen.operator.settings import OperatorConfig

if TYPE_CHECKING:
    from limen.operator.kube import KubeApi

__all__ = ["EventPoster", "OperatorContext", "kopf_event", "utc_now"]

EventPoster = Callable[[Mapping[str, Any], str, str, str], None]
"""(object, type Normal|Warning, reason, message) → a Kubernetes Event."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def kopf_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Post through kopf (inside a handler: component limen-operator, retried in background)."""
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message)


@dataclass
class OperatorContext:
    config: OperatorConfig
    auth: LimenAuth | None = None
    """None when no auth API is configured and no Cluster is deployed yet: the Limen kinds
    then report AuthNotConfigured (see :meth:`cluster_deployed`)."""
    kube: KubeApi | None = None
    """The Kubernetes API for the objects a Cluster owns (created at startup)."""
    clock: Callable[[], datetime] = utc_now
    post_event: EventPoster = kopf_event
    sessions: SessionTracker = field(default_factory=SessionTracker)
    """kopf's sessions to the Kubernetes API (made by the login handler, ended at exit)."""
    deployed: DeployedClusters = field(default_factory=DeployedClusters)
    """The Clusters this operator deployed (``limen.operator.deployed_auth``)."""
    reconciles: Counter[str] = field(default_factory=Counter)
    """Reconciles run, by object uid (tests and the benchmark read it)."""
    metrics: Metrics = field(default_factory=Metrics)
    """This operator's metrics (``limen_operator_reconciles_total``), served by
    ``limen operator --diag-addr``."""
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _timers: weakref.WeakSet[asyncio.Task[Any]] = field(default_factory=weakref.WeakSet)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def cluster_deployed(self, uid: str, cluster: DeployedCluster) -> None:
        """A Cluster was deployed. With no auth address configured (``--auth``,
        ``--data-dir``), the Limen kinds go to the auth API of the deployed Cluster."""
        self.deployed.record(uid, cluster)
        if self.auth is None and not self.config.auth_address and self.config.data_dir is None:
            self.auth = LimenAuth(self.deployed.endpoint,
                                  call_timeout=self.config.call_timeout_seconds)

    @contextlib.asynccontextmanager
    async def reconciling(self, kind: str) -> AsyncIterator[None]:
        """Count one reconcile of ``kind``: ``ok``, or ``error`` when it raised (kopf retries
        it; a reconcile that wrote a failed condition and returned counts as ``ok``)."""
        try:
            yield
        except BaseException:
            self.metrics.operator_reconciles.labels(kind, "error").inc()
            raise
        self.metrics.operator_reconciles.labels(kind, "ok").inc()

    def lock(self, uid: str) -> asyncio.Lock:
        """Serialises the handlers and the resync timer of one object."""
        return self._locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)

    async def run_timer(self, work: Coroutine[Any, Any, None], stopped: kopf.DaemonStopped) -> None:
        """Run a timer's ``work``; abandon it (cancelled) as soon as ``stopped`` is set or the
        operator is stopping, and run nothing once it is. The calling task (kopf's timer) is
        remembered for :meth:`stop_timers`."""
        task = asyncio.current_task()
        if task is not None:
            self._timers.add(task)
        if stopped or self._stopping.is_set():
            work.close()
            return
        job = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stopped(stopped))
        try:
            await asyncio.wait({job, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (job, stop):
                pending.cancel()
            await asyncio.wait({job, stop})
        if not job.cancelled():
            job.result()

    async def stop_timers(self, grace: float) -> None:
        """At cleanup: abandon every reconcile a timer runs, give the timers ``grace`` seconds
        to write their last status and end (kopf set the ``stopped`` flag of those it knew
        of), then cancel the ones still alive (e.g. a timer kopf did not flag, sleeping until
        its next run)."""
        self._stopping.set()
        current = asyncio.current_task()
        running = {t for t in self._timers if t is not current and not t.done()}
        if not running:
            return
        _done, late = await asyncio.wait(running, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    async def _stopped(self, stopped: kopf.DaemonStopped) -> None:
        """Returns when ``stopped`` is set or the operator is stopping."""
        flag = asyncio.ensure_future(_flag(stopped))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({flag, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            flag.cancel()
            stopping.cancel()


async def _flag(stopped: kopf.DaemonStopped) -> None:
    await stopped.wait()
