"""The proxy's Kubernetes front (listener ``kube``, default 3026, and the web port): kubectl
and every client-go program, unchanged, with the kubeconfig ``lmsh kube login`` writes.

::

    kubectl ── TLS (proxy certificate; ALPN h2 or http/1.1; the user's Limen kube
               certificate from lmsh kube credentials) ──▶ kube_route: authenticate,
               cluster online, kubernetes_labels ──▶ kube agent via its tunnel (KubeConnect)
            ◀──────── HTTP/1.1 bytes both ways (keep-alive, watch, upgrades) ────────▶

Which kube cluster: the one the request names — its path prefix
``/v1/limen/<b64url cluster>/<b64url kube cluster>/`` (:mod:`limen.net.kube_path`, what the
kubeconfig's server URL carries) or the connection's server name
``<hex kube cluster>.kube-limen-proxy.limen.local`` (:mod:`limen.net.kube_sni`, read in the
handshake) — within the certificate's scope (:mod:`limen.proxy.kube.kube_choice`). On
``http/1.1`` the first request head routes the connection; the proxy relays it and the rest
without parsing them, and the agent removes the prefix of every request after checking that
it names the agent's own cluster and kube cluster (a later request on the connection naming
another is refused there, 403 and audited: a client opens a connection per cluster). On
``h2`` (what kubectl picks for everything but upgrades) :mod:`limen.proxy.kube.kube_h2` turns
each stream into one HTTP/1.1 request on a tunnel connection, routed on its own, dialled
through the same router (so with the same checks and audit) and kept alive for the next
stream of that route. A malformed prefix or server name is answered 400 and audited. Refused here,
with a Kubernetes ``Status`` (401 without a usable certificate, 403 when the roles do not
admit the cluster, 503 when it is not reachable) after reading the first request head, and a
failed ``kube.request`` audit event: no or a wrong certificate (expired, another cluster's,
not a kube certificate), a cluster that is not online, a cluster the roles do not admit. A
certificate the TLS layer refuses (another CA, expired) ends the connection in the handshake,
audited the same way. The ``kube`` listener reads each ClientHello and replays it into the TLS
handshake (:meth:`TLSRouter.single <limen.proxy.tls_router.TLSRouter.single>`, as the web port
does), whatever the event loop.

The same handler serves the web port (single-port mode, :mod:`limen.proxy.tls_router`):
:meth:`KubeProxyService.sni_route` for the server name
:data:`~limen.net.kube_sni.KUBE_SERVER_NAME` (kubectl's ``tls-server-name``), whose TLS
context requires a client certificate of this cluster in the handshake (no certificate, another
CA's or an expired one: the handshake fails and is audited as above), and
:meth:`KubeProxyService.alpn_routes` for ALPN ``limen-kube`` (the web context: a connection
without a certificate gets the 401 ``Status``). From the first request on, both are the
listener's connections; both offer ``h2`` as well. :meth:`KubeProxyService.stop` ends the
HTTP/2 connections with GOAWAY. Started by :mod:`limen.cli.proxy_component`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid

from limen.ca.host_credentials import HostCredentials
from limen.errors import BadParameter, ConnectionProblem, LimenError, NotFound
from limen.events.emitter import Emitter
from limen.net.address import bind_tcp, socket_address
from limen.net.kube_path import split_target
from limen.net.kube_sni import ALPN_KUBE, KUBE_SERVER_NAME, kube_of_server_name
from limen.net.streams import both_ways, close_writer, copy_stream
from limen.net.tcp import tune_socket
from limen.proxy.kube.kube_choice import Named
from limen.proxy.kube.kube_h2 import ALPN_H2, H2Session
from limen.proxy.kube.kube_route import KubeRouter
from limen.proxy.kube.kube_status import StreamRefused, http1_status
from limen.proxy.kube.upstream_pool import Dial
from limen.proxy.routing import ClusterView
from limen.proxy.stream_route import StreamRoute
from limen.proxy.tls_router import HTTP_ALPN, ProtocolFactory, SNIRoute, TLSRouter
from limen.tunnel.server import TunnelServer

__all__ = ["KubeProxyService"]

log = logging.getLogger(__name__)

_HEAD_TIMEOUT = 10.0
_MAX_HEAD = 64 * 1024
_FIRST_HEAD_TIMEOUT = 60.0
"""How long an HTTP/1.1 connection may wait before its first request head (it routes)."""
_GOAWAY_GRACE = 2.0
"""How long the stop waits for HTTP/2 connections to take their GOAWAY and end."""
_SNI_ATTRIBUTE = "limen_server_name"


def _remember_server_name(ssl_object: ssl.SSLObject, server_name: str | None,
                          _context: ssl.SSLContext) -> None:
    """The SNI callback: keeps the server name on the connection (the server side of
    ``ssl`` does not expose it otherwise)."""
    setattr(ssl_object, _SNI_ATTRIBUTE, server_name or "")


def _server_name(ssl_object: ssl.SSLObject | None) -> str:
    return str(getattr(ssl_object, _SNI_ATTRIBUTE, "") or "")


def _request_target(head: bytes) -> str:
    """The target of an HTTP/1.1 request head ("" when the line is malformed: the agent
    refuses it)."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    return parts[1].decode("latin-1") if len(parts) == 3 else ""


def _client_addr(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""


class KubeProxyService:
    name = "proxy-kube"

    def __init__(self, credentials: HostCredentials, tunnel: TunnelServer, view: ClusterView,
                 emitter: Emitter, *, address: str) -> None:
        self.router = KubeRouter(credentials, tunnel, view, emitter)
        tls = credentials.server_ssl(client_cas=credentials.tls_cas())
        tls.verify_mode = ssl.CERT_OPTIONAL  # no certificate: a Status answer, not an alert
        tls.set_alpn_protocols([ALPN_H2, HTTP_ALPN])
        tls.sni_callback = _remember_server_name
        self._tls = tls
        web_tls = credentials.server_ssl(client_cas=credentials.tls_cas(),
                                         require_client_cert=True)
        web_tls.set_alpn_protocols([ALPN_H2, HTTP_ALPN, ALPN_KUBE])
        web_tls.sni_callback = _remember_server_name
        self._web_tls = web_tls
        self.web_route = StreamRoute(self.handle_routed, "kube web route")
        self.listener_route = StreamRoute(self.handle_routed, "kube listener")
        self._address = address
        self._listener: TLSRouter | None = None
        self._h2: set[H2Session] = set()

    def sni_route(self) -> tuple[str, SNIRoute]:
        """The web port's route for kubectl: its server name and route (with the names of
        kube clusters one label under it)."""
        return KUBE_SERVER_NAME, SNIRoute(self._web_tls, self.web_route.protocol,
                                          self._handshake_refused, subdomains=True)

    def alpn_routes(self) -> dict[str, ProtocolFactory]:
        """The web port's ALPN route for clients Limen drives."""
        return {ALPN_KUBE: self.web_route.protocol}

    async def start(self) -> dict[str, str]:
        if not self._address:
            return {}
        sock = bind_tcp(self._address)
        self._listener = TLSRouter.single(SNIRoute(self._tls, self.listener_route.protocol,
                                                   self._handshake_refused))
        await self._listener.start(sock)
        return {"kube": socket_address(sock)}

    async def stop(self) -> None:
        sessions = list(self._h2)
        for session in sessions:
            session.goaway()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_GOAWAY_GRACE):
                for session in sessions:
                    await session.ended.wait()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        await self.web_route.stop()
        await self.listener_route.stop()

    async def handle_routed(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        """A connection of the ``kube`` listener or the web port, its TLS handshake done."""
        client_addr = _client_addr(writer)
        session_id = str(uuid.uuid4())
        tune_socket(writer.get_extra_info("socket"))  # a response's head and body: no Nagle wait
        try:
            await self._serve(reader, writer, client_addr, session_id)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as err:
            log.debug("kube front: %s: %s", client_addr, err)
        finally:
            await close_writer(writer)

    async def _handshake_refused(self, err: ssl.SSLError, client_addr: str) -> None:
        """A handshake the kube listener's or the web port's kube context refused."""
        await self._refused_tls(err, client_addr, str(uuid.uuid4()))

    async def _refused_tls(self, err: ssl.SSLError, client_addr: str, session_id: str) -> None:
        reason = getattr(err, "verify_message", None) or err.reason or str(err)
        if err.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":  # the web port's kube context
            reason = "no client certificate (run lmsh kube login NAME)"
        await self.router.refused(f"TLS handshake failed: {reason}", identity=None,
                                  client_addr=client_addr, session_id=session_id)

    def _usable(self, der: bytes | None) -> bool:
        """Is ``der`` a valid kube certificate (then a refusal is 403, otherwise 401)?"""
        try:
            self.router.identify(der)
        except LimenError:
            return False
        return True

    def _refusal(self, err: LimenError, der: bytes | None) -> StreamRefused:
        """The Status a refusal of the router is answered with (already audited)."""
        code = 503 if isinstance(err, NotFound | ConnectionProblem) else 403
        if code == 403 and not self._usable(der):
            code = 401
        return StreamRefused(code, f"Limen: {err}", audited=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     client_addr: str, session_id: str) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == ALPN_H2:
            await self._serve_h2(reader, writer, der, _server_name(ssl_object), client_addr,
                                 session_id)
            return
        try:
            async with asyncio.timeout(_FIRST_HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await self._bad_request(writer, "the request head is too long", der, client_addr,
                                    session_id)
            return
        try:
            named = self._named(_server_name(ssl_object), _request_target(head))
        except BadParameter as err:
            await self._bad_request(writer, str(err), der, client_addr, session_id)
            return
        try:
            opened = await self.router.connect(der, client_addr=client_addr,
                                               session_id=session_id, named=named)
        except LimenError as err:
            refusal = self._refusal(err, der)
            writer.write(http1_status(refusal.status, str(refusal)))
            await writer.drain()
            return
        try:
            opened.writer.write(head)
            await both_ways(copy_stream(reader, opened.writer),
                            copy_stream(opened.reader, writer), grace=5.0)
        finally:
            await close_writer(opened.writer)

    @staticmethod
    def _named(server_name: str, target: str) -> Named:
        """What a request names (BadParameter for a malformed prefix or server name)."""
        path, _rest = split_target(target)
        return Named(path, kube_of_server_name(server_name) if server_name else None)

    async def _bad_request(self, writer: asyncio.StreamWriter, reason: str, der: bytes | None,
                           client_addr: str, session_id: str) -> None:
        """A malformed request head, prefix or server name: 400, audited."""
        try:
            identity = self.router.verify(der)
        except LimenError:
            identity = None
        await self.router.refused(f"bad request: {reason}", identity=identity,
                                  client_addr=client_addr, session_id=session_id)
        writer.write(http1_status(400, f"Limen: {reason}"))
        await writer.drain()

    async def _serve_h2(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        der: bytes | None, server_name: str, client_addr: str,
                        session_id: str) -> None:
        """An HTTP/2 connection: each stream routed by its path (and the connection's server
        name) and its tunnel connection dialled through the router with the connection's
        certificate (see :mod:`limen.proxy.kube.kube_h2`)."""
        try:
            identity = self.router.verify(der)
        except LimenError:
            identity = None

        def route(target: str) -> tuple[str, Dial]:
            named = self._named(server_name, target)

            async def dial() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                try:
                    opened = await self.router.connect(der, client_addr=client_addr,
                                                       session_id=session_id, named=named)
                except LimenError as err:
                    raise self._refusal(err, der) from None
                return opened.reader, opened.writer
            return repr((named.path, named.server_name_kube)), dial

        async def audit(reason: str) -> None:
            await self.router.refused(reason, identity=identity, client_addr=client_addr,
                                      session_id=session_id)

        async def unrouted() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            raise StreamRefused(400, "Limen: the request names no route")  # never: ``route``

        session = H2Session(reader, writer, unrouted, audit, name=client_addr, route=route)
        self._h2.add(session)
        try:
            await session.serve()
        finally:
            self._h2.discard(session)
