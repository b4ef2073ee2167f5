"""The proxy as ``limen start`` runs it: its SSH front and tunnel server, its database fronts
(PostgreSQL, MySQL), its Kubernetes front, then its web listener (which routes to all of them;
its ping names the kube front's server name there, ``kube_server_name``, and, when
``listeners.tunnel`` is empty, the reverse tunnel there: ``tunnel: tls://<web>``).

One class for both ways a proxy gets its identity and reaches auth: beside auth in the same
process (credentials issued directly; it records its public address in auth, which builds
sign-up links from it) or apart from auth (``--roles proxy``: credentials from
``limen.agents.joining``, the auth API at ``join.auth_server``). Called by
``limen.cli.compose`` and ``limen.cli.compose_remote``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from limen.auth.client import AuthClient
from limen.ca.host_credentials import HostCredentials
from limen.config import Settings
from limen.diag.metrics import Metrics
from limen.errors import NotFound
from limen.events.emitter import Emitter
from limen.net.ssh_tls_wire import ALPN_SSH
from limen.net.tunnel_address import ALPN_TUNNEL, TLS_PREFIX
from limen.proxy.app.app_audit import AppAudit
from limen.proxy.app.app_front import AppFront
from limen.proxy.app.app_route import AppRouter
from limen.proxy.db.db_proxy_service import DBProxyService
from limen.proxy.db.db_route import DBRouter
from limen.proxy.kube.kube_front import KubeProxyService
from limen.proxy.kube.kube_route import KubeRouter
from limen.proxy.proxy_service import ProxyService
from limen.proxy.ssh_tls_route import SSHTLSRoute
from limen.proxy.sshproxy import ProxySSHService
from limen.proxy.webui.web_locks import WebLocks

__all__ = ["ProxyComponent"]


class ProxyComponent:
    name = "proxy"

    def __init__(self, settings: Settings, emitter: Emitter,
                 credentials: Callable[[], Awaitable[HostCredentials]],
                 auth_address: Callable[[], str], *,
                 register_address: Callable[[str], Awaitable[None]] | None = None,
                 metrics: Metrics | None = None) -> None:
        """``metrics``: the process's; the tunnel server reports its agents there."""
        self.settings, self.emitter = settings, emitter
        self.metrics = metrics
        self._credentials = credentials
        self._auth_address = auth_address
        self._register = register_address
        self.client: AuthClient | None = None
        self.ssh: ProxySSHService | None = None
        self.db: DBProxyService | None = None
        self.kube: KubeProxyService | None = None
        self.web: ProxyService | None = None
        self.ssh_route: SSHTLSRoute | None = None
        self.apps: AppFront | None = None
        self.listeners: dict[str, str] = {}

    def routers(self) -> tuple[DBRouter | None, KubeRouter | None]:
        """The db and kube routers once started (the leaf side of trusted clusters routes
        root users' sessions through them: ``limen.proxy.trust_leaf_resources``)."""
        return (self.db.router if self.db is not None else None,
                self.kube.router if self.kube is not None else None)

    async def _leaf_listing(self, kind: str, leaf: str, der: bytes, remote_addr: str
                            ) -> list[dict[str, Any]]:
        db, kube = self.routers()
        router = db if kind == "db" else kube
        if router is None:
            raise NotFound(f"this proxy serves no {kind} access")
        return await router.leaves.listing(der, leaf, remote_addr)

    async def auth_client(self) -> AuthClient:
        assert self.client is not None, "the proxy is not started"
        return self.client

    async def start(self) -> dict[str, str]:
        try:
            return await self._start()
        except BaseException:  # what started stops (listeners, the auth client's pool)
            await self.stop()
            raise

    async def _start(self) -> dict[str, str]:
        creds = await self._credentials()
        self.client = AuthClient(self._auth_address(), creds)
        self.ssh = ProxySSHService(self.settings, creds, self.client, self.emitter,
                                   auth_address=self._auth_address,
                                   tunnel_options={"metrics": self.metrics})
        self.listeners = await self.ssh.start()
        self.db = DBProxyService(creds, self.ssh.tunnel, self.ssh.view, self.emitter,
                                 postgres=self.settings.listeners.postgres,
                                 mysql=self.settings.listeners.mysql)
        self.listeners.update(await self.db.start())
        self.kube = KubeProxyService(creds, self.ssh.tunnel, self.ssh.view, self.emitter,
                                     address=self.settings.listeners.kube)
        self.listeners.update(await self.kube.start())
        kube_name, kube_route = self.kube.sni_route()
        self.web = ProxyService(self.settings, creds, self.client,
                                extra_ping=lambda: {**self.listeners,
                                                    "tunnel": self._agents_tunnel(),
                                                    "kube_server_name": kube_name},
                                emitter=self.emitter)
        self.apps = AppFront(AppRouter(creds, self.ssh.tunnel, self.ssh.view, self._public),
                             AppAudit(self.emitter), self._public)
        self.web.web_extensions = (self.apps.install,)
        self.web.web_locks = WebLocks(self.ssh.view.locks, self.ssh.view.roles)
        self.web.leaf_listing = self._leaf_listing
        self.ssh_route = SSHTLSRoute(self.ssh.connector)
        self.web.alpn_routes = {ALPN_SSH: self.ssh_route.protocol,
                                ALPN_TUNNEL: self.ssh.tunnel.protocol,
                                **self.db.tls_routes.routes(), **self.kube.alpn_routes()}
        self.web.sni_routes = {kube_name: kube_route}
        self.listeners.update(await self.web.start())
        if not self.listeners["tunnel"]:  # one port: agents (these too) tunnel through it
            await self.ssh.announce_web_port(self.listeners["web"])
            self.listeners["tunnel"] = self._agents_tunnel()
        if self._register is not None:
            await self._register(self.settings.cluster.public_address or self.listeners["web"])
        return dict(self.listeners)

    async def use_credentials(self, credentials: HostCredentials) -> None:
        """The SSH parts (front, tunnel, SSH route) follow a CA rotation
        (``limen.agents.host_cert_renewal``)."""
        if self.ssh is not None:
            await self.ssh.use_credentials(credentials)
        if self.ssh_route is not None:
            self.ssh_route.use_credentials(credentials)

    def _agents_tunnel(self) -> str:
        """The tunnel as the ping names it: its listener, else the web port through TLS
        routing (``tls://``, :mod:`limen.net.tunnel_address`)."""
        if self.listeners.get("tunnel") or self.web is None:
            return self.listeners.get("tunnel", "")
        return TLS_PREFIX + self.web.web_address

    def _public(self) -> str:
        """The proxy's public address (apps are ``<name>.<its host>`` by default)."""
        return self.settings.cluster.public_address or self.listeners.get("web", "")

    async def stop(self) -> None:
        for part in (self.web, self.kube, self.db, self.ssh):
            if part is not None:
                await part.stop()
            if part is self.web and self.ssh_route is not None:
                await self.ssh_route.stop()
        if self.apps is not None:
            await self.apps.aclose()
        if self.client is not None:
            await self.client.close()
