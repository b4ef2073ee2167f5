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

__all__ = ["collect_after_kopf"]

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
