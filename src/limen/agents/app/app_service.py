"""Runs an app agent: reverse tunnels to every proxy (``limen.tunnel.agent_pool``) that serve
app dials, and one heartbeat per served app (``lmsh apps ls`` lists it while the agent lives).

::

    proxy ══ tunnel data connection (KIND_APP, MODE_TLS: mutual TLS, proxy cert checked) ══▶
      AppConnect {app, user_cert}  ─▶ the certificate verified again (this cluster's TLS CA,
      expiry, usage app, scoped to this app) ─▶ the roles now (app_labels, deny first) ─▶
      connect to the app (uri; TLS for https, verified unless tls.insecure_skip_verify)
      ◀─ AppAnswer {ok} ─▶ the bytes of one HTTP/1.1 exchange both ways, untouched

The proxy built the request (identity JWT, ``Host``, ``X-Forwarded-*``, the client's
``Limen-*`` fields and session cookie removed) and reads the response; the agent decides
whether the connection may reach the app at all, so a proxy that was told a stale answer
(roles changed since) still cannot pass. A refusal is answered (403, 404 or 502) and audited
as a failed ``app.session.start``. Called by ``limen.cli.compose`` (single process) and
``limen.cli.compose_remote`` (``limen start --roles app``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from limen.agents.app.catalog import AppCatalog, ResourceLister, static_apps
from limen.agents.proxy_dial import accept_proxy, check_proxy
from limen.api.app_spec import AppSpec, app_spec
from limen.api.resources import Resource
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity
from limen.ca.x509_certs import verify_client_cert
from limen.config import AppSettings
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError, NotFound
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.net.streams import both_ways, close_writer, copy_stream
from limen.rbac import RoleSet
from limen.tunnel.agent_pool import TunnelAgentPool
from limen.tunnel.agent_settings import TunnelAgentSettings
from limen.tunnel.app_wire import AppAnswer, AppConnect, decode_connect, encode, frame_length
from limen.tunnel.protocol import KIND_APP, MODE_TLS, DialRequest

__all__ = ["AppService", "RoleSets"]

log = logging.getLogger(__name__)

_REQUEST_TIMEOUT = 10.0
_CONNECT_TIMEOUT = 10.0

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class RoleSets(Protocol):
    async def role_set(self, identity: Identity) -> RoleSet | None: ...


def upstream_ssl(spec: AppSpec) -> ssl.SSLContext | None:
    """The TLS context towards an https app (the system's CAs; no check at all when the
    Resource says ``tls.insecure_skip_verify``), None for http."""
    if spec.scheme != "https":
        return None
    context = ssl.create_default_context()
    if spec.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class AppService:
    name = "app"

    def __init__(self, credentials: HostCredentials, catalog: AppCatalog, roles: RoleSets,
                 emitter: Emitter, tunnel_address: Callable[[], str], *,
                 on_tunnel: Callable[[TunnelAgentPool], Awaitable[None]] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.credentials = credentials
        self.catalog = catalog
        self.roles = roles
        self.emitter = emitter
        self._tunnel_address = tunnel_address
        self._on_tunnel = on_tunnel
        self._now = now
        self._trust = {credentials.cluster: credentials.tls_cas()}
        self._server_ssl = credentials.server_ssl(client_cas=credentials.tls_cas(),
                                                  require_client_cert=True)
        self.tunnel: TunnelAgentPool | None = None

    @classmethod
    def configured(cls, credentials: HostCredentials, settings: AppSettings,
                   lister: ResourceLister, roles: RoleSets, emitter: Emitter,
                   tunnel_address: Callable[[], str], *,
                   on_tunnel: Callable[[TunnelAgentPool], Awaitable[None]] | None = None,
                   ) -> AppService:
        """The agent as ``limen start`` configures it (``app`` settings)."""
        catalog = AppCatalog(static_apps(settings.apps), settings.resources, lister)
        return cls(credentials, catalog, roles, emitter, tunnel_address, on_tunnel=on_tunnel)

    async def start(self) -> dict[str, str]:
        self.tunnel = TunnelAgentPool(
            self._tunnel_address(), self.credentials, self._serve, self._heartbeat,
            settings=TunnelAgentSettings(serves=frozenset({(KIND_APP, MODE_TLS)})))
        if self._on_tunnel is not None:
            await self._on_tunnel(self.tunnel)
        await self.tunnel.start()
        return {}

    async def stop(self) -> None:
        if self.tunnel is not None:
            await self.tunnel.stop()

    async def _heartbeat(self) -> list[dict[str, Any]]:
        await self.catalog.refresh()
        return self.catalog.heartbeats()

    async def _serve(self, sock: socket.socket, dial: DialRequest) -> None:
        streams = await accept_proxy(sock, self._server_ssl, "app agent", dial.target)
        if streams is None:
            return
        reader, writer = streams
        try:
            check_proxy(writer, self._trust, self._now(), "app agent")
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                size = frame_length(await reader.readexactly(4))
                connect = decode_connect(await reader.readexactly(size))
            upstream = await self._open(connect)
            if isinstance(upstream, AppAnswer):
                writer.write(encode(upstream))
                await writer.drain()
                return
            up_reader, up_writer = upstream
            try:
                writer.write(encode(AppAnswer(True)))
                await writer.drain()
                # the app's answer leads: when it has closed, the request side gets a moment
                await both_ways(copy_stream(up_reader, writer), copy_stream(reader, up_writer),
                                grace=5.0)
            finally:
                await close_writer(up_writer)
        except (LimenError, OSError, ssl.SSLError, TimeoutError,
                asyncio.IncompleteReadError) as err:
            log.info("app agent: connection for %s ended: %s", dial.target, err)
        finally:
            await close_writer(writer)

    async def _open(self, connect: AppConnect) -> Streams | AppAnswer:
        """The connection to the app once the user is admitted, or the refusal to answer
        (audited here)."""
        answer: AppAnswer
        identity: Identity | None = None
        try:
            resource = await self.catalog.find(connect.app)
            identity = self._verify(connect)
            await self._admit(identity, resource)
            spec = app_spec(resource.name, resource.spec, "")
            return await self._connect(spec)
        except NotFound as err:
            answer = AppAnswer(False, 404, str(err))
        except (AccessDenied, BadParameter) as err:
            answer = AppAnswer(False, 403, str(err))
        except ConnectionProblem as err:
            answer = AppAnswer(False, 502, str(err))
        await self.emitter.emit(make_event(
            "app.session.start", success=False, cluster=self.credentials.cluster,
            user=identity.username if identity else None, app=connect.app,
            session_id=connect.session_id, server_id=self.credentials.host_id,
            remote_addr=connect.client_addr, status=answer.status,
            reason=answer.error))
        return answer

    def _verify(self, connect: AppConnect) -> Identity:
        """Who the forwarded certificate names (this cluster's TLS CA, unexpired)."""
        try:
            return verify_client_cert(_pem_to_der(connect.user_cert), self._trust, self._now())
        except (LimenError, ValueError) as err:
            raise AccessDenied(f"certificate refused: {err}") from None

    async def _admit(self, identity: Identity, resource: Resource) -> None:
        """AccessDenied unless ``identity`` is a user's app certificate for ``resource`` whose
        roles admit it now."""
        if identity.is_system or "app" not in identity.usage or \
                identity.route_to_app != resource.name:
            raise AccessDenied(f"the certificate is not an app certificate for "
                               f"{resource.name}: run lmsh apps login {resource.name}")
        role_set = await self.roles.role_set(identity)
        if role_set is None:
            raise AccessDenied(f"users of cluster {identity.cluster!r} are not mapped to "
                               "roles here")
        decision = role_set.check_app(resource.labels)
        if not decision.allowed:
            raise AccessDenied(f"access to app {resource.name} denied: {decision.reason}")

    async def _connect(self, spec: AppSpec) -> Streams:
        context = upstream_ssl(spec)
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                return await asyncio.open_connection(
                    spec.host, spec.port, ssl=context,
                    server_hostname=spec.host if context is not None else None,
                    limit=256 * 1024)
        except (OSError, ssl.SSLError, TimeoutError) as err:
            raise ConnectionProblem(f"cannot reach app {spec.name} at {spec.uri}: {err}") \
                from None


def _pem_to_der(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
