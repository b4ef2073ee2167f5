"""Runs a kube agent: reverse tunnels to every proxy (``limen.tunnel.agent_pool``) that serve
Kubernetes dials, and one heartbeat per served kube cluster (``lmsh kube ls`` lists it while
the agent lives).

::

    proxy ══ tunnel data connection (KIND_KUBE, MODE_TLS: mutual TLS, proxy cert checked) ══▶
      KubeConnect {cluster, user_cert}  ─▶ open_session (certificate verified again)
      HTTP/1.1 request ─▶ its path prefix checked and removed (KubeSession.routed)
                       ─▶ decide (RBAC now) ─▶ forward as the user ─▶ kube.request audited
      ... keep-alive: the next request on the same connection

A refusal is answered as the API server would (a ``Status`` object, 403 Forbidden; 400 for a
malformed request; 502/503 when the API server or the cluster cannot be reached) and audited
as a failed ``kube.request``; the connection is then closed (the body of a refused request is
never read). Called by ``limen.cli.compose`` (single process) and
``limen.cli.compose_remote`` (``limen start --roles kube``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from cryptography import x509

from limen.agents.kube.catalog import KubeCatalog, ResourceLister, static_clusters
from limen.agents.kube.exec_recording import CHANNEL_PROTOCOLS, SPDY_PROTOCOL, ExecRecorder
from limen.agents.kube.forwarder import Tap, Upgraded, forward, forward_upgrade
from limen.agents.kube.http1 import MAX_HEAD, RequestHead, parse_request_head, response_head
from limen.agents.kube.session import Impersonation, KubeSession, RoleSets, open_session
from limen.agents.kube.upstream import Upstream, Upstreams
from limen.agents.proxy_dial import accept_proxy, check_proxy
from limen.agents.session_locks import SessionLockGuard
from limen.ca.host_credentials import HostCredentials
from limen.config import KubeSettings
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError
from limen.events.buffer import AuditBuffer
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.net.streams import close_writer
from limen.rbac.kube_request import KubeRequestInfo
from limen.recording.sink import RecordingSink
from limen.tunnel.agent_pool import TunnelAgentPool
from limen.tunnel.agent_settings import TunnelAgentSettings
from limen.tunnel.kube_wire import connect_length, decode_connect
from limen.tunnel.protocol import KIND_KUBE, MODE_TLS, DialRequest

__all__ = ["KubeService", "status_response"]

log = logging.getLogger(__name__)

_REQUEST_TIMEOUT = 10.0
_IDLE_TIMEOUT = 300.0
"""A kept-alive connection waiting this long for its next request is closed."""


def status_response(code: int, reason: str, message: str) -> bytes:
    """A Kubernetes ``Status`` answer (what kubectl prints after ``Error from server``),
    closing the connection."""
    body = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": message, "reason": reason,
                       "code": code}).encode()
    phrase = {400: "Bad Request", 403: "Forbidden", 404: "Not Found",
              431: "Request Header Fields Too Large", 502: "Bad Gateway",
              503: "Service Unavailable"}.get(code, "Error")
    return response_head(code, phrase, [("Content-Type", "application/json"),
                                        ("Content-Length", str(len(body))),
                                        ("Connection", "close")]) + body


class KubeService:
    name = "kube"

    user_trust: Callable[[], Mapping[str, Sequence[x509.Certificate]]] | None = None
    """The CAs whose users' certificates are accepted, by cluster (None: this cluster's only;
    a leaf adds its trusted roots' TLS CAs, whose users' roles its access policy maps)."""

    def __init__(self, credentials: HostCredentials, catalog: KubeCatalog,
                 upstreams: Upstreams, roles: RoleSets, emitter: Emitter,
                 tunnel_address: Callable[[], str], *,
                 on_tunnel: Callable[[TunnelAgentPool], Awaitable[None]] | None = None,
                 sessions_dir: Path | None = None, recordings: RecordingSink | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 guard: SessionLockGuard | None = None) -> None:
        self.credentials = credentials
        self.guard = guard
        """Ends open connections (an exec too) a lock targets (``limen.agents.session_locks``)."""
        self.catalog = catalog
        self.upstreams = upstreams
        self.roles = roles
        self.emitter = emitter
        self.audit = AuditBuffer(emitter)
        self._tunnel_address = tunnel_address
        self._on_tunnel = on_tunnel
        self._now = now
        self._trust = {credentials.cluster: credentials.tls_cas()}
        self._server_ssl = credentials.server_ssl(client_cas=credentials.tls_cas(),
                                                  require_client_cert=True)
        self.sessions_dir = sessions_dir
        self.recordings = recordings
        self.tunnel: TunnelAgentPool | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def configured(cls, credentials: HostCredentials, settings: KubeSettings,
                   secrets_dir: Path, lister: ResourceLister, roles: RoleSets,
                   emitter: Emitter, tunnel_address: Callable[[], str], *,
                   on_tunnel: Callable[[TunnelAgentPool], Awaitable[None]] | None = None,
                   sessions_dir: Path | None = None, recordings: RecordingSink | None = None,
                   guard: SessionLockGuard | None = None) -> KubeService:
        """The agent as ``limen start`` configures it (``kube`` settings); interactive
        exec sessions are recorded into ``sessions_dir`` and handed to ``recordings``."""
        static, paths = static_clusters(settings.clusters)
        catalog = KubeCatalog(static, settings.resources, lister)
        return cls(credentials, catalog, Upstreams(secrets_dir, paths), roles, emitter,
                   tunnel_address, on_tunnel=on_tunnel, sessions_dir=sessions_dir,
                   recordings=recordings, guard=guard)

    def _user_trust(self) -> Mapping[str, Sequence[x509.Certificate]]:
        return self.user_trust() if self.user_trust is not None else self._trust

    async def start(self) -> dict[str, str]:
        self.tunnel = TunnelAgentPool(
            self._tunnel_address(), self.credentials, self._serve, self._heartbeat,
            settings=TunnelAgentSettings(serves=frozenset({(KIND_KUBE, MODE_TLS)})))
        if self._on_tunnel is not None:
            await self._on_tunnel(self.tunnel)
        await self.tunnel.start()
        if self.guard is not None:
            self.guard.start()
        return {}

    async def stop(self) -> None:
        if self.guard is not None:
            await self.guard.stop()
        if self.tunnel is not None:
            await self.tunnel.stop()
        if self._tasks:  # recordings being handed over
            await asyncio.wait(self._tasks, timeout=10)
        await self.audit.aclose()
        if self._http is not None:
            await self._http.close()

    def _client(self) -> aiohttp.ClientSession:
        """The HTTP client towards the API servers (made at the first request)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=False))
        return self._http

    async def _heartbeat(self) -> list[dict[str, Any]]:
        await self.catalog.refresh()
        return self.catalog.heartbeats()

    async def _serve(self, sock: socket.socket, dial: DialRequest) -> None:
        streams = await accept_proxy(sock, self._server_ssl, "kube agent", dial.target)
        if streams is None:
            return
        reader, writer = streams
        try:
            check_proxy(writer, self._trust, self._now(), "kube agent")
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                size = connect_length(await reader.readexactly(4))
                connect = decode_connect(await reader.readexactly(size))
            try:
                cluster = await self.catalog.find(connect.cluster)
                session = await open_session(connect, cluster, self._user_trust(), self.roles,
                                             self.audit, self.credentials.host_id,
                                             self._now, cluster_name=self.credentials.cluster)
            except LimenError as err:
                await self._answer(writer, 403 if isinstance(err, AccessDenied) else 404,
                                   str(err))
                return
            with contextlib.ExitStack() as stack:
                if self.guard is not None:
                    stack.enter_context(self.guard.track(
                        session.identity, self._ender(session, writer),
                        await self._lock_mode(session)))
                await self._requests(session, reader, writer)
        except (LimenError, OSError, ssl.SSLError, TimeoutError,
                asyncio.IncompleteReadError) as err:
            log.info("kube agent: connection for %s ended: %s", dial.target, err)
        finally:
            await close_writer(writer)

    async def _lock_mode(self, session: KubeSession) -> str | None:
        """The connection's lock mode now (None when its roles cannot be read: the first
        request is refused then anyway)."""
        try:
            role_set = await self.roles.role_set(session.identity)
        except LimenError:
            return None
        return role_set.options.lock if role_set is not None else None

    def _ender(self, session: KubeSession, writer: asyncio.StreamWriter
               ) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
        """How a lock ends the connection (an open exec with it): audited, then closed."""
        async def end(reason: str, fields: dict[str, Any]) -> None:
            await self.audit.emit(make_event(
                "access.denied", success=False, **session.event_fields(), action="session",
                reason=reason, **fields))
            writer.transport.abort()
        return end

    async def _answer(self, writer: asyncio.StreamWriter, code: int, message: str) -> None:
        reason = {403: "Forbidden", 404: "NotFound", 400: "BadRequest",
                  431: "RequestHeaderFieldsTooLarge"}.get(code, "ServiceUnavailable")
        writer.write(status_response(code, reason, message))
        await writer.drain()

    async def _requests(self, session: KubeSession, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        """Serve the connection's requests one after the other until it closes (at once when
        the audit log cannot write one of its events: fail closed)."""
        if session.stream is not None:
            session.stream.on_failure = lambda _failure: writer.transport.abort()
        closed = asyncio.ensure_future(writer.wait_closed())
        try:
            await self._loop(session, reader, writer, closed)
        finally:
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ssl.SSLError):
                await closed

    async def _loop(self, session: KubeSession, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, closed: asyncio.Future[None]) -> None:
        while True:
            try:
                async with asyncio.timeout(_IDLE_TIMEOUT):
                    raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as err:
                if err.partial:
                    log.info("kube agent: a request head broke off")
                return
            except asyncio.LimitOverrunError:
                await self._refuse(session, writer, None, None, 431,
                                   f"request head longer than {MAX_HEAD} bytes")
                return
            try:
                head = parse_request_head(raw[:-4])
            except BadParameter as err:
                await self._refuse(session, writer, None, None, 400, str(err))
                return
            if not await self._one(session, head, reader, writer, closed):
                return

    async def _one(self, session: KubeSession, head: RequestHead,
                   reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   closed: asyncio.Future[None]) -> bool:
        """Decide and serve one request; False when the connection must end."""
        info: KubeRequestInfo | None = None
        try:
            head = session.routed(head)
            info = session.request_info(head)
            who = await session.decide(info)
        except (AccessDenied, BadParameter) as err:
            code = 403 if isinstance(err, AccessDenied) else 400
            await self._refuse(session, writer, head, info, code, str(err))
            return False
        try:
            upstream = self.upstreams.get(session.cluster,
                                          static=self.catalog.is_static(session.cluster.name))
            if head.is_upgrade:
                return await self._upgrade(session, head, info, who, reader, writer, upstream)
            else:
                status = await forward(head, reader, writer, upstream, who, self._client(),
                                       closed)
        except (BadParameter, ConnectionProblem) as err:
            code = 400 if isinstance(err, BadParameter) else 502
            await self._refuse(session, writer, head, info, code, str(err), impersonation=who)
            return False
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as err:
            await session.audit(info, head, status=499, success=True, impersonation=who,
                                reason=f"connection ended: {err}")
            return False
        # the API server's own refusal of the impersonated user is a refused request too
        await session.audit(info, head, status=status, success=status not in (401, 403),
                            impersonation=who)
        return head.keep_alive and not head.is_upgrade

    async def _upgrade(self, session: KubeSession, head: RequestHead, info: KubeRequestInfo,
                       who: Impersonation, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        """An upgraded request (exec, attach, port-forward), recorded when it is an
        interactive exec or attach; the connection ends afterwards."""
        recorder = await self._recorder(session, head, info, who)
        if recorder is False:
            await self._refuse(session, writer, head, info, 403,
                               "the session cannot be recorded and the roles require "
                               "recording (record_session: strict)", impersonation=who)
            return False
        rec = recorder if isinstance(recorder, ExecRecorder) else None
        if rec is not None and who.record_session == "strict":
            # bytes the recording cannot read end a session that must be recorded
            rec.on_failure = lambda _reason: writer.transport.abort()

        def taps(protocol: str) -> tuple[Tap, Tap] | None:
            return rec.taps(protocol) if rec is not None else None

        async def started(protocol: str) -> None:  # durable before the client hears 101
            await session.session_event("kube.session.start", info, head, protocol=protocol)

        upgraded = Upgraded()
        try:
            upgraded = await forward_upgrade(head, reader, writer, upstream, who, taps,
                                             started)
        finally:
            status, protocol = upgraded.status, upgraded.protocol
            recorded = rec is not None and status == 101 and rec.accepts(protocol)
            if rec is not None:
                self._background(self._store(rec) if recorded else rec.task.abort())
        extra: dict[str, Any] = {}
        if recorded and rec is not None:
            extra["recording"] = rec.session_id
            if rec.failure is not None:  # the rest of the session was relayed unrecorded
                extra["recording_error"] = rec.failure
        if status == 101:
            await session.session_event("kube.session.end", info, head, protocol=protocol,
                                        bytes_in=upgraded.bytes_in,
                                        bytes_out=upgraded.bytes_out, **extra)
        await session.audit(info, head, status=status, success=status not in (401, 403),
                            impersonation=who, protocol=protocol, **extra)
        return False

    async def _recorder(self, session: KubeSession, head: RequestHead, info: KubeRequestInfo,
                        who: Impersonation) -> ExecRecorder | bool | None:
        """The recording of an interactive exec/attach; None when there is nothing to
        record, False when it is required (strict) and cannot be made."""
        query = parse_qs(head.query)
        tty = any(v in ("true", "1") for v in query.get("tty", []))
        if info.verb not in ("exec", "attach") or not tty or who.record_session == "off":
            return None
        strict = who.record_session == "strict"
        offered = {p.strip() for v in head.values("sec-websocket-protocol")
                   for p in v.split(",")}
        spdy = SPDY_PROTOCOL in {p.strip().lower() for v in head.values("upgrade")
                                 for p in v.split(",")}
        if self.sessions_dir is None or self.recordings is None or (
                strict and not (offered & CHANNEL_PROTOCOLS or spdy)):
            return False if strict else None
        meta = {"cluster": session.agent_cluster, "user_cluster": session.identity.cluster,
                "user": session.identity.username,
                "participants": [session.identity.username], "login": who.user,
                "server_id": self.credentials.host_id,
                "server_hostname": f"{session.cluster.name}/{info.namespace}/{info.name}",
                "remote_addr": session.connect.client_addr,
                "command": " ".join(query.get("command", [])) or info.verb,
                "kube_cluster": session.cluster.name, "namespace": info.namespace,
                "pod": info.name, "container": (query.get("container") or [""])[0]}
        try:
            return await ExecRecorder.open(self.sessions_dir, meta)
        except OSError as err:
            log.error("kube agent: cannot record the %s session: %s", info.verb, err)
            return False if strict else None

    async def _store(self, recorder: ExecRecorder) -> None:
        assert self.recordings is not None
        await recorder.finish(self.recordings)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="kube recording upload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refuse(self, session: KubeSession, writer: asyncio.StreamWriter,
                      head: RequestHead | None, info: KubeRequestInfo | None, code: int,
                      message: str, **extra: Any) -> None:
        await session.audit(info, head, status=code, success=False, reason=message, **extra)
        cluster = session.cluster.name
        text = message if code != 403 else \
            f"Limen: {session.identity.username} may not {info.describe() if info else 'do this'}" \
            f" on {cluster}: {message}"
        with contextlib.suppress(OSError, ssl.SSLError):
            await self._answer(writer, code, text)
