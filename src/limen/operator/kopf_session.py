"""kopf's HTTP session to the Kubernetes API, built by the operator so that every connection
is really gone when the operator stops.

kopf builds the same session itself from the login's ``ConnectionInfo``. At exit it closes its
open responses (the watch streams) and then the session; closing a response starts a
graceful TLS shutdown that nobody awaits, so the event loop could end in the middle of it
and leave the socket to the garbage collector (``ResourceWarning: unclosed <socket...>``,
``unclosed transport <_SelectorSocketTransport closing ...>`` in a random later test).
:class:`SessionTracker` builds the session with a trace hook that remembers every connection
a request used; :meth:`SessionTracker.finish`, called when ``kopf.operator`` has returned,
aborts those still open or closing and waits until they are closed.

::

    login handler ──▶ kube.login (ConnectionInfo) ──▶ SessionTracker.session ──▶ kopf
    kopf.operator returns ──▶ SessionTracker.finish: abort + await what is left

Called by ``limen.operator.main``.
"""

from __future__ import annotations

import asyncio
import warnings
import weakref
from types import SimpleNamespace

import aiohttp
import kopf

__all__ = ["SessionTracker"]


class SessionTracker:
    """Makes kopf's sessions and ends their connections at exit."""

    def __init__(self) -> None:
        self._connections: weakref.WeakKeyDictionary[asyncio.Transport,
                                                     asyncio.Future[None]] = (
            weakref.WeakKeyDictionary())

    def session(self, info: kopf.ConnectionInfo) -> kopf.AiohttpSession:
        """The session kopf would build for ``info`` (same TLS, headers, auth, proxy),
        traced. Needs the running event loop (call it from an async login handler)."""
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(self._remember)
        with warnings.catch_warnings():  # kopf's own deprecation, as in kopf
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="kopf")
            auth = info.as_aiohttp_basic_auth()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
            headers=info.as_http_headers(), auth=auth, proxy=info.proxy_url,
            trust_env=info.trust_env, trace_configs=[trace])
        return kopf.AiohttpSession(aiohttp_session=session, server=info.server,
                                   default_namespace=info.default_namespace,
                                   priority=info.priority, expiration=info.expiration)

    async def _remember(self, _session: aiohttp.ClientSession, _ctx: SimpleNamespace,
                        params: aiohttp.TraceRequestEndParams) -> None:
        connection = params.response.connection
        if connection is None or connection.transport is None or connection.protocol is None:
            return
        closed = connection.protocol.closed
        if closed is not None:
            self._connections[connection.transport] = closed

    async def finish(self, grace: float) -> int:
        """Abort every remembered connection not closed yet and wait (at most ``grace``
        seconds) until they are; returns how many there were."""
        waiting: list[asyncio.Future[None]] = []
        for transport, closed in list(self._connections.items()):
            if closed.done():
                continue
            transport.abort()
            waiting.append(closed)
        if waiting:
            await asyncio.wait(waiting, timeout=grace)
        for closed in waiting:
            if closed.done() and not closed.cancelled():
                closed.exception()  # retrieved: an aborted connection may end with an error
        self._connections.clear()
        return len(waiting)
