"""Which event loop a long-running Limen process runs on, and the one assumption its protocols
may make about the loop's transports.

``limen start`` runs on uvloop by default (``event_loop: uvloop`` in ``limen.yaml``,
``LIMEN_EVENT_LOOP``): libuv's loop with its TCP and TLS transports in C, where asyncio's
selector loop and ``sslproto`` run per message in Python (on the database path uvloop cut the
proxy's CPU per ``pgbench -S`` transaction by about a fifth: bench/RESULTS.md).
``event_loop: asyncio`` keeps the standard library's loop (the tests' in-process servers run
on it too). Called by ``limen.cli.limen``.

uvloop's transports do not derive from ``asyncio.Transport`` (they implement its methods), so
protocols take what ``connection_made`` gives them through :func:`stream_transport` rather
than an ``isinstance`` check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

__all__ = ["run", "stream_transport"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], kind: str) -> T:
    """Run ``main`` to completion on a new loop of ``kind``, ``"uvloop"`` or ``"asyncio"`` (as
    :func:`asyncio.run`)."""
    if kind == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def stream_transport(transport: asyncio.BaseTransport) -> asyncio.Transport:
    """``transport`` as the read-write stream transport that every loop gives a stream
    protocol (asyncio's and uvloop's alike)."""
    return cast(asyncio.Transport, transport)
