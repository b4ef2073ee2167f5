"""The SSH proxy reached through the web port: ALPN ``limen-ssh-proxy`` (routed by
:mod:`limen.proxy.tls_router`), used by ``lmsh proxy ssh``, OpenSSH's ProxyCommand.

::

    lmsh proxy ssh ──TLS + user cert──▶ SSHTLSRoute: 1. the certificate (user CA = the
                                                        cluster's TLS CA, cluster, expiry,
                                                        a user's, usable for SSH)
                                                     2. one request line (ssh_tls_wire)
                                                     3. SSHConnector.connect (the SSH
                                                        front's route decision: RBAC, login,
                                                        locks, leaf clusters, agentless;
                                                        it audits refusals)
                   ◀────── "OK" / "ERR <reason>" ──
                   ◀══════ raw bytes (Relay) ══════▶ tunnel data connection / agentless TCP

The user's SSH session is the only SSH layer: the proxy moves its bytes without decrypting
them. A refused certificate is audited as a failed ``auth`` (``listener: web``,
``via: tls``), a malformed or oversized request as ``route.failed``; both answer
``ERR <reason>`` and close. Built by :class:`limen.proxy.sshproxy.ProxySSHService`'s owner
(``limen.cli.proxy_component``), which gives it the SSH front's connector.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity
from limen.ca.keys import load_public_key
from limen.ca.ssh_certs import verify_ssh_user_cert
from limen.ca.x509_certs import verify_client_cert
from limen.errors import AccessDenied, LimenError
from limen.events.event import make_event
from limen.net.event_loop import stream_transport
from limen.net.relay import Relay
from limen.net.ssh_tls_wire import ANSWER_OK, MAX_REQUEST, SSHRouteRequest, answer_error
from limen.proxy.sshfront import Connector

__all__ = ["SSHTLSRoute"]

log = logging.getLogger(__name__)
REQUEST_TIMEOUT = 10.0
"""Seconds a client has, after the handshake, to send its request line."""


class SSHTLSRoute:
    """The route's state: trust, open connections; :meth:`protocol` is the router's factory."""

    def __init__(self, connector: Connector, *, request_timeout: float = REQUEST_TIMEOUT
                 ) -> None:
        self.connector = connector
        creds = connector.credentials
        self.cluster = creds.cluster
        self.request_timeout = request_timeout
        self._tls_trust = {creds.cluster: creds.tls_cas()}
        self._ssh_trust = {creds.cluster: tuple(load_public_key(k) for k in creds.user_ca_keys)}
        self.connections: set[_RouteProtocol] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def use_credentials(self, creds: HostCredentials) -> None:
        """Trust ``creds``' user CA keys from now on (a CA rotation)."""
        self._ssh_trust = {creds.cluster: tuple(load_public_key(k) for k in creds.user_ca_keys)}

    def protocol(self) -> asyncio.Protocol:
        return _RouteProtocol(self)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.connector.clock(), UTC)

    def identify(self, der: bytes | None) -> Identity:
        """The user the client certificate names; :class:`AccessDenied` otherwise."""
        if not der:
            raise AccessDenied("no client certificate: run lmsh login (the SSH route "
                               "authenticates users by their certificate)")
        identity = verify_client_cert(der, self._tls_trust, self._now())
        if identity.is_system:
            raise AccessDenied("a host or system certificate cannot log in as a user")
        if identity.usage and "ssh" not in identity.usage:
            raise AccessDenied(f"certificate is restricted to {', '.join(identity.usage)}")
        return identity

    def check_ssh_cert(self, identity: Identity, line: str) -> str:
        """``line`` when it is a valid SSH certificate of the same user ("" stays "")."""
        if not line:
            return ""
        ssh_identity = verify_ssh_user_cert(line, self._ssh_trust, self._now())
        if ssh_identity.username != identity.username:
            raise AccessDenied("the SSH certificate is not the TLS certificate's user's")
        return line

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def audit(self, event_type: str, identity: Identity | None, **fields: Any) -> None:
        try:
            await self.connector.emitter.emit(make_event(
                event_type, cluster=self.cluster,
                user=identity.username if identity else None, listener="web", via="tls",
                **fields))
        except (LimenError, OSError):
            log.exception("ssh route: cannot write audit event %s", event_type)

    async def stop(self) -> None:
        for conn in list(self.connections):
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class _RouteProtocol(asyncio.Protocol):
    """One connection until it is relayed: certificate, request line, decision."""

    def __init__(self, route: SSHTLSRoute) -> None:
        self.route = route
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.identity: Identity | None = None
        self.buffer = bytearray()
        self.deciding = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = stream_transport(transport)
        host, port = (transport.get_extra_info("peername") or ("?", 0))[:2]
        self.peer = f"{host}:{port}"
        self.route.connections.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        try:
            self.identity = self.route.identify(der)
        except AccessDenied as err:
            log.warning("ssh route: certificate from %s refused: %s", self.peer, err)
            self.refuse(str(err), lambda reason: self.route.audit(
                "auth", None, success=False, remote_addr=self.peer, reason=reason))
            return
        self.timer = asyncio.get_running_loop().call_later(
            self.route.request_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self.timer = None
        if not self.deciding:
            self.malformed(f"no request within {self.route.request_timeout:.0f} s")

    def data_received(self, data: bytes) -> None:
        if self.deciding or self.transport is None or self.transport.is_closing():
            return
        self.buffer += data
        end = self.buffer.find(b"\n")
        if end < 0:
            if len(self.buffer) >= MAX_REQUEST:
                self.malformed(f"request over {MAX_REQUEST} bytes")
            return
        if end + 1 > MAX_REQUEST:
            self.malformed(f"request over {MAX_REQUEST} bytes")
            return
        line, rest = bytes(self.buffer[:end]), bytes(self.buffer[end + 1:])
        self.buffer.clear()
        try:
            request = SSHRouteRequest.parse(line)
        except LimenError as err:
            self.malformed(str(err))
            return
        self.deciding = True
        self._cancel_timer()
        self.transport.pause_reading()
        self.route.spawn(self._decide(request, rest))

    def malformed(self, reason: str) -> None:
        log.info("ssh route: request from %s refused: %s", self.peer, reason)
        self.refuse(reason, lambda why: self.route.audit(
            "route.failed", self.identity, remote_addr=self.peer, reason=why,
            proxy=self.route.connector.credentials.host_id))

    def refuse(self, reason: str, audit: Callable[[str], Awaitable[None]]) -> None:
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer_error(reason))
            self.transport.close()
        self.route.spawn(audit(reason))

    async def _decide(self, request: SSHRouteRequest, rest: bytes) -> None:
        identity, transport = self.identity, self.transport
        assert identity is not None
        assert transport is not None
        connector = self.route.connector
        try:
            cert = self.route.check_ssh_cert(identity, request.ssh_cert)
        except AccessDenied as err:
            self.refuse(f"ssh_cert refused: {err}", lambda why: self.route.audit(
                "access.denied", identity, remote_addr=self.peer, reason=why,
                target=request.host))
            return
        relay: Relay = connector.new_relay(f"ssh {identity.username} -> {request.host}")
        try:
            await connector.connect(identity, request.host, request.port,
                                    request.cluster or None, self.peer, via="tls",
                                    relay=relay, cert=cert, login=request.login)
        except Exception as err:  # audited by the connector (routing refusals)
            if not isinstance(err, LimenError):
                log.exception("ssh route: connecting %s to %s failed", self.peer, request.host)
                err = LimenError("internal error (see the proxy log)")
            relay.close(str(err))
            self._cancel_timer()
            if not transport.is_closing():
                transport.write(answer_error(str(err) or "cannot reach the target"))
                transport.close()
            return
        if transport.is_closing():
            relay.close("client went away")
            return
        self.route.connections.discard(self)
        transport.write(ANSWER_OK)
        protocol = relay.protocol(0, half_close=False)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if rest:
            relay.received(0, rest)
        transport.resume_reading()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def abort(self) -> None:
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.route.connections.discard(self)
