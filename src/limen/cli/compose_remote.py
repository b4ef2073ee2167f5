"""The components of a ``limen start`` process without the auth role::

    --roles node  --proxy HOST:PORT [--token T --ca-pin P] [--labels k=v]
        join through the proxy (or reuse DATA_DIR/host) ─▶ ask the proxy for its tunnel port
        ─▶ node agent: SSH server + reverse tunnel; through the tunnel, its route to auth
           serves role lookups (RBAC per session), audit events (DATA_DIR/log/outbox first)
           and recording uploads (retried until auth has them)

    --roles db  --proxy HOST:PORT [--token T --ca-pin P]
        join through the proxy (or reuse DATA_DIR/host) ─▶ db agent: reverse tunnel serving
           the db Resources its selectors match; through the tunnel, auth for roles,
           Resources, upstream certificates and audit events (outbox)

    --roles kube  --proxy HOST:PORT [--token T --ca-pin P]
        join through the proxy (or reuse DATA_DIR/host) ─▶ kube agent: reverse tunnel serving
           the kube Resources its selectors match (and kube.clusters); through the tunnel,
           auth for roles, Resources and audit events (outbox)

    --roles app  --proxy HOST:PORT [--token T --ca-pin P]
        join through the proxy (or reuse DATA_DIR/host) ─▶ app agent: reverse tunnel serving
           the app Resources its selectors match (and app.apps); through the tunnel, auth
           for roles, Resources and audit events (outbox)

    --roles proxy --auth-server HOST:PORT [--auth-join HOST:PORT] [--token T --ca-pin P]
        join at auth's join listener (--auth-join, default: the --auth-server port + 2;
        no client certificate, limen.auth.http.join_listener) or reuse DATA_DIR/host ─▶ SSH
        front, tunnel server, web, calling the auth API at --auth-server with the
        certificate from the join (mutual TLS); its audit events go through the same
        outbox; on a leaf, its links to the root clusters

Both follow auth's trust answer (``limen.trust.roots_poller.RemoteTrustCache``; the agents'
is pushed by their proxies over the tunnel, signed by auth, and polled only without pushes): the
node trusts the enabled root clusters' user CAs and maps their users' roles (and follows its
own user CA); the proxy runs ``LeafLinks`` to those roots, as the proxy beside auth does. The
db and kube agents follow it too: on a leaf they accept the trusted roots' users, verified
against the roots' TLS CAs and mapped by role_map (``limen.agents.root_users``). Both follow a CA
rotation of their own cluster without a restart (``limen.agents.host_cert_renewal``: new CA
keys trusted, the host certificate renewed and presented to new connections); so do the db,
kube and app agents, whose tunnel agents present the renewed certificate.

Called by ``limen.cli.compose.cluster_services``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial

from limen.agents.app.app_service import AppService
from limen.agents.audit_outbox import AuditOutbox
from limen.agents.auth_link import AuthLink
from limen.agents.db.db_service import DBService
from limen.agents.host_cert_renewal import HostCertRenewal, remote_renewal
from limen.agents.joining import credentials_dir, load_or_join, tunnel_address
from limen.agents.kube.kube_service import KubeService
from limen.agents.lock_feed import AuthLockFeed
from limen.agents.node.config import NodeServerConfig
from limen.agents.node.dynamic_labels import DynamicLabels
from limen.agents.node.node_service import NodeService
from limen.agents.node.policy import StoreAccessPolicy
from limen.agents.node.remote_roles import AuthRoleLookup
from limen.agents.recording_upload import AuthRecordingSink
from limen.agents.root_users import user_trust
from limen.agents.session_locks import SessionLockGuard
from limen.aio.backoff import keep_trying
from limen.aio.task_service import Service
from limen.aio.tasks import cancel_and_wait
from limen.api.resources import Resource
from limen.auth.auth_service import host_uuid
from limen.auth.client import AuthClient
from limen.auth.host_names import configured_proxy_names
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.cli.proxy_component import ProxyComponent
from limen.config import Settings
from limen.diag.metrics import Metrics
from limen.errors import BadParameter, ConnectionProblem
from limen.events.emitter import Emitter
from limen.files import private_dir
from limen.proxy.trust_leaf_links import LeafLinks
from limen.recording.sink import sessions_dir
from limen.services.locks import LockView
from limen.trust.cache import trusted_role_map
from limen.trust.push_audit import PushRefusalAudit
from limen.trust.roots_poller import RemoteTrustCache
from limen.tunnel.agent_pool import TunnelAgentPool

log = logging.getLogger(__name__)

__all__ = ["remote_services"]


@asynccontextmanager
async def remote_services(settings: Settings,
                          metrics: Metrics | None = None) -> AsyncIterator[list[Service]]:
    """``metrics``: the process's (a proxy's tunnel server and a node's trust answers report
    to it)."""
    roles = set(settings.roles)
    if roles == {"node"}:
        yield [_RemoteNode(settings, metrics)]
    elif roles == {"proxy"}:
        yield [_RemoteProxy(settings, metrics)]
    elif roles == {"db"}:
        yield [_RemoteDB(settings)]
    elif roles == {"kube"}:
        yield [_RemoteKube(settings)]
    elif roles == {"app"}:
        yield [_RemoteApp(settings)]
    else:
        raise BadParameter("without auth, run one role per process (node, db, kube, app or "
                           "proxy), not "
                           f"{','.join(settings.roles)}")


def _outbox(settings: Settings, client: Callable[[], Awaitable[AuthClient]]) -> AuditOutbox:
    return AuditOutbox(private_dir(settings.data_dir / "log") / "outbox", client)


def _pushed_to(trust: RemoteTrustCache, attach: Callable[[TunnelAgentPool], Awaitable[None]]
               ) -> Callable[[TunnelAgentPool], Awaitable[None]]:
    """An agent's ``on_tunnel``: its tunnels ask for auth's signed trust answer, which the
    proxies push (``limen.proxy.trust_push``) and ``trust`` checks; then ``attach``."""
    async def on_tunnel(pool: TunnelAgentPool) -> None:
        pool.use_settings(replace(
            pool.settings, on_trust=lambda message, proxy: trust.pushed(message.doc, proxy)))
        await attach(pool)

    return on_tunnel


class _TunnelRotation:
    """A db, kube or app agent follows a CA rotation: auth's trust answer pushed by the proxies
    (:meth:`on_tunnel`; polled without pushes), the host certificate renewed
    (``limen.agents.host_cert_renewal``) and used by its tunnel agents. Refused pushes are
    audited through ``emitter``."""

    def __init__(self, settings: Settings, client: Callable[[], Awaitable[AuthClient]],
                 creds: HostCredentials, tunnel: Callable[[], TunnelAgentPool | None],
                 emitter: Emitter) -> None:
        self.refusals = PushRefusalAudit(emitter, creds.cluster, creds.host_id)
        self.trust = RemoteTrustCache(client, creds.cluster, creds.user_ca_keys,
                                      creds.host_ca_keys, tls_ca_pem=creds.tls_ca_pem,
                                      on_refused=self.refusals)

        async def follow(new: HostCredentials) -> None:
            pool = tunnel()
            if pool is not None:
                pool.use_credentials(new)

        self.renewal = HostCertRenewal(self.trust, remote_renewal(client), creds,
                                       credentials_dir(settings.data_dir), [follow])

    def on_tunnel(self, attach: Callable[[TunnelAgentPool], Awaitable[None]]
                  ) -> Callable[[TunnelAgentPool], Awaitable[None]]:
        return _pushed_to(self.trust, attach)

    async def start(self) -> None:
        await self.trust.start()
        await self.renewal.start()

    async def stop(self) -> None:
        await self.renewal.stop()
        await self.trust.stop()
        await self.refusals.close()


class _RemoteProxy:
    name = "proxy"

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        host_id = host_uuid(private_dir(settings.data_dir))

        async def credentials() -> HostCredentials:
            return await load_or_join(settings, SystemRole.PROXY, host_id,
                                      configured_proxy_names(settings))

        self.outbox = _outbox(settings, lambda: self.proxy.auth_client())
        self.proxy = ProxyComponent(settings, self.outbox, credentials,
                                    lambda: settings.join.auth_server,
                                    register_address=self._register, metrics=metrics)
        self.trust: RemoteTrustCache | None = None
        self.links: LeafLinks | None = None
        self.renewal: HostCertRenewal | None = None
        self._registering: asyncio.Task[None] | None = None

    async def _register(self, address: str) -> None:
        """Tell auth this proxy's public address; while auth cannot take it (down, or its
        backend unreachable) the proxy serves anyway and keeps trying in the background."""
        try:
            await self._post_address(address)
        except ConnectionProblem as err:
            log.warning("proxy: auth cannot register this proxy's address yet (%s); "
                        "serving meanwhile and trying again", err)
            self._registering = asyncio.create_task(self._register_later(address),
                                                    name="proxy-address")

    async def _post_address(self, address: str) -> None:
        client = await self.proxy.auth_client()
        await client.call("POST", "/v1/proxy/address", {"address": address})

    async def _register_later(self, address: str) -> None:
        await keep_trying(partial(self._post_address, address), (ConnectionProblem,))
        log.info("proxy: auth registered this proxy's address %s", address)

    async def start(self) -> dict[str, str]:
        if not self.settings.join.auth_server:
            raise BadParameter("a proxy started apart from auth needs --auth-server HOST:PORT")
        listeners = await self.proxy.start()
        await self.outbox.start()
        assert self.proxy.ssh is not None
        creds = self.proxy.ssh.credentials
        self.trust = RemoteTrustCache(self.proxy.auth_client, creds.cluster, creds.user_ca_keys,
                                      creds.host_ca_keys)
        self.links = LeafLinks(self.trust, lambda: self.proxy.ssh, self.outbox)
        self.renewal = HostCertRenewal(self.trust, remote_renewal(self.proxy.auth_client), creds,
                                       credentials_dir(self.settings.data_dir),
                                       [self.proxy.use_credentials])
        await self.trust.start()
        await self.links.start()
        await self.renewal.start()
        return listeners

    async def stop(self) -> None:
        await cancel_and_wait(self._registering)
        for part in (self.renewal, self.links, self.trust):
            if part is not None:
                await part.stop()
        await self.outbox.stop()
        await self.proxy.stop()


class _RemoteNode:
    name = "node"

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.node: NodeService | None = None
        self.link: AuthLink | None = None
        self.outbox: AuditOutbox | None = None
        self.trust: RemoteTrustCache | None = None
        self.renewal: HostCertRenewal | None = None
        self.locks: AuthLockFeed | None = None
        self.refusals: PushRefusalAudit | None = None
        self._retry: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, str]:
        settings = self.settings
        if not settings.join.proxy:
            raise BadParameter("a node started apart from auth needs --proxy HOST:PORT (the "
                               "proxy's web address)")
        host_id = host_uuid(private_dir(settings.data_dir))
        creds = await load_or_join(settings, SystemRole.NODE, host_id)
        tunnel = await tunnel_address(settings.join.proxy, creds)
        self.link = link = AuthLink(creds)
        self.outbox = _outbox(settings, link.client)
        sink = AuthRecordingSink(link)
        labels = DynamicLabels(settings.node.labels, settings.node.commands)
        self.refusals = refusals = PushRefusalAudit(self.outbox, creds.cluster, creds.host_id)
        self.trust = trust = RemoteTrustCache(link.client, creds.cluster, creds.user_ca_keys,
                                              creds.host_ca_keys, tls_ca_pem=creds.tls_ca_pem,
                                              on_refused=refusals, metrics=self.metrics)

        self.locks = AuthLockFeed(link.client, LockView())
        config = NodeServerConfig(credentials=creds, labels=settings.node.labels,
                                  data_dir=settings.data_dir,
                                  sftp_server=settings.node.sftp_server or None,
                                  locks=self.locks.view)
        self.node = NodeService(
            config, settings.listeners.node_ssh, trust.ssh_user_trust,
            StoreAccessPolicy(AuthRoleLookup(link), labels.current, cluster=creds.cluster,
                              map_roles=trusted_role_map(trust), locks=self.locks.view,
                              server_names=(creds.host_id, creds.hostname)),
            self.outbox, sink, lambda: tunnel, labels=labels,
            on_tunnel=_pushed_to(trust, link.attach))
        await self.outbox.start()
        listeners = await self.node.start()
        await trust.start()
        node = self.node

        async def follow(new: HostCredentials) -> None:
            await node.server.use_credentials(new)
            if node.tunnel is not None:
                node.tunnel.use_credentials(new)

        self.renewal = HostCertRenewal(trust, remote_renewal(link.client), creds,
                                       credentials_dir(settings.data_dir), [follow])
        await self.renewal.start()
        self.locks.start()
        self._retry = asyncio.create_task(sink.retry_forever(sessions_dir(settings.data_dir)),
                                          name="recording uploads")
        return listeners

    async def stop(self) -> None:
        if self.locks is not None:
            await self.locks.stop()
        if self.renewal is not None:
            await self.renewal.stop()
        if self.trust is not None:
            await self.trust.stop()
        if self.refusals is not None:
            await self.refusals.close()
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self.node is not None:
            await self.node.stop()
        if self.outbox is not None:
            await self.outbox.stop()
        if self.link is not None:
            await self.link.close()


class _RemoteDB:
    """A db agent apart from auth: joins through the proxy (or reuses DATA_DIR/host), reaches
    auth only through its tunnel (roles, the db Resources it serves, its upstream
    certificates, audit events through the outbox)."""

    name = "db"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service: DBService | None = None
        self.link: AuthLink | None = None
        self.outbox: AuditOutbox | None = None
        self.locks: AuthLockFeed | None = None
        self.rotation: _TunnelRotation | None = None

    async def start(self) -> dict[str, str]:
        settings = self.settings
        if not settings.join.proxy:
            raise BadParameter("a db agent needs --proxy HOST:PORT (the proxy's web address)")
        host_id = host_uuid(private_dir(settings.data_dir))
        creds = await load_or_join(settings, SystemRole.DB, host_id)
        tunnel = await tunnel_address(settings.join.proxy, creds)
        self.link = link = AuthLink(creds)
        self.outbox = _outbox(settings, link.client)

        async def issue(db_user: str, public_key: str) -> tuple[bytes, bytes]:
            answer = await (await link.client()).call(
                "POST", "/v1/db/upstream-certs", {"db_user": db_user, "public_key": public_key})
            return str(answer["cert"]).encode(), str(answer["ca"]).encode()

        async def resources() -> list[Resource]:
            docs = await (await link.client()).list("resource")
            return [Resource.from_document(d) for d in docs]

        self.locks = locks = AuthLockFeed(link.client, LockView())
        self.rotation = rotation = _TunnelRotation(
            settings, link.client, creds, lambda: self.service.tunnel if self.service else None,
            self.outbox)
        policy = StoreAccessPolicy(AuthRoleLookup(link), {}, cluster=creds.cluster,
                                   map_roles=trusted_role_map(rotation.trust),
                                   locks=locks.view,
                                   server_names=(creds.host_id, creds.hostname))
        self.service = DBService.configured(
            creds, settings.db, resources, issue, policy, self.outbox, lambda: tunnel,
            on_tunnel=rotation.on_tunnel(link.attach), guard=SessionLockGuard(policy, locks.view),
            signer=lambda: rotation.trust.rotation_mark("db"))
        self.service.user_trust = partial(user_trust, creds, rotation.trust)  # leaf: root users
        await self.outbox.start()
        listeners = await self.service.start()
        locks.start()
        await rotation.start()
        return listeners

    async def stop(self) -> None:
        if self.rotation is not None:
            await self.rotation.stop()
        if self.locks is not None:
            await self.locks.stop()
        if self.service is not None:
            await self.service.stop()
        if self.outbox is not None:
            await self.outbox.stop()
        if self.link is not None:
            await self.link.close()


class _RemoteKube:
    """A kube agent apart from auth: joins through the proxy (or reuses DATA_DIR/host),
    reaches auth only through its tunnel (roles, the kube Resources it serves, audit events
    through the outbox)."""

    name = "kube"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service: KubeService | None = None
        self.link: AuthLink | None = None
        self.outbox: AuditOutbox | None = None
        self.locks: AuthLockFeed | None = None
        self.rotation: _TunnelRotation | None = None
        self._retry: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, str]:
        settings = self.settings
        if not settings.join.proxy:
            raise BadParameter("a kube agent needs --proxy HOST:PORT (the proxy's web address)")
        host_id = host_uuid(private_dir(settings.data_dir))
        creds = await load_or_join(settings, SystemRole.KUBE, host_id)
        tunnel = await tunnel_address(settings.join.proxy, creds)
        self.link = link = AuthLink(creds)
        self.outbox = _outbox(settings, link.client)

        async def resources() -> list[Resource]:
            docs = await (await link.client()).list("resource")
            return [Resource.from_document(d) for d in docs]

        sink = AuthRecordingSink(link)
        self.locks = locks = AuthLockFeed(link.client, LockView())
        self.rotation = rotation = _TunnelRotation(
            settings, link.client, creds, lambda: self.service.tunnel if self.service else None,
            self.outbox)
        policy = StoreAccessPolicy(AuthRoleLookup(link), {}, cluster=creds.cluster,
                                   map_roles=trusted_role_map(rotation.trust),
                                   locks=locks.view,
                                   server_names=(creds.host_id, creds.hostname))
        self.service = KubeService.configured(
            creds, settings.kube, settings.kube_secrets_dir, resources, policy, self.outbox,
            lambda: tunnel, on_tunnel=rotation.on_tunnel(link.attach),
            sessions_dir=sessions_dir(settings.data_dir), recordings=sink,
            guard=SessionLockGuard(policy, locks.view))
        self.service.user_trust = partial(user_trust, creds, rotation.trust)  # leaf: root users
        await self.outbox.start()
        listeners = await self.service.start()
        locks.start()
        await rotation.start()
        self._retry = asyncio.create_task(sink.retry_forever(sessions_dir(settings.data_dir)),
                                          name="recording uploads")
        return listeners

    async def stop(self) -> None:
        if self.rotation is not None:
            await self.rotation.stop()
        if self.locks is not None:
            await self.locks.stop()
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self.service is not None:
            await self.service.stop()
        if self.outbox is not None:
            await self.outbox.stop()
        if self.link is not None:
            await self.link.close()


class _RemoteApp:
    """An app agent apart from auth: joins through the proxy (or reuses DATA_DIR/host),
    reaches auth only through its tunnel (roles, the app Resources it serves, audit events
    through the outbox)."""

    name = "app"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service: AppService | None = None
        self.link: AuthLink | None = None
        self.outbox: AuditOutbox | None = None
        self.rotation: _TunnelRotation | None = None

    async def start(self) -> dict[str, str]:
        settings = self.settings
        if not settings.join.proxy:
            raise BadParameter("an app agent needs --proxy HOST:PORT (the proxy's web address)")
        host_id = host_uuid(private_dir(settings.data_dir))
        creds = await load_or_join(settings, SystemRole.APP, host_id)
        tunnel = await tunnel_address(settings.join.proxy, creds)
        self.link = link = AuthLink(creds)
        self.outbox = _outbox(settings, link.client)

        async def resources() -> list[Resource]:
            docs = await (await link.client()).list("resource")
            return [Resource.from_document(d) for d in docs]

        self.rotation = rotation = _TunnelRotation(
            settings, link.client, creds, lambda: self.service.tunnel if self.service else None,
            self.outbox)
        self.service = AppService.configured(
            creds, settings.app, resources,
            StoreAccessPolicy(AuthRoleLookup(link), {}, cluster=creds.cluster), self.outbox,
            lambda: tunnel, on_tunnel=rotation.on_tunnel(link.attach))
        await self.outbox.start()
        listeners = await self.service.start()
        await rotation.start()
        return listeners

    async def stop(self) -> None:
        if self.rotation is not None:
            await self.rotation.stop()
        if self.service is not None:
            await self.service.stop()
        if self.outbox is not None:
            await self.outbox.stop()
        if self.link is not None:
            await self.link.close()
