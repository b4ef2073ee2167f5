"""The proxy's SSH front for users (listener ``ssh_proxy``, port 3023): authentication and
channels. What a channel connects to is decided by a :class:`Connector` (the protocol declared
here; :class:`limen.proxy.sshproxy.SSHConnector` implements it and the proxy's SSH service
passes it in, so this module never imports the service).

::

    ssh -J alice@proxy:3023 alice@web1          lmsh proxy ssh (ProxyCommand)
      └─ direct-tcpip "web1:22"                   └─ session, subsystem "proxy:web1:3022@root"
                 │                                              │
                 └──────────── SSHConnector.connect ────────────┘
                               relay: channel ◀──▶ tunnel data connection / agentless TCP

Authentication: Limen user certificates only, checked on every connection with
:func:`~limen.ca.ssh_certs.verify_ssh_user_cert` against the trusted user CAs (signature,
cluster, validity, principals matching the identity). asyncssh would also insist that the SSH
user name be one of the certificate's principals; the user name at a jump host means nothing
(the login is chosen on the inner connection), so once Limen's check passed, asyncssh's own
check (CA key, validity, signature over the session id) runs with one of the certificate's
principals. Plain keys, passwords and keyboard-interactive are refused; every refused
certificate is audited (``auth``, code L3005W) once per connection.

No shells, no exec, no agent or X11 forwarding, no remote forwarding on the front.

A subsystem that cannot be connected answers with the reason as one line on the channel's
stderr and exit status 1 (``unknown node 'x'``; ``lmsh proxy ssh`` prints it); a refused
jump channel carries it as the open failure's reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncssh

from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity
from limen.ca.keys import PublicKey, load_public_key, ssh_public_key_blob
from limen.ca.ssh_certs import NO_LOGIN_PRINCIPAL, verify_ssh_user_cert
from limen.ca.ssh_peer import host_key
from limen.errors import AccessDenied, LimenError
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.net.address import bind_tcp, socket_address
from limen.net.relay import Relay
from limen.net.sshalgs import MAX_PACKET, server_algorithms
from limen.net.sshserver import PublicKeyOnlyServer
from limen.net.tcp import tune_socket
from limen.proxy.routing import parse_subsystem

__all__ = ["Connector", "SSHFront"]

log = logging.getLogger(__name__)
_CERT_SUFFIX = b"-cert-v01@openssh.com"


class Connector(Protocol):
    """What the front needs from whatever routes a user's channel (the proxy's
    :class:`~limen.proxy.sshproxy.SSHConnector`)."""

    @property
    def credentials(self) -> HostCredentials:
        """The proxy's host credentials: its host key, cluster and trusted user CAs."""

    @property
    def emitter(self) -> Emitter:
        """Where refused logins are audited."""

    @property
    def clock(self) -> Callable[[], float]: ...

    def new_relay(self, name: str) -> Relay:
        """A relay for a channel whose target is connected later (a subsystem)."""

    async def connect(self, identity: Identity, host: str, port: int, cluster: str | None,
                      client_addr: str, *, via: str, relay: Relay | None = None,
                      cert: str = "", local_only: bool = False,
                      login: str | None = None) -> Relay:
        """A relay whose side 1 is connected to the target; the caller attaches side 0."""


class SSHFront:
    def __init__(self, connector: Connector, *, keepalive_interval: float = 30.0,
                 keepalive_count_max: int = 4, login_timeout: float = 30.0) -> None:
        self.connector = connector
        creds = connector.credentials
        self.cluster = creds.cluster
        self.user_trust: dict[str, tuple[PublicKey, ...]] = {}
        self.user_ca_blobs: set[bytes] = set()
        self._trust_users(creds)
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.login_timeout = login_timeout
        self.address = ""
        self.connections: set[_UserConnection] = set()
        self._server: asyncio.Server | None = None
        self._options: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _trust_users(self, creds: HostCredentials) -> None:
        self.user_trust = {creds.cluster: tuple(load_public_key(k) for k in creds.user_ca_keys)}
        self.user_ca_blobs = {ssh_public_key_blob(k) for k in self.user_trust[creds.cluster]}

    async def _construct_options(self) -> Any:
        key, cert = host_key(self.connector.credentials)
        return await asyncssh.SSHServerConnectionOptions.construct(
            server_factory=lambda: _FrontServer(self), server_host_keys=[key],
            server_host_certs=[cert], **server_algorithms(), max_pktsize=MAX_PACKET,
            encoding=None, allow_pty=False,
            agent_forwarding=False, x11_forwarding=False, line_editor=False,
            login_timeout=self.login_timeout, keepalive_interval=self.keepalive_interval,
            keepalive_count_max=self.keepalive_count_max)

    async def use_credentials(self, creds: HostCredentials) -> None:
        """Trust ``creds``' user CA keys and present its host certificate on new connections
        (a CA rotation: ``limen.agents.host_cert_renewal``); open connections keep theirs.
        The connector's credentials are the caller's to replace first."""
        self._trust_users(creds)
        if self._options is not None:
            self._options = await self._construct_options()

    async def start(self, address: str) -> str:
        self._options = await self._construct_options()
        sock = bind_tcp(address)
        self.address = socket_address(sock)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _UserConnection(self, loop, self._options), sock=sock)
        log.info("SSH proxy listening on %s", self.address)
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await conn.wait_closed()

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def check_certificate(self, key_data: bytes, peer: str, username: str) -> Identity | None:
        """The identity of an offered user certificate, or None (refusal logged/audited)."""
        line = _cert_line(key_data)
        if not line:
            log.debug("ssh proxy: plain key offered by %s refused", peer)
            return None
        try:
            identity = verify_ssh_user_cert(line, self.user_trust,
                                            datetime.fromtimestamp(self.connector.clock(), UTC))
            if identity.is_system:
                raise AccessDenied("a host or system certificate cannot log in as a user")
            if identity.usage and "ssh" not in identity.usage:
                raise AccessDenied(f"certificate is restricted to {', '.join(identity.usage)}")
        except AccessDenied as err:
            log.warning("ssh proxy: certificate from %s refused: %s", peer, err)
            self.spawn(self._audit_refusal(peer, username, str(err)))
            return None
        return identity

    async def _audit_refusal(self, peer: str, username: str, reason: str) -> None:
        try:
            await self.connector.emitter.emit(make_event(
                "auth", success=False, cluster=self.cluster, user=username or None,
                remote_addr=peer, reason=reason, listener="ssh_proxy"))
        except (LimenError, OSError):
            log.exception("ssh proxy: cannot audit a refused login")


def _cert_line(key_data: bytes) -> str:
    """The OpenSSH line of a certificate key blob ("" for a plain key)."""
    size = int.from_bytes(key_data[:4], "big")
    algorithm = key_data[4:4 + size]
    if not algorithm.endswith(_CERT_SUFFIX):
        return ""
    return f"{algorithm.decode(errors='replace')} {base64.b64encode(key_data).decode()}"


class _UserConnection(asyncssh.SSHServerConnection):
    """An asyncssh server connection that checks user certificates with Limen's verifier."""

    def __init__(self, front: SSHFront, loop: asyncio.AbstractEventLoop, options: Any) -> None:
        super().__init__(loop, options)
        self.front = front
        self.identity: Identity | None = None
        self.cert = ""
        """The authenticated user certificate (OpenSSH line), presented to leaf clusters."""
        self.ssh_user = ""
        """The SSH user name the client logged in to the proxy with: the ProxyCommand
        (``lmsh proxy ssh``) uses the login of the inner session, so subsystem targets are
        checked for it before dialling."""
        self.peer = ""
        self._checked: dict[bytes, Identity | None] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tune_socket(transport.get_extra_info("socket"))
        host, port = (transport.get_extra_info("peername") or ("?", 0))[:2]
        self.peer = f"{host}:{port}"
        self.front.connections.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None = None) -> None:
        self.front.connections.discard(self)
        super().connection_lost(exc)

    def check_certificate_permission(self, permission: str) -> bool:
        # A jump (direct-tcpip) at the proxy reaches only registered nodes: it is routing, not
        # port forwarding; the role option port_forwarding is enforced where it means
        # something, at the node. Everything else stays as the certificate says (and is off
        # on the front anyway).
        if permission == "port-forwarding":
            return True
        return bool(super().check_certificate_permission(permission))

    async def validate_public_key(self, username: str, key_data: bytes, msg: bytes,
                                  signature: bytes) -> bool:
        if key_data not in self._checked:
            self._checked[key_data] = self.front.check_certificate(key_data, self.peer, username)
        identity = self._checked[key_data]
        if identity is None:
            return False
        principal = identity.logins[0] if identity.logins else NO_LOGIN_PRINCIPAL
        ok = bool(await super().validate_public_key(principal, key_data, msg, signature))
        if ok and msg:
            self.identity = identity
            self.cert = _cert_line(key_data)
            self.ssh_user = username
        return ok


class _FrontServer(PublicKeyOnlyServer):
    """Per-connection policy hooks (asyncssh's ``server_factory`` object)."""

    def __init__(self, front: SSHFront) -> None:
        self.front = front
        self.conn: _UserConnection | None = None
        self.relays: set[Relay] = set()

    def connection_made(self, conn: Any) -> None:
        self.conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        for relay in list(self.relays):
            relay.close("client connection closed")

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_ca_key(self, username: str, key: Any) -> bool:
        return bytes(key.public_data) in self.front.user_ca_blobs

    def validate_public_key(self, username: str, key: Any) -> bool:
        return False

    def _identity(self) -> Identity:
        if self.conn is None or self.conn.identity is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                            "not authenticated")
        return self.conn.identity

    def _track(self, relay: Relay) -> None:
        self.relays.add(relay)
        relay.done.add_done_callback(lambda _f: self.relays.discard(relay))

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Awaitable[_ChannelSide]:
        return self._open_tcp(dest_host, dest_port)

    async def _open_tcp(self, host: str, port: int) -> _ChannelSide:
        identity = self._identity()
        assert self.conn is not None
        try:
            relay = await self.front.connector.connect(identity, host, port, None,
                                                       self.conn.peer, via="jump",
                                                       cert=self.conn.cert)
        except LimenError as err:
            code = (asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED if isinstance(err, AccessDenied)
                    else asyncssh.OPEN_CONNECT_FAILED)
            raise asyncssh.ChannelOpenError(code, str(err)) from None
        except Exception:
            log.exception("ssh proxy: connecting %s to %s failed", self.conn.peer, host)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                            "internal error (see the proxy log)") from None
        self._track(relay)
        return _ChannelSide(relay)

    def session_requested(self) -> Any:
        identity = self._identity()
        return _SubsystemSession(self, identity)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False


class _ChannelSide(asyncssh.SSHTCPSession[bytes]):
    """A direct-tcpip channel as side 0 of a relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def connection_made(self, chan: Any) -> None:
        self.relay.attach(0, chan)

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.relay.received(0, data)

    def eof_received(self) -> bool:
        self.relay.eof(0)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(0, exc)

    def pause_writing(self) -> None:
        self.relay.pause(0)

    def resume_writing(self) -> None:
        self.relay.resume(0)


class _ExitOnClose:
    """The subsystem channel as a relay endpoint: closing sends exit-status 0 first."""

    def __init__(self, chan: Any) -> None:
        self.chan = chan
        self.write: Callable[[bytes], None] = chan.write
        self.write_eof: Callable[[], None] = chan.write_eof
        self.can_write_eof: Callable[[], bool] = chan.can_write_eof
        self.pause_reading: Callable[[], None] = chan.pause_reading
        self.resume_reading: Callable[[], None] = chan.resume_reading
        self.abort: Callable[[], None] = chan.abort

    def close(self) -> None:
        try:
            self.chan.exit(0)
        except (OSError, RuntimeError, asyncssh.Error):
            self.chan.close()


class _SubsystemSession(asyncssh.SSHServerSession[bytes]):
    """``proxy:host:port@cluster``: the session's stdin/stdout relayed to the target."""

    def __init__(self, owner: _FrontServer, identity: Identity) -> None:
        self.owner = owner
        self.identity = identity
        self.chan: Any = None
        self.target: tuple[str, int, str | None] | None = None
        self.relay: Relay | None = None

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def subsystem_requested(self, subsystem: str) -> bool:
        try:
            self.target = parse_subsystem(subsystem)
        except LimenError as err:
            log.info("ssh proxy: subsystem refused: %s", err)
            return False
        return True

    def session_started(self) -> None:
        self.relay = relay = self.owner.front.connector.new_relay("subsystem")
        self.owner._track(relay)
        self.chan.pause_reading()  # until the target is connected
        self.owner.front.spawn(self._connect(relay))

    async def _connect(self, relay: Relay) -> None:
        assert self.target is not None
        assert self.owner.conn is not None
        host, port, cluster = self.target
        try:
            await self.owner.front.connector.connect(
                self.identity, host, port, cluster, self.owner.conn.peer, via="subsystem",
                relay=relay, cert=self.owner.conn.cert,
                login=self.owner.conn.ssh_user or None)
        except Exception as err:
            if not isinstance(err, LimenError):
                log.exception("ssh proxy: connecting %s to %s failed", self.owner.conn.peer,
                              host)
                err = LimenError("internal error (see the proxy log)")
            # the reason alone, one line: the ProxyCommand prints it as "lmsh: <reason>"
            reason = " ".join(str(err).split()) or "cannot reach the target"
            with contextlib.suppress(Exception):
                self.chan.write_stderr(f"{reason}\n".encode())
                self.chan.exit(1)
            relay.close(str(err))
            return
        relay.attach(0, _ExitOnClose(self.chan))
        self.chan.resume_reading()

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.relay is not None:
            self.relay.received(0, data)

    def eof_received(self) -> bool:
        if self.relay is not None:
            self.relay.eof(0)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.relay is not None:
            self.relay.lost(0, exc)

    def pause_writing(self) -> None:
        if self.relay is not None:
            self.relay.pause(0)

    def resume_writing(self) -> None:
        if self.relay is not None:
            self.relay.resume(0)
