"""limen.aio: the Changed broadcast (wakes every earlier waiter, counts the notify after the
call), wait_event's time limit, cancel_and_wait (None skipped, CancelledError swallowed, other
errors raised) and TaskService (one named task, stopped and awaited); limen.net.tcp's socket
options."""

from __future__ import annotations

import asyncio
import socket

import pytest

from limen.aio import Changed, Service, TaskService, cancel_and_wait, wait_event
from limen.net.tcp import tune_socket


async def test_notify_wakes_every_waiter_that_took_the_event_before() -> None:
    changed = Changed()
    first, second = changed.event, changed.event
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    changed.notify()
    async with asyncio.timeout(5):
        await asyncio.gather(*waiters)
    assert not changed.event.is_set()  # later waiters wait for the next notify


async def test_wait_counts_the_first_notify_after_the_call() -> None:
    changed = Changed()
    before = changed.wait(5.0)  # taken now, awaited after the notify
    changed.notify()
    assert await before is True
    assert await changed.wait(0.01) is False


async def test_wait_event_returns_false_after_the_time_limit() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, None) is True


async def test_cancel_and_wait_cancels_every_task_and_skips_none() -> None:
    forever = asyncio.Event()
    tasks = [asyncio.create_task(forever.wait()) for _ in range(2)]
    await cancel_and_wait(None, *tasks)
    assert all(task.cancelled() for task in tasks)


async def test_cancel_and_wait_raises_what_a_finished_task_raised() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fail())
    await asyncio.wait([task])
    with pytest.raises(ValueError, match="boom"):
        await cancel_and_wait(task)


class _Ticker(TaskService):
    name = "ticker"

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.ended = False

    async def _run(self) -> None:
        self.running.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.ended = True


async def test_task_service_runs_one_named_task_until_stopped() -> None:
    ticker = _Ticker()
    service: Service = ticker
    assert await service.start() == {}
    async with asyncio.timeout(5):
        await ticker.running.wait()
    assert any(t.get_name() == "ticker" for t in asyncio.all_tasks())
    await service.stop()
    assert ticker.ended
    assert not any(t.get_name() == "ticker" for t in asyncio.all_tasks())
    await service.stop()  # a second stop is harmless


def test_tune_socket_sets_nodelay_on_tcp_and_ignores_other_sockets() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tune_socket(tcp)
        assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        tune_socket(left)  # no TCP options on a Unix socket: no error
    tune_socket(None)
