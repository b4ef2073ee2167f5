"""Builds the components one ``limen start`` process runs, from its settings' roles.

In the single-node default (auth, proxy, node) every component gets its credentials from the
auth server in the same process; agents started apart join with a token (the agents issue).
Called by ``limen.cli.limen``; the daemon loop itself is ``limen.cli.daemon``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from limen.auth.service import AuthService
from limen.backend.factory import open_backend
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.cli.daemon import Service
from limen.config import Settings
from limen.errors import BadParameter
from limen.events.filelog import FileLog
from limen.files import private_dir
from limen.gitops.service import GitOpsService
from limen.proxy.service import ProxyService

__all__ = ["cluster_services"]


@asynccontextmanager
async def cluster_services(settings: Settings) -> AsyncIterator[list[Service]]:
    """The services to start in order; the shared backend and audit log close afterwards."""
    if "auth" not in settings.roles:
        raise BadParameter("this version runs auth in every process: include 'auth' in --roles")
    backend = open_backend(settings.data_dir)
    log = FileLog(private_dir(settings.data_dir / "log") / "events")
    try:
        auth = AuthService(settings, backend, log)
        services: list[Service] = [auth]
        if settings.gitops.source:
            services.append(GitOpsService(settings, auth))
        if "proxy" in settings.roles:

            async def proxy_credentials(names: list[str]) -> HostCredentials:
                return auth.issue_local_credentials(SystemRole.PROXY, names)

            proxy = ProxyService(settings, proxy_credentials, lambda: auth.address)
            services.append(proxy)
            services.append(_ProxyRegistration(auth, proxy))
        yield services
    finally:
        log.close()
        await backend.close()


class _ProxyRegistration:
    """Records the proxy's public address in auth (sign-up links are built from it)."""

    name = "proxy-registration"

    def __init__(self, auth: AuthService, proxy: ProxyService) -> None:
        self.auth, self.proxy = auth, proxy

    async def start(self) -> dict[str, str]:
        public = self.auth.settings.cluster.public_address or self.proxy.web_address
        await self.auth.server.set_proxy_address(public)
        return {}

    async def stop(self) -> None:
        return None
