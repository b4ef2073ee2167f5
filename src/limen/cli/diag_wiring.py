"""The diagnostics of one ``limen start`` process: its listener and the readiness checks of the
components it runs.

::

    limen start ──▶ Metrics() ──▶ cluster_services(settings, metrics)  (components report)
                └─▶ diagnostics(settings, metrics, services) ──▶ DiagListener, started first
                       /readyz runs, for each component it finds:
                       auth      auth-backend (reads the cluster name), auth-ca (holds its CAs)
                       proxy     proxy-auth (auth answers /v1/ping), proxy-listeners (accept)
                       agents    <role>-tunnel (a tunnel up to at least one proxy)
                       gitops    gitops (polled within two intervals, the source readable)

Called by ``limen.cli.limen``. A component not started yet fails its check with "not
started", so probes answer (unready) from the first moment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from limen.aio.task_service import Service
from limen.auth.auth_service import AuthService
from limen.auth.http.readiness import BackendReadiness
from limen.ca.authority import CertAuthorityType
from limen.cli.proxy_component import ProxyComponent
from limen.config import Settings
from limen.diag.health import Check, Readiness
from limen.diag.listener import DiagListener
from limen.diag.metrics import Metrics
from limen.errors import LimenError
from limen.tunnel.agent_pool import TunnelAgentPool

if TYPE_CHECKING:  # the Git sync (and GitPython) is imported only where it runs (--gitops)
    from limen.gitops.sync_service import GitOpsService

__all__ = ["diagnostics", "readiness_checks"]

_NOT_STARTED = "not started"


def diagnostics(settings: Settings, metrics: Metrics,
                services: Sequence[Service]) -> DiagListener | None:
    """The listener at ``settings.diag_addr`` (None when it is not set)."""
    if not settings.diag_addr:
        return None
    return DiagListener(settings.diag_addr, metrics, Readiness(readiness_checks(services)))


def readiness_checks(services: Sequence[Service]) -> list[Check]:
    checks: list[Check] = []
    for service in services:
        proxy = service if isinstance(service, ProxyComponent) else \
            getattr(service, "proxy", None) if service.name == "proxy" else None
        if isinstance(service, AuthService):
            checks += _auth_checks(service)
        elif service.name == "gitops" and isinstance(service, _gitops_service_class()):
            checks.append(Check("gitops", partial(_gitops, service)))
        elif isinstance(proxy, ProxyComponent):
            checks.append(Check("proxy-auth", partial(_proxy_auth, proxy)))
            checks.append(Check("proxy-listeners", partial(_listeners, proxy)))
        elif service.name in ("node", "db", "kube"):
            checks.append(Check(f"{service.name}-tunnel", partial(_tunnel, service)))
    return checks


def _auth_checks(auth: AuthService) -> list[Check]:
    server = auth.server
    backend = BackendReadiness(server.backend, lambda: server.cluster_name)

    async def reaches_backend() -> str | None:
        return None if await backend.check() else backend.reason

    async def holds_ca() -> str | None:
        try:
            for ca_type in (CertAuthorityType.USER, CertAuthorityType.HOST):
                server.authorities.get(ca_type)
        except LimenError as err:
            return str(err)
        return None if auth.address else _NOT_STARTED

    return [Check("auth-backend", reaches_backend), Check("auth-ca", holds_ca)]


async def _proxy_auth(proxy: ProxyComponent) -> str | None:
    if proxy.client is None:
        return _NOT_STARTED
    try:
        await proxy.client.ping()
    except (LimenError, OSError) as err:
        return f"auth cannot be reached: {err}"
    return None


async def _listeners(proxy: ProxyComponent) -> str | None:
    if not proxy.listeners:
        return _NOT_STARTED
    for name, address in sorted(proxy.listeners.items()):
        host, _, port = address.rpartition(":")
        try:
            _reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError as err:
            return f"listener {name} ({address}) does not accept: {err.strerror or err}"
        writer.close()
        await writer.wait_closed()
    return None


async def _tunnel(service: Service) -> str | None:
    pool = _agent_pool(service)
    if pool is None:
        return _NOT_STARTED
    if not pool.proxy_ids:
        return f"no tunnel to any proxy (dialling {pool.address})"
    return None


def _agent_pool(service: Any) -> TunnelAgentPool | None:
    """The agent pool of a node, db or kube component (``node.tunnel`` or
    ``service.tunnel``, set when it starts)."""
    for part in ("node", "service"):
        pool = getattr(getattr(service, part, None), "tunnel", None)
        if isinstance(pool, TunnelAgentPool):
            return pool
    return None


def _gitops_service_class() -> type[GitOpsService]:
    from limen.gitops.sync_service import GitOpsService

    return GitOpsService


async def _gitops(service: GitOpsService) -> str | None:
    from limen.gitops.sync import Outcome

    if not service.leading:
        return None  # another auth replica syncs; this one is ready to take over
    sync = service.sync
    if sync.polled is None:
        return "no sync attempted yet"
    when, outcome = sync.polled
    late = time.monotonic() - when - 2 * sync.interval
    if not sync.running or late > 5:
        return f"the sync has not polled for {time.monotonic() - when:.0f}s " \
               f"(interval {sync.interval:g}s)"
    last = sync.status.last_attempt
    if outcome is Outcome.FAILED and last is not None and last.errors:
        return f"the last sync failed: {last.errors[0]}"
    if last is not None and not last.ok and last.errors:
        return f"commit {last.revision.short if last.revision else '?'} was rejected " \
               f"({last.errors[0]}); the previous one stays live"
    return None
