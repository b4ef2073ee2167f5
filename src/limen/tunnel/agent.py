"""Agent side of the reverse tunnel: dial out to the proxy, stay connected, serve dials.

::

    TunnelAgent.start()
      └─ loop: connect (SSH, agent key) ─▶ hello (host cert) ─▶ welcome (proxy cert, checked)
               │  heartbeat every 10 s  (payload: heartbeat())
               │  dial {nonce}  ─▶ new TCP conn to the tunnel port, "LIMEN-DATA nonce\\n",
               │                   then handler(sock, request)   (the node's SSH server)
               │  connection lost ─▶ backoff (0.5 s .. 30 s, full jitter) ─▶ reconnect
      local_auth_listener() ─▶ 127.0.0.1:P; each accepted connection ─▶ "connect auth" ─▶
                               data connection spliced by the proxy to the auth API

The agent checks the proxy like the proxy checks the agent: the certificate in ``welcome`` must
be a valid host certificate of this cluster with role ``proxy`` for the key the proxy used in
the SSH handshake. Called by the node agent (and later the db, kube and app agents).

A leaf proxy's cluster link to its root (``limen.proxy.leaf``) is a TunnelAgent too, with the
root's host CA as ``peer_trust`` and a ``prepare`` hook: every dial is resolved and authorized
BEFORE its data connection is opened, so a refusal travels back as ``dial_failed``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncssh

from limen.aio.backoff import Backoff
from limen.aio.changed import Changed
from limen.aio.tasks import cancel_and_wait
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import PublicKey
from limen.ca.ssh_peer import host_key, trust_map, verify_peer_host_cert
from limen.errors import BadParameter, ConnectionProblem, LimenError
from limen.net.address import parse_address
from limen.net.sshalgs import MAX_PACKET, client_algorithms
from limen.net.tcp import tune_socket
from limen.tunnel.auth_route import LocalAuthListener
from limen.tunnel.protocol import (
    CONTROL_SUBSYSTEM,
    KIND_AUTH,
    KIND_NODE,
    MODE_RAW,
    Connect,
    ConnectFailed,
    ConnectOk,
    Decoder,
    Dial,
    DialFailed,
    DialRequest,
    Heartbeat,
    Hello,
    Message,
    Welcome,
    encode,
    format_preamble,
)

__all__ = ["DialHandler", "DialPreparer", "PreparedDial", "TunnelAgent"]

log = logging.getLogger(__name__)

DialHandler = Callable[[socket.socket, DialRequest], Awaitable[None]]
"""Serves one dial on the connected data socket (it owns the socket from then on)."""
HeartbeatSource = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]


class PreparedDial(Protocol):
    """A dial already resolved and connected on the serving side."""

    async def serve(self, sock: socket.socket) -> None:
        """Serve it on the data socket (which it owns from then on)."""
        ...

    def cancel(self) -> None:
        """The data connection could not be opened: release what was prepared."""
        ...


DialPreparer = Callable[[DialRequest], Awaitable[PreparedDial]]
"""Resolves and authorizes a dial; a :class:`LimenError` is answered with ``dial_failed``."""


class TunnelAgent:
    def __init__(
        self, proxy_tunnel_address: str, credentials: HostCredentials,
        handler: DialHandler | None, heartbeat: HeartbeatSource, *,
        prepare: DialPreparer | None = None,
        peer_trust: Mapping[str, Sequence[PublicKey]] | None = None,
        peer_cluster: str | None = None,
        heartbeat_interval: float | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        keepalive_interval: float = 15.0,
        keepalive_count_max: int = 3,
        connect_timeout: float = 10.0,
        stable_after: float = 10.0,
        auth_idle_timeout: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address = proxy_tunnel_address
        self.credentials = credentials
        if (handler is None) == (prepare is None):
            raise BadParameter("a tunnel agent needs a dial handler or a dial preparer")
        self.handler = handler
        self.prepare = prepare
        self.heartbeat = heartbeat
        self.heartbeat_interval = heartbeat_interval
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.connect_timeout = connect_timeout
        self.stable_after = stable_after
        self.auth_idle_timeout = auth_idle_timeout
        self.clock = clock
        self.connected = asyncio.Event()
        """Set while a verified control connection is up."""
        self.proxy_id = ""
        self.connections = 0
        """How many control connections were established (tests, metrics)."""
        self.last_error = ""
        self._host, self._port = parse_address(proxy_tunnel_address)
        self._key, _cert = host_key(credentials)
        self._trust = dict(peer_trust) if peer_trust is not None else trust_map(credentials)
        self.peer_cluster = peer_cluster or credentials.cluster
        """The cluster the proxy at the other end must belong to."""
        self._writer: Any = None
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._connects: dict[int, asyncio.Future[str]] = {}
        self._auth_listener: LocalAuthListener | None = None
        self._welcomed_at: float | None = None
        self._changed = Changed()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"tunnel-agent {self.address}")

    async def stop(self) -> None:
        if self._auth_listener is not None:
            self._auth_listener.close()
            self._auth_listener = None
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for child in list(self._tasks):
            child.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.connected.clear()

    async def _run(self) -> None:
        while True:
            self._welcomed_at = None
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncssh.Error, LimenError, TimeoutError, ValueError) as err:
                self.last_error = str(err) or type(err).__name__
                log.warning("tunnel agent: connection to %s failed: %s", self.address,
                            self.last_error)
            finally:
                self._disconnected()
            if self._was_stable():
                self.backoff.reset()
            await self._sleep(self.backoff.next_delay())

    async def wait_for(self, predicate: Callable[[TunnelAgent], bool], within: float) -> None:
        """Return once ``predicate(self)`` holds (checked at every connect and disconnect);
        ``TimeoutError`` after ``within`` seconds."""
        async with asyncio.timeout(within):
            while not predicate(self):
                await self._changed.event.wait()

    def _was_stable(self) -> bool:
        """The last connection was welcomed and stayed up ``stable_after`` seconds."""
        started = self._welcomed_at
        return started is not None and time.monotonic() - started >= self.stable_after

    def _disconnected(self) -> None:
        if self.connected.is_set():
            self.connected.clear()
            self._changed.notify()
        self._writer = None
        self._conn = None
        for future in self._connects.values():
            if not future.done():
                future.set_exception(ConnectionProblem("the tunnel to the proxy went down"))
        self._connects.clear()

    async def _session(self) -> None:
        """One control connection, from connect to loss (``_welcomed_at`` records when the
        proxy's welcome was verified)."""
        async with asyncssh.connect(
            self._host, self._port, username=self.credentials.host_id,
            client_keys=[self._key], known_hosts=None, agent_path=None, config=None,
            preferred_auth="publickey", **client_algorithms(), max_pktsize=MAX_PACKET,
            keepalive_interval=self.keepalive_interval,
            keepalive_count_max=self.keepalive_count_max,
            connect_timeout=self.connect_timeout, login_timeout=self.connect_timeout,
        ) as conn:
            self._conn = conn
            writer, reader, _stderr = await conn.open_session(subsystem=CONTROL_SUBSYSTEM,
                                                              encoding=None)
            writer.write(encode(Hello(cert=self.credentials.ssh_cert.decode().strip())))
            decoder = Decoder()
            pending: list[Message] = []
            async with asyncio.timeout(self.connect_timeout):
                while not pending:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionProblem("the proxy closed the tunnel before welcome")
                    pending = decoder.feed(data)
            welcome = pending.pop(0)
            if not isinstance(welcome, Welcome):
                raise BadParameter(f"expected welcome from the proxy, got {welcome.type}")
            self._check_proxy(welcome, conn)
            self._welcomed_at = time.monotonic()
            self._writer = writer
            self.connections += 1
            self.connected.set()
            self._changed.notify()
            log.info("tunnel agent: connected to proxy %s at %s", self.proxy_id, self.address)
            beats = asyncio.create_task(self._heartbeats(
                writer, self.heartbeat_interval or welcome.heartbeat_interval))
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
        identity = verify_peer_host_cert(
            welcome.cert, bytes(server_key.public_data), self._trust, {SystemRole.PROXY},
            datetime.fromtimestamp(self.clock(), UTC))
        if welcome.cluster != self.peer_cluster or identity.cluster != self.peer_cluster:
            raise ConnectionProblem(f"the proxy serves cluster {identity.cluster!r}, not "
                                    f"{self.peer_cluster!r}")
        self.proxy_id = welcome.proxy_id

    async def _heartbeats(self, writer: Any, interval: float) -> None:
        while True:
            try:
                payload = self.heartbeat()
                if inspect.isawaitable(payload):
                    payload = await payload
                writer.write(encode(Heartbeat(resource=payload)))
            except (LimenError, OSError, asyncssh.Error) as err:
                log.warning("tunnel agent: cannot send a heartbeat: %s", err)
            except Exception:  # the payload callable is the caller's code: keep beating
                log.exception("tunnel agent: the heartbeat payload failed")
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ messages

    def _handle(self, message: Message) -> None:
        if isinstance(message, Dial):
            self._spawn(self._serve_dial(message.request))
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

    async def _serve_dial(self, request: DialRequest) -> None:
        if request.mode != MODE_RAW or request.kind != KIND_NODE:
            self._send(DialFailed(request.nonce, f"this agent does not serve {request.kind} "
                                                 f"dials in {request.mode} mode"))
            return
        prepared: PreparedDial | None = None
        if self.prepare is not None:
            try:
                prepared = await self.prepare(request)
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
                assert self.handler is not None
                await self.handler(sock, request)
        except Exception:
            log.exception("tunnel agent: dial handler failed for %s", request.client_addr)
            sock.close()

    async def _open_data_connection(self, nonce: str) -> socket.socket:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        family, kind, proto, _name, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            tune_socket(sock)
            async with asyncio.timeout(self.connect_timeout):
                await loop.sock_connect(sock, address)
                await loop.sock_sendall(sock, format_preamble(nonce))
        except (OSError, TimeoutError) as err:
            sock.close()
            raise OSError(f"data connection to {self.address}: {err}") from err
        return sock

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ auth through the proxy

    async def local_auth_listener(self, address: str = "127.0.0.1:0") -> str:
        """A loopback listener whose connections reach the auth API through the proxy (see
        :mod:`limen.tunnel.auth_route`); closed by :meth:`stop`."""
        if self._auth_listener is None:
            self._auth_listener = LocalAuthListener(
                self.request_auth_nonce, self._host, self._port, self._spawn,
                idle_timeout=self.auth_idle_timeout)
        return await self._auth_listener.start(address)

    async def request_auth_nonce(self) -> str:
        """Ask the proxy for a data connection to auth; returns its nonce."""
        limit = self.connect_timeout
        try:
            async with asyncio.timeout(limit):
                await self.connected.wait()
        except TimeoutError:
            raise ConnectionProblem(f"no tunnel to the proxy {self.address}"
                                    + (f": {self.last_error}" if self.last_error else "")
                                    ) from None
        request_id = next(self._ids)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._connects[request_id] = future
        self._send(Connect(request_id, KIND_AUTH))
        try:
            async with asyncio.timeout(limit):
                return await future
        except TimeoutError:
            raise ConnectionProblem("the proxy did not answer the auth connect request") \
                from None
        finally:
            self._connects.pop(request_id, None)
