"""``GET /v1/ready`` on auth's join listener: can this auth replica reach its backend?

::

    kubelet readinessProbe ──HTTPS, no client certificate──▶ join listener GET /v1/ready
        BackendReadiness.check(): the cluster name read from the backend (one small key),
        within CHECK_TIMEOUT; one check at a time, its answer reused for CACHE_SECONDS
        200 {"ready": true}    the backend answered and holds this cluster's name
        503 {"ready": false}   it did not (unreachable, too slow, or another cluster's)

A replica that loses its PostgreSQL drops out of the auth Service's endpoints and comes back
when the database does, without being restarted (the liveness probe, ``GET /v1/join``, never
touches the backend). The answer says nothing else, whoever asks: the reason goes to the log,
once per change (never the DSN: the backend's errors name the database and host only). The
cache bounds what anonymous callers can make the database do to one read per
``CACHE_SECONDS``. Called by ``limen.auth.http.join_listener``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiohttp import web

from limen.auth.store_keys import CLUSTER_NAME_KEY
from limen.backend.base import Backend
from limen.errors import LimenError

__all__ = ["CACHE_SECONDS", "CHECK_TIMEOUT", "READY_PATH", "BackendReadiness",
           "readiness_routes"]

READY_PATH = "/v1/ready"
CHECK_TIMEOUT = 3.0
"""Seconds a check waits for the backend (below the probe's ``timeoutSeconds``, 5)."""
CACHE_SECONDS = 1.0
"""How long a check's answer is reused."""

log = logging.getLogger(__name__)


class BackendReadiness:
    """Whether ``backend`` answers with the name of ``cluster`` (see the module doc)."""

    def __init__(self, backend: Backend, cluster: Callable[[], str], *,
                 timeout: float = CHECK_TIMEOUT, cache_seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._backend = backend
        self._cluster = cluster
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._answer: tuple[float, bool] | None = None
        self._reported: bool | None = None
        self.checks = 0
        """Backend reads made (for tests)."""
        self.reason = ""
        """Why the last check failed (empty when it passed); the diagnostics listener's
        ``/readyz`` shows it on loopback (``limen.cli.diag_wiring``)."""

    async def check(self) -> bool:
        async with self._lock:
            if self._answer is not None and self._clock() - self._answer[0] < (
                    self._cache_seconds):
                return self._answer[1]
            ready, reason = await self._read()
            self._answer = (self._clock(), ready)
            self.reason = reason
            if ready != self._reported:
                if ready:
                    log.info("the backend answers again: ready")
                else:
                    log.warning("not ready: %s", reason)
                self._reported = ready
            return ready

    async def _read(self) -> tuple[bool, str]:
        self.checks += 1
        try:
            async with asyncio.timeout(self._timeout):
                item = await self._backend.get(CLUSTER_NAME_KEY)
        except TimeoutError:
            return False, f"the backend did not answer within {self._timeout:g}s"
        except (LimenError, OSError) as err:
            return False, f"the backend cannot be read: {err}"
        if item is None or item.value.decode(errors="replace") != self._cluster():
            return False, "the backend holds no record of this cluster's name"
        return True, ""


def readiness_routes(readiness: BackendReadiness) -> list[web.RouteDef]:
    """``GET /v1/ready`` answered from ``readiness``."""
    async def ready(_request: web.Request) -> web.Response:
        if await readiness.check():
            return web.json_response({"ready": True})
        return web.json_response({"ready": False}, status=503)

    return [web.get(READY_PATH, ready)]
