"""The operator stops without leaving connections to the garbage collector.

kopf stops a timer at exit only by setting its ``stopped`` flag and does not wait for it. A
resync timer in the middle of an auth call used to outlive the operator's cleanup: the
cleanup closed the auth client, the call failed, the handler wrote a status and kopf patched
it through a fresh aiohttp session after it had closed its own — a session nobody closed,
reported as ``ResourceWarning``/``PytestUnraisableExceptionWarning`` in whichever later test
the garbage collector ran. Here a resync is caught in an auth call that only ends when the
auth client is shut down, and the operator is stopped: the call must have been abandoned
before the cleanup closed the client, and nothing the operator opened may be left unclosed.
Then ``run_timer``/``stop_timers`` on their own: a timer kopf never flagged (spawned while the
operator stopped) is stopped by the cleanup too, and runs nothing afterwards.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf._core.intents.stoppers import DaemonStopper  # what kopf hands timers as `stopped`

from k8s_emulator.fixtures import KubeAPI
from k8s_emulator.loop_garbage import collect_after_kopf
from limen.errors import ConnectionProblem
from limen.operator.auth import Endpoint, LimenAuth
from limen.operator.context import OperatorContext
from limen.operator.main import run
from limen.operator.settings import OperatorConfig

NS = "team-a"


class StuckAuth(LimenAuth):
    """Auth that accepts everything until ``stuck`` is set; then a read hangs until the
    client is shut down (and fails then, as a real call on a closed client does)."""

    def __init__(self) -> None:
        super().__init__(self._no_endpoint, call_timeout=30.0)
        self.stuck = threading.Event()
        self.entered = threading.Event()
        self.in_flight = 0
        self.in_flight_at_shutdown: int | None = None
        self.cancelled = 0
        self._closed: asyncio.Event | None = None

    @staticmethod
    def _no_endpoint() -> Endpoint:
        raise AssertionError("the stand-in opens no connection")

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        if not self.stuck.is_set():
            return None
        self._closed = self._closed or asyncio.Event()
        self.in_flight += 1
        self.entered.set()
        try:
            await self._closed.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        raise ConnectionProblem("the auth client was closed")

    async def apply(self, document: Any) -> str:
        return "created"

    async def shutdown(self) -> None:
        self.in_flight_at_shutdown = self.in_flight
        if self._closed is not None:
            self._closed.set()
        await super().shutdown()


def test_a_resync_in_flight_is_abandoned_before_the_cleanup(
        kube_api: KubeAPI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig_path))
    kube_api.create_namespace(NS)
    config = OperatorConfig(resync_seconds=0.2, retry_seconds=0.2, image="limen:test")
    auth = StuckAuth()
    ctx = OperatorContext(config=config, auth=auth)
    stop, started = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def operate() -> None:
        try:
            asyncio.run(run(config, ctx=ctx, namespaces=[NS], standalone=True,
                            stop_flag=stop,  # type: ignore[arg-type]
                            ready_flag=started))  # type: ignore[arg-type]
        except BaseException as err:
            failures.append(err)

    collect_after_kopf()  # whatever earlier tests left, not this test's business
    thread = threading.Thread(target=operate, name="operator", daemon=True)
    thread.start()
    try:
        kube_api.wait_for(lambda: started.is_set() or failures, 30, "the operator to start")
        kube_api.create({"apiVersion": "limen.dev/v1alpha1", "kind": "Role",
                         "metadata": {"name": "dev", "namespace": NS},
                         "spec": {"allow": {"logins": ["ubuntu"]}}})
        kube_api.wait_for(lambda: (kube_api.get("roles", "dev", NS) or {}).get(
            "status", {}).get("limenName"), 20, "the first reconcile")
        auth.stuck.set()
        kube_api.wait_for(auth.entered.is_set, 20, "a resync stuck in an auth call")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "the operator did not stop"
    assert not failures, failures
    assert auth.cancelled == 1  # the resync was abandoned when the operator stopped ...
    assert auth.in_flight_at_shutdown == 0  # ... before the cleanup closed the client
    assert collect_after_kopf() == []


async def test_cleanup_stops_a_timer_kopf_never_flagged() -> None:
    ctx = OperatorContext(config=OperatorConfig(image="limen:test"))
    never_set: kopf.DaemonStopped = DaemonStopper().async_waiter
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def reconcile() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # an auth call that does not return
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def timer() -> None:  # kopf's timer loop: run, then sleep until the next interval
        while True:
            await ctx.run_timer(reconcile(), never_set)
            await asyncio.Event().wait()

    task = asyncio.create_task(timer())
    async with asyncio.timeout(5):
        await started.wait()
        await ctx.stop_timers(0.2)
    assert cancelled.is_set()  # the reconcile was abandoned ...
    assert task.done()  # ... and the timer, asleep and never flagged, cancelled

    ran: list[str] = []

    async def late() -> None:
        ran.append("reconcile")

    await ctx.run_timer(late(), never_set)  # a timer firing after the cleanup does nothing
    assert ran == []


async def test_a_flagged_timer_abandons_its_work() -> None:
    ctx = OperatorContext(config=OperatorConfig(image="limen:test"))
    stopper = DaemonStopper()
    entered = asyncio.Event()

    async def reconcile() -> None:
        entered.set()
        await asyncio.Event().wait()

    run = asyncio.create_task(ctx.run_timer(reconcile(), stopper.async_waiter))
    async with asyncio.timeout(5):
        await entered.wait()
        stopper.set()
        await run  # returns (the work cancelled) instead of waiting forever
    assert run.exception() is None
