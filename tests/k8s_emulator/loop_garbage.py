"""Collect what a stopped kopf operator left behind, before the next test's garbage collection
reports it against that test.

kopf cancels its API calls when its stop flag is set. A call cancelled during the TLS handshake
of a new connection (aiohttp, through aiohappyeyeballs) aborts its socket in a loop callback
that the finished event loop never runs, so the socket and its transport are only found by the
garbage collector, at a random later point, as ``ResourceWarning``s. Tests that run kopf in a
thread (``test_apiserver_clients.py``, ``tests/integration/test_operator_*.py``) call
:func:`collect_after_kopf` once the thread has joined: it collects now and returns every other
``ResourceWarning`` (an unclosed client session, file or object of our own), which those tests
assert is empty.
"""

from __future__ import annotations

import gc
import warnings

__all__ = ["collect_after_kopf", "collect_dead_loop_garbage"]

# the two messages CPython writes for a socket whose transport was never closed
_ABORTED_CONNECT = ("unclosed <socket.socket ", "unclosed transport <_SelectorSocketTransport ")


def collect_after_kopf() -> list[str]:
    """Collect garbage now; the ResourceWarnings raised, except for aborted connects."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    return [m for m in messages if not m.startswith(_ABORTED_CONNECT)]


def collect_dead_loop_garbage() -> list[str]:
    """Collect garbage now, as each test module ends (``tests/conftest.py``); the
    ResourceWarnings raised, except for the transports of event loops already closed and their
    sockets: what a loop run by a thread (kopf, the emulator, a server) left when it ended,
    which would otherwise be reported against whichever later test the collector runs in.
    Anything else, an open transport of a live loop, a file or a session, is returned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    found = [w for w in caught if issubclass(w.category, ResourceWarning)]
    dead_fds = {_fd(w.source) for w in found if _of_closed_loop(w.source)}
    return [str(w.message) for w in found
            if not _of_closed_loop(w.source)
            and not (str(w.message).startswith(_ABORTED_CONNECT[0])
                     and _fd(w.source) in dead_fds - {None})]


def _of_closed_loop(source: object) -> bool:
    loop = getattr(source, "_loop", None)
    return loop is not None and bool(getattr(loop, "is_closed", lambda: False)())


def _fd(source: object) -> int | None:
    if hasattr(source, "_sock_fd"):  # a transport: the descriptor it was created with
        return int(source._sock_fd)
    fileno = getattr(source, "fileno", None)
    try:
        return int(fileno()) if callable(fileno) else None
    except (OSError, ValueError):
        return None
