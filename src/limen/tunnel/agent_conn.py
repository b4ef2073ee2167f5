"""One control connection of a tunnel agent, from connect to loss: SSH login with the agent's
key, ``hello`` with its host certificate, the proxy's ``welcome`` checked, then heartbeats,
dials served and auth connect requests answered.

::

    connect (SSH, agent key) ─▶ hello (host cert, proxies held elsewhere) ─▶ welcome (proxy
      │                          cert, checked; a proxy the hello named: redundant, closed)
      │  welcome's proxy set, then each ``proxies`` message ─▶ owner.proxies_announced
      │  heartbeat every 10 s  (payload: heartbeat())
      │  dial {nonce}  ─▶ new TCP conn to the tunnel port, "LIMEN-DATA nonce\\n",
      │                   then handler(sock, request)   (or prepare(request) first, then serve)
      │                   (a tls:// address: TLS to the web port, limen.tunnel.tls_dial)
      │  connect_ok / connect_failed ─▶ the waiting request_connect
      │  locks (cluster links: the root's locks) ─▶ settings.on_locks
      │  cas (cluster links: the root's public CAs) ─▶ settings.on_cas
      │  trust (auth's signed trust answer, when the hello asked) ─▶ settings.on_trust
      │  send(leaf_cas) (cluster links: the leaf's own CAs, sent by the owner's caller)
      └─ connection lost: run() returns or raises; pending connect requests fail

The welcome's certificate must be a valid host certificate of the expected cluster with role
``proxy`` for the key the proxy used in the SSH handshake. What the connection needs from its
agent is the :class:`ConnectionOwner` protocol declared here (implemented by
:class:`limen.tunnel.agent.TunnelAgent`, which runs one connection after the other with its
reconnect policy); this module never imports the agent.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import socket
import ssl
from collections.abc import Awaitable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncssh

from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import PublicKey
from limen.ca.ssh_peer import verify_peer_host_cert
from limen.errors import BadParameter, ConnectionProblem, LimenError
from limen.net.sshalgs import MAX_PACKET, client_algorithms
from limen.net.tcp import tune_socket
from limen.net.tunnel_address import TunnelAddress
from limen.tunnel.agent_settings import (
    DialHandler,
    DialPreparer,
    HeartbeatSource,
    PreparedDial,
    TunnelAgentSettings,
)
from limen.tunnel.protocol import (
    CONTROL_SUBSYSTEM,
    Connect,
    ConnectFailed,
    ConnectOk,
    Decoder,
    Dial,
    DialFailed,
    DialRequest,
    Heartbeat,
    Hello,
    Locks,
    Message,
    Proxies,
    ProxyEntry,
    RootCAs,
    TrustPush,
    Welcome,
    encode,
    format_preamble,
)
from limen.tunnel.tls_dial import TLSTunnel, open_data

__all__ = ["AgentConnection", "ConnectionOwner"]

log = logging.getLogger("limen.tunnel.agent")


class ConnectionOwner(Protocol):
    """What one control connection needs from its tunnel agent: where and who, the settings,
    the callables that serve dials and heartbeats (read at each use: they may be replaced),
    a task set that outlives the connection, and the report that the welcome was verified."""

    @property
    def address(self) -> str:
        """The proxy's tunnel address, ``host:port``."""

    @property
    def endpoint(self) -> tuple[str, int]:
        """``address`` parsed."""

    @property
    def tunnel_address(self) -> TunnelAddress:
        """``address`` parsed, with its mode (the tunnel port, or ``tls://`` the web port)."""

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The TLS context of a ``tls://`` address (:mod:`limen.tunnel.tls_dial`)."""

    @property
    def credentials(self) -> HostCredentials: ...

    @property
    def client_key(self) -> Any:
        """The agent's SSH key (asyncssh) for the control connection's login."""

    @property
    def peer_trust(self) -> Mapping[str, Sequence[PublicKey]]: ...

    @property
    def peer_cluster(self) -> str: ...

    @property
    def settings(self) -> TunnelAgentSettings: ...

    @property
    def handler(self) -> DialHandler | None: ...

    @property
    def prepare(self) -> DialPreparer | None: ...

    @property
    def heartbeat(self) -> HeartbeatSource: ...

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` as a task cancelled when the agent stops (dials outlive the
        connection that asked for them)."""

    def welcomed(self, conn: AgentConnection) -> None:
        """``conn``'s proxy is verified: it is the agent's connection now."""

    def held_elsewhere(self) -> Collection[str]:
        """Host ids of the proxies another tunnel of this agent holds (told in ``hello``: a
        connection reaching one of them is not registered there, it is redundant)."""

    def redundant(self, conn: AgentConnection, proxies: Sequence[ProxyEntry]) -> None:
        """``conn`` reached a proxy held elsewhere (its welcome's proxy set given): it closes
        without serving."""

    def proxies_announced(self, conn: AgentConnection,
                          proxies: Sequence[ProxyEntry]) -> None:
        """``conn``'s proxy told the cluster's proxy set (welcome, then each change)."""


class AgentConnection:
    """One control connection (see the module docstring); :meth:`run` once."""

    def __init__(self, owner: ConnectionOwner) -> None:
        self.owner = owner
        self.proxy_id = ""
        """The proxy's host id from its verified welcome."""
        self.takes_leaf_cas = False
        """The proxy's welcome said it takes ``leaf_cas`` (a root's proxy, cluster links)."""
        self._writer: Any = None
        self._ids = itertools.count(1)
        self._connects: dict[int, asyncio.Future[str]] = {}

    async def run(self) -> None:
        """Connect, say hello, check the welcome, then serve until the connection is lost."""
        owner, settings = self.owner, self.owner.settings
        host, port = owner.endpoint
        tls = owner.tls
        try:
            async with asyncssh.connect(
                host, port, username=owner.credentials.host_id,
                tunnel=() if tls is None else TLSTunnel(owner.tunnel_address, tls,
                                                         settings.connect_timeout),
                client_keys=[owner.client_key], known_hosts=None, agent_path=None, config=None,
                preferred_auth="publickey", **client_algorithms(), max_pktsize=MAX_PACKET,
                keepalive_interval=settings.keepalive_interval,
                keepalive_count_max=settings.keepalive_count_max,
                connect_timeout=settings.connect_timeout,
                login_timeout=settings.connect_timeout,
            ) as conn:
                await self._serve(conn)
        finally:
            self._closed()

    async def _serve(self, conn: Any) -> None:
        owner, settings = self.owner, self.owner.settings
        writer, reader, _stderr = await conn.open_session(subsystem=CONTROL_SUBSYSTEM,
                                                          encoding=None)
        held = tuple(sorted(owner.held_elsewhere()))
        writer.write(encode(Hello(cert=owner.credentials.ssh_cert.decode().strip(),
                                  held=held, trust=settings.on_trust is not None)))
        decoder = Decoder()
        pending: list[Message] = []
        async with asyncio.timeout(settings.connect_timeout):
            while not pending:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionProblem("the proxy closed the tunnel before welcome")
                pending = decoder.feed(data)
        welcome = pending.pop(0)
        if not isinstance(welcome, Welcome):
            raise BadParameter(f"expected welcome from the proxy, got {welcome.type}")
        self._check_proxy(welcome, conn)
        if self.proxy_id in held:
            # not registered by the proxy; a connection whose hello did not name it was
            # registered (and replaced a sibling's, which the proxy closes): it serves
            log.info("tunnel agent: %s leads to proxy %s, which another tunnel holds",
                     owner.address, self.proxy_id)
            owner.redundant(self, welcome.proxies)
            return
        self._writer = writer
        owner.welcomed(self)
        owner.proxies_announced(self, welcome.proxies)
        log.info("tunnel agent: connected to proxy %s at %s", self.proxy_id, owner.address)
        beats = asyncio.create_task(self._heartbeats(
            writer, settings.heartbeat_interval or welcome.heartbeat_interval))
        try:
            for message in pending:
                self._handle(message)
            while data := await reader.read(65536):
                for message in decoder.feed(data):
                    self._handle(message)
        finally:
            beats.cancel()

    def _check_proxy(self, welcome: Welcome, conn: Any) -> None:
        server_key = conn.get_server_host_key()
        if server_key is None:
            raise ConnectionProblem("the proxy presented no host key")
        expected = self.owner.peer_cluster
        identity = verify_peer_host_cert(
            welcome.cert, bytes(server_key.public_data), self.owner.peer_trust,
            {SystemRole.PROXY}, datetime.fromtimestamp(self.owner.settings.clock(), UTC))
        if welcome.cluster != expected or identity.cluster != expected:
            raise ConnectionProblem(f"the proxy serves cluster {identity.cluster!r}, not "
                                    f"{expected!r}")
        self.proxy_id = welcome.proxy_id
        self.takes_leaf_cas = welcome.leaf_cas

    def _closed(self) -> None:
        self._writer = None
        for future in self._connects.values():
            if not future.done():
                future.set_exception(ConnectionProblem("the tunnel to the proxy went down"))
        self._connects.clear()

    async def _heartbeats(self, writer: Any, interval: float) -> None:
        while True:
            try:
                payload = self.owner.heartbeat()
                if inspect.isawaitable(payload):
                    payload = await payload
                for resource in payload if isinstance(payload, list) else [payload]:
                    writer.write(encode(Heartbeat(resource=resource)))
            except (LimenError, OSError, asyncssh.Error) as err:
                log.warning("tunnel agent: cannot send a heartbeat: %s", err)
            except Exception:  # the payload callable is the caller's code: keep beating
                log.exception("tunnel agent: the heartbeat payload failed")
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ messages

    def _handle(self, message: Message) -> None:
        if isinstance(message, Dial):
            self.owner.spawn(self._serve_dial(message.request))
        elif isinstance(message, Proxies):
            self.owner.proxies_announced(self, message.proxies)
        elif isinstance(message, Locks) and self.owner.settings.on_locks is not None:
            self.owner.settings.on_locks(message)
        elif isinstance(message, RootCAs) and self.owner.settings.on_cas is not None:
            self.owner.settings.on_cas(message)
        elif isinstance(message, TrustPush) and self.owner.settings.on_trust is not None:
            self.owner.settings.on_trust(message, self.proxy_id)
        elif isinstance(message, ConnectOk | ConnectFailed):
            future = self._connects.pop(message.id, None)
            if future is None or future.done():
                return
            if isinstance(message, ConnectOk):
                future.set_result(message.nonce)
            else:
                future.set_exception(ConnectionProblem(f"the proxy cannot connect: "
                                                       f"{message.reason}"))
        else:
            raise BadParameter(f"unexpected {message.type} message from the proxy")

    def _send(self, message: Message) -> None:
        if self._writer is not None:
            self._writer.write(encode(message))

    def send(self, message: Message) -> bool:
        """Send ``message`` to the proxy now (a cluster link's ``leaf_cas``, only to a proxy
        whose welcome said it takes them); False when the connection is not (or no longer)
        up."""
        try:
            self._send(message)
        except (OSError, asyncssh.Error):
            return False
        return self._writer is not None

    async def request_connect(self, kind: str) -> str:
        """Ask the proxy for a data connection of ``kind`` (auth); its nonce.
        :class:`ConnectionProblem` when refused, unanswered, or the connection goes down."""
        request_id = next(self._ids)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._connects[request_id] = future
        self._send(Connect(request_id, kind))
        try:
            async with asyncio.timeout(self.owner.settings.connect_timeout):
                return await future
        except TimeoutError:
            raise ConnectionProblem(f"the proxy did not answer the {kind} connect request") \
                from None
        finally:
            self._connects.pop(request_id, None)

    # ------------------------------------------------------------------ dials

    async def _serve_dial(self, request: DialRequest) -> None:
        if (request.kind, request.mode) not in self.owner.settings.serves:
            self._send(DialFailed(request.nonce, f"this agent does not serve {request.kind} "
                                                 f"dials in {request.mode} mode"))
            return
        prepared: PreparedDial | None = None
        prepare = self.owner.prepare
        if prepare is not None:
            try:
                prepared = await prepare(request)
            except LimenError as err:
                self._send(DialFailed(request.nonce, str(err)))
                return
            except Exception:
                log.exception("tunnel agent: preparing the dial of %s failed", request.target)
                self._send(DialFailed(request.nonce, "internal error (see the leaf's log)"))
                return
        try:
            sock = await self._open_data_connection(request.nonce)
        except OSError as err:
            if prepared is not None:
                prepared.cancel()
            self._send(DialFailed(request.nonce, f"cannot reach the proxy: {err}"))
            return
        try:
            if prepared is not None:
                await prepared.serve(sock)
            else:
                handler = self.owner.handler
                assert handler is not None
                await handler(sock, request)
        except Exception:
            log.exception("tunnel agent: dial handler failed for %s", request.client_addr)
            sock.close()

    async def _open_data_connection(self, nonce: str) -> socket.socket:
        tls = self.owner.tls
        if tls is not None:
            try:
                return await open_data(self.owner.tunnel_address, tls, nonce,
                                       self.owner.settings.connect_timeout,
                                       name=f"tunnel data via {self.owner.address}")
            except (OSError, TimeoutError, LimenError) as err:
                raise OSError(f"data connection to {self.owner.address}: "
                              f"{err or type(err).__name__}") from err
        loop = asyncio.get_running_loop()
        host, port = self.owner.endpoint
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _name, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            tune_socket(sock)
            async with asyncio.timeout(self.owner.settings.connect_timeout):
                await loop.sock_connect(sock, address)
                await loop.sock_sendall(sock, format_preamble(nonce))
        except (OSError, TimeoutError) as err:
            sock.close()
            raise OSError(f"data connection to {self.owner.address}: {err}") from err
        return sock
