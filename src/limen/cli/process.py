"""Builds the components one ``limen start`` process runs, from its settings' roles::

    auth ─▶ gitops (if --gitops) ─▶ trusted clusters ─▶ proxy: SSH front + tunnel server,
                                                         then web ─▶ node agent (dials the tunnel)

In the single-node default (auth, proxy, node) every component gets its credentials from the
auth server in the same process, and the node is reached through its reverse tunnel exactly as
a remote one would be. The trusted cluster reconciler (``limen.trust``) keeps the root clusters'
user CAs and role maps this cluster trusts; the local node verifies and maps root users with
them. Called by ``limen.cli.limen``; the daemon loop is ``limen.cli.daemon``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

from limen.agents.node.config import NodeServerConfig
from limen.agents.node.policy import StoreAccessPolicy
from limen.agents.node.service import NodeService
from limen.auth.client import AuthClient
from limen.auth.service import AuthService
from limen.backend.factory import open_backend
from limen.ca.authority import CertAuthorityType, ssh_trust_map
from limen.ca.identity import SystemRole
from limen.ca.keys import PublicKey
from limen.cli.daemon import Service
from limen.config import Settings
from limen.errors import BadParameter
from limen.events.emitter import Emitter
from limen.events.filelog import FileLog
from limen.files import private_dir
from limen.gitops.service import GitOpsService
from limen.proxy.service import ProxyService, proxy_names
from limen.proxy.sshproxy import ProxySSHService
from limen.recording.sink import LocalDirectorySink, recordings_dir
from limen.trust.cache import TrustCache, trusted_role_map
from limen.trust.reconciler import TrustedClusterReconciler

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
        trust = TrustedClusterReconciler(auth.server)
        services.append(trust)
        proxy = _LocalProxy(settings, auth, log) if "proxy" in settings.roles else None
        if proxy is not None:
            services.append(proxy)
        if "node" in settings.roles:
            if proxy is None:
                raise BadParameter("a node in the auth process needs the proxy role too")
            services.append(_LocalNode(settings, auth, log, proxy, trust.cache))
        yield services
    finally:
        log.close()
        await backend.close()


class _LocalProxy:
    """The proxy's SSH front and tunnel server, then its web listener; records the public
    address in auth (sign-up links are built from it)."""

    name = "proxy"

    def __init__(self, settings: Settings, auth: AuthService, emitter: Emitter) -> None:
        self.settings, self.auth, self.emitter = settings, auth, emitter
        self.client: AuthClient | None = None
        self.ssh: ProxySSHService | None = None
        self.web: ProxyService | None = None
        self.listeners: dict[str, str] = {}

    async def start(self) -> dict[str, str]:
        creds = self.auth.issue_local_credentials(SystemRole.PROXY, proxy_names(self.settings))
        self.client = AuthClient(self.auth.address, creds)
        self.ssh = ProxySSHService(self.settings, creds, self.client, self.emitter,
                                   auth_address=lambda: self.auth.address)
        self.listeners = await self.ssh.start()
        self.web = ProxyService(self.settings, creds, self.client,
                                extra_ping=lambda: dict(self.listeners))
        self.listeners.update(await self.web.start())
        public = self.settings.cluster.public_address or self.listeners["web"]
        await self.auth.server.set_proxy_address(public)
        return dict(self.listeners)

    async def stop(self) -> None:
        for part in (self.web, self.ssh):
            if part is not None:
                await part.stop()
        if self.client is not None:
            await self.client.close()


class _LocalNode:
    """A node agent for this machine, with credentials from the auth server beside it; it
    reaches the proxy through the reverse tunnel like any remote agent. It trusts the user CAs
    of this cluster and of the enabled trusted root clusters, mapping root users' roles."""

    name = "node"

    def __init__(self, settings: Settings, auth: AuthService, emitter: Emitter,
                 proxy: _LocalProxy, trusted: TrustCache) -> None:
        self.settings, self.auth, self.emitter, self.proxy = settings, auth, emitter, proxy
        self.trusted = trusted
        self.node: NodeService | None = None

    async def start(self) -> dict[str, str]:
        server = self.auth.server
        hostname = socket.gethostname().split(".")[0].lower()
        creds = self.auth.issue_local_credentials(
            SystemRole.NODE, [f"{hostname}.{server.cluster_name}", "localhost", "127.0.0.1"])
        config = NodeServerConfig(credentials=creds, labels=self.settings.node.labels,
                                  data_dir=self.settings.data_dir)

        def trust() -> Mapping[str, Sequence[PublicKey]]:
            return ssh_trust_map([server.authorities.get(CertAuthorityType.USER),
                                  *self.trusted.user_cas()], CertAuthorityType.USER)

        self.node = NodeService(
            config, self.settings.listeners.node_ssh, trust,
            StoreAccessPolicy(server.store, self.settings.node.labels,
                              cluster=server.cluster_name,
                              map_roles=trusted_role_map(self.trusted)),
            self.emitter, LocalDirectorySink(recordings_dir(self.settings.data_dir)),
            tunnel_address=lambda: self.proxy.listeners["tunnel"])
        return await self.node.start()

    async def stop(self) -> None:
        if self.node is not None:
            await self.node.stop()
