"""Builds the components one ``limen start`` process runs, from its settings' roles::

    auth ─▶ gitops (if --gitops) ─▶ trusted clusters ─▶ proxy: SSH front + tunnel server,
                                                         then web ─▶ node agent (dials the tunnel)

In the single-node default (auth, proxy, node) every component gets its credentials from the
auth server in the same process, and the node is reached through its reverse tunnel exactly as
a remote one would be. The trusted cluster reconciler (``limen.trust``) keeps the root clusters'
user CAs and role maps this cluster trusts; the local node verifies and maps root users with
them. Called by ``limen.cli.limen``; the daemon loop is ``limen.cli.daemon``. Without the auth
role (a proxy or a node agent started apart from auth) the components come from
``limen.cli.compose_remote``.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

from limen.agents.node.config import NodeServerConfig
from limen.agents.node.node_service import NodeService
from limen.agents.node.policy import StoreAccessPolicy
from limen.agents.root_users import user_trust
from limen.agents.session_locks import SessionLockGuard
from limen.aio.task_service import Service
from limen.api.resources import Kind, Resource
from limen.auth.audit_signer import audit_signer_source
from limen.auth.auth_service import AuthService, host_uuid
from limen.auth.host_names import configured_proxy_names
from limen.auth.recordings import recording_store
from limen.auth.rotation_declared import ROTATION_LEASE_KEY, DeclaredRotation
from limen.backend.base import Backend
from limen.backend.factory import open_backend
from limen.backend.postgres_dsn import backend_options
from limen.ca.authority import CertAuthorityType, ssh_trust_map
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import PublicKey, load_public_key
from limen.cli.compose_rotation import LocalRotation
from limen.cli.datadir_lock import hold_data_dir
from limen.cli.proxy_component import ProxyComponent
from limen.config import Settings
from limen.diag.metrics import Metrics
from limen.errors import BadParameter
from limen.events.emitter import Emitter
from limen.events.factory import AuditLog, open_audit_log
from limen.proxy.trust_leaf_links import LeafLinks
from limen.recording.sink import recordings_dir, sessions_dir
from limen.services.leadership import Leadership, replica_leadership
from limen.trust.cache import TrustCache, trusted_role_map
from limen.trust.reconciler import TRUST_LEASE_KEY, TrustedClusterReconciler
from limen.trust.root_locks import RootLocks
from limen.trust.secrets import SecretSource

if TYPE_CHECKING:  # the agents of the optional roles and the Git sync are imported as they start
    from limen.agents.app.app_service import AppService
    from limen.agents.db.db_service import DBService
    from limen.agents.kube.kube_service import KubeService

__all__ = ["cluster_services"]


@asynccontextmanager
async def cluster_services(settings: Settings,
                           metrics: Metrics | None = None) -> AsyncIterator[list[Service]]:
    """The services to start in order, while this process holds the data directory (one
    ``limen start`` per directory: ``limen.cli.datadir_lock``, taken before anything in it
    is opened). ``metrics``: the process's, which its components report to."""
    with hold_data_dir(settings.data_dir):
        async with _services(settings, metrics) as services:
            yield services


@asynccontextmanager
async def _services(settings: Settings, metrics: Metrics | None) -> AsyncIterator[list[Service]]:
    """The services to start in order; the shared backend and audit log close afterwards."""
    if "auth" not in settings.roles:
        from limen.cli.compose_remote import remote_services

        async with remote_services(settings, metrics) as remote:
            yield remote
        return
    options = backend_options(settings.backend)
    backend: Backend = open_backend(settings.data_dir, **options)
    log: AuditLog = open_audit_log(settings.data_dir, **options)  # day files, or the database
    if metrics is not None:  # backend latency; what the audit log writes, counted
        from limen.backend.metered import MeteredBackend
        from limen.events.metered import MeteredLog

        backend, log = MeteredBackend(backend, metrics), MeteredLog(log, metrics)
    try:
        auth = AuthService(settings, backend, log)
        log.set_signer(audit_signer_source(auth.server))  # signed checkpoints (events/chain)
        services: list[Service] = [auth]
        if settings.gitops.source:
            from limen.gitops.sync_service import GitOpsService  # GitPython: only with --gitops

            services.append(GitOpsService(settings, auth, metrics=metrics))
        secrets = SecretSource(settings.secrets_dir)
        auth.server.secret_resolver = secrets.resolve  # OIDC connectors' client secrets
        trust = TrustedClusterReconciler(auth.server, secrets=secrets,
                                         leadership=_trust_leadership(settings, auth))
        services.append(trust)
        services.append(DeclaredRotation(  # spec.rotation on the Cluster document
            auth.server, leadership=_replica_leadership(settings, auth, ROTATION_LEASE_KEY,
                                                        "ca-rotation-requests")))
        proxy = _local_proxy(settings, auth, log, metrics) if "proxy" in settings.roles \
            else None
        root_locks = RootLocks()  # the roots' locks on their users: the links feed, all check
        if proxy is not None:
            services.append(proxy)
            services.append(LeafLinks(trust.cache, partial(getattr, proxy, "ssh"), log,
                                      root_locks=root_locks, routers=proxy.routers))
        local_node: _LocalNode | None = None
        if "node" in settings.roles:
            if proxy is None:
                raise BadParameter("a node in the auth process needs the proxy role too")
            local_node = _LocalNode(settings, auth, log, proxy, trust.cache, root_locks)
            services.append(local_node)
        agents: list[_LocalDB | _LocalKube | _LocalApp] = []
        if "db" in settings.roles:
            if proxy is None:
                raise BadParameter("a db agent in the auth process needs the proxy role too")
            agents.append(_LocalDB(settings, auth, log, proxy, trust.cache))
        if "kube" in settings.roles:
            if proxy is None:
                raise BadParameter("a kube agent in the auth process needs the proxy role too")
            agents.append(_LocalKube(settings, auth, log, proxy, trust.cache))
        if "app" in settings.roles:
            if proxy is None:
                raise BadParameter("an app agent in the auth process needs the proxy role too")
            agents.append(_LocalApp(settings, auth, log, proxy))
        services.extend(agents)
        if proxy is not None:  # the proxy and agents follow CA rotations (after they started)
            services.append(LocalRotation(auth.server, proxy,
                                          lambda: local_node.node if local_node else None,
                                          lambda: [a.service for a in agents]))
        yield services
    finally:
        log.close()
        await backend.close()


def _trust_leadership(settings: Settings, auth: AuthService) -> Leadership | None:
    """On PostgreSQL (several auth replicas) one replica at a time joins root clusters."""
    return _replica_leadership(settings, auth, TRUST_LEASE_KEY, "trusted-clusters")


def _replica_leadership(settings: Settings, auth: AuthService, key: str,
                        name: str) -> Leadership | None:
    """On PostgreSQL (several auth replicas) the lease ``key``: one replica at a time does
    the work it gates; None on SQLite (one auth process)."""
    if settings.backend.type != "postgres":
        return None
    holder = f"{host_uuid(settings.data_dir)}/{secrets.token_hex(4)}"
    return replica_leadership(auth.server.backend, key, holder, name=name,
                              clock=auth.server.clock)


def _local_proxy(settings: Settings, auth: AuthService, emitter: Emitter,
                 metrics: Metrics | None) -> ProxyComponent:
    async def credentials() -> HostCredentials:
        return auth.issue_local_credentials(SystemRole.PROXY,
                                            list(configured_proxy_names(settings)))

    return ProxyComponent(settings, emitter, credentials, lambda: auth.address,
                          register_address=auth.server.set_proxy_address, metrics=metrics)


class _LocalNode:
    """A node agent for this machine, with credentials from the auth server beside it; it
    reaches the proxy through the reverse tunnel like any remote agent. It trusts the user CAs
    of this cluster and of the enabled trusted root clusters, mapping root users' roles and
    holding them to their root's locks (``root_locks``, fed by the proxy's cluster links)."""

    name = "node"

    def __init__(self, settings: Settings, auth: AuthService, emitter: Emitter,
                 proxy: ProxyComponent, trusted: TrustCache, root_locks: RootLocks) -> None:
        self.settings, self.auth, self.emitter, self.proxy = settings, auth, emitter, proxy
        self.trusted = trusted
        self.root_locks = root_locks
        self.node: NodeService | None = None

    async def start(self) -> dict[str, str]:
        server = self.auth.server
        nodename = self.settings.node.nodename
        hostname = nodename or socket.gethostname().split(".")[0].lower()
        creds = self.auth.issue_local_credentials(
            SystemRole.NODE, [f"{hostname}.{server.cluster_name}", "localhost", "127.0.0.1"],
            hostname=nodename)
        config = NodeServerConfig(credentials=creds, labels=self.settings.node.labels,
                                  data_dir=self.settings.data_dir,
                                  sftp_server=self.settings.node.sftp_server or None,
                                  locks=server.locks)

        def trust() -> Mapping[str, Sequence[PublicKey]]:
            return ssh_trust_map([server.authorities.get(CertAuthorityType.USER),
                                  *self.trusted.user_cas()], CertAuthorityType.USER)

        self.node = NodeService(
            config, self.settings.listeners.node_ssh, trust,
            StoreAccessPolicy(server.store, self.settings.node.labels,
                              cluster=server.cluster_name,
                              map_roles=trusted_role_map(self.trusted), locks=server.locks,
                              server_names=(creds.host_id, creds.hostname),
                              foreign_locks=self.root_locks.check_login),
            self.emitter, recording_store(server.backend, recordings_dir(self.settings.data_dir)),
            tunnel_address=lambda: self.proxy.listeners["tunnel"])
        return await self.node.start()

    async def stop(self) -> None:
        if self.node is not None:
            await self.node.stop()


class _LocalDB:
    """A db agent in this process: credentials from the auth server beside it, the cluster's
    db Resources from its store, upstream certificates signed directly; reached through the
    reverse tunnel like a remote one."""

    name = "db"

    def __init__(self, settings: Settings, auth: AuthService, emitter: Emitter,
                 proxy: ProxyComponent, trusted: TrustCache) -> None:
        self.settings, self.auth, self.emitter, self.proxy = settings, auth, emitter, proxy
        self.trusted = trusted
        self.service: DBService | None = None

    async def start(self) -> dict[str, str]:
        from limen.agents.db.db_service import DBService
        from limen.agents.db.upstream_tls import ca_mark
        from limen.auth.db_access import issue_upstream_cert

        server = self.auth.server
        hostname = socket.gethostname().split(".")[0].lower()
        creds = self.auth.issue_local_credentials(
            SystemRole.DB, [f"{hostname}-db.{server.cluster_name}", "localhost"],
            hostname=f"{hostname}-db", host_id=f"{host_uuid(self.settings.data_dir)}-db")
        agent = Identity(username=creds.host_id, cluster=server.cluster_name,
                         system_role=SystemRole.DB, host_id=creds.host_id)

        async def issue(db_user: str, public_key: str) -> tuple[bytes, bytes]:
            return await issue_upstream_cert(server, agent, load_public_key(public_key),
                                             db_user)

        async def resources() -> list[Resource]:
            return await server.store.list(Kind.RESOURCE)

        policy = StoreAccessPolicy(server.store, {}, cluster=server.cluster_name,
                                   map_roles=trusted_role_map(self.trusted),
                                   locks=server.locks,
                                   server_names=(creds.host_id, creds.hostname))
        self.service = DBService.configured(
            creds, self.settings.db, resources, issue, policy, self.emitter,
            lambda: self.proxy.listeners["tunnel"],
            guard=SessionLockGuard(policy, server.locks),
            signer=lambda: ca_mark(server.authorities.get(CertAuthorityType.DB)))
        self.service.user_trust = partial(user_trust, creds, self.trusted)
        if self.proxy.db is not None:  # sessions from the proxy beside it skip the tunnel
            self.proxy.db.router.attach_local(creds.host_id, self.service)
        return await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()


class _LocalKube:
    """A kube agent in this process: credentials from the auth server beside it, the
    cluster's kube Resources and roles from its store; reached through the reverse tunnel
    like a remote one."""

    name = "kube"

    def __init__(self, settings: Settings, auth: AuthService, emitter: Emitter,
                 proxy: ProxyComponent, trusted: TrustCache) -> None:
        self.settings, self.auth, self.emitter, self.proxy = settings, auth, emitter, proxy
        self.trusted = trusted
        self.service: KubeService | None = None

    async def start(self) -> dict[str, str]:
        from limen.agents.kube.kube_service import KubeService

        server = self.auth.server
        hostname = socket.gethostname().split(".")[0].lower()
        creds = self.auth.issue_local_credentials(
            SystemRole.KUBE, [f"{hostname}-kube.{server.cluster_name}", "localhost"],
            hostname=f"{hostname}-kube", host_id=f"{host_uuid(self.settings.data_dir)}-kube")

        async def resources() -> list[Resource]:
            return await server.store.list(Kind.RESOURCE)

        policy = StoreAccessPolicy(server.store, {}, cluster=server.cluster_name,
                                   map_roles=trusted_role_map(self.trusted),
                                   locks=server.locks,
                                   server_names=(creds.host_id, creds.hostname))
        self.service = KubeService.configured(
            creds, self.settings.kube, self.settings.kube_secrets_dir, resources, policy,
            self.emitter, lambda: self.proxy.listeners["tunnel"],
            guard=SessionLockGuard(policy, server.locks),
            sessions_dir=sessions_dir(self.settings.data_dir),
            recordings=recording_store(server.backend, recordings_dir(self.settings.data_dir)))
        self.service.user_trust = partial(user_trust, creds, self.trusted)
        return await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()


class _LocalApp:
    """An app agent in this process: credentials from the auth server beside it, the cluster's
    app Resources and roles from its store; reached through the reverse tunnel like a remote
    one."""

    name = "app"

    def __init__(self, settings: Settings, auth: AuthService, emitter: Emitter,
                 proxy: ProxyComponent) -> None:
        self.settings, self.auth, self.emitter, self.proxy = settings, auth, emitter, proxy
        self.service: AppService | None = None

    async def start(self) -> dict[str, str]:
        from limen.agents.app.app_service import AppService

        server = self.auth.server
        hostname = socket.gethostname().split(".")[0].lower()
        creds = self.auth.issue_local_credentials(
            SystemRole.APP, [f"{hostname}-app.{server.cluster_name}", "localhost"],
            hostname=f"{hostname}-app", host_id=f"{host_uuid(self.settings.data_dir)}-app")

        async def resources() -> list[Resource]:
            return await server.store.list(Kind.RESOURCE)

        self.service = AppService.configured(
            creds, self.settings.app, resources,
            StoreAccessPolicy(server.store, {}, cluster=server.cluster_name), self.emitter,
            lambda: self.proxy.listeners["tunnel"])
        return await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
