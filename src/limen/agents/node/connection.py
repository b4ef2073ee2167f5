"""One SSH connection to the node agent: certificate authentication, per-request RBAC, port
and agent forwarding, idle and certificate-expiry disconnects.

Created by :class:`~limen.agents.node.ssh_server.NodeSSHServer` for every accepted or tunnelled
socket. Two objects per connection, both asyncssh extension points:

* :class:`NodeConnection` — asyncssh's server connection with Limen's check in front of its
  own: every offered key goes through :func:`~limen.agents.node.certauth.authenticate_key`
  (user certificate, trust map read for this attempt, cluster, expiry, principal = login)
  before asyncssh verifies the signature; refusals are audited (``auth``) with the reason.
* :class:`NodeConnectionHandler` — the ``SSHServer`` owner: after authentication it reads the
  user's merged role options, then decides every session, ``direct-tcpip`` (``-L``) and
  ``tcpip-forward`` (``-R``) request with the :class:`AccessPolicy` (node labels + login) and
  refuses with a message and an ``access.denied`` event naming the deciding role and rule.

Forwarding needs both the certificate extension (``permit-port-forwarding`` /
``permit-agent-forwarding``, checked by asyncssh) and the roles (``port_forwarding`` /
``forward_agent``). Remote forwards bind loopback only (sshd's ``GatewayPorts no``) and
privileged ports only for root. A forwarded agent socket lives in a 0700 directory owned by
the session's user. Client activity (session input, ``-L`` data, new channels) resets the idle
timer of ``client_idle_timeout``; with ``disconnect_expired_cert`` a timer fires at the
certificate's end.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any, NoReturn

import asyncssh
from asyncssh.forward import SSHForwarder

from limen.agents.node.certauth import VerifiedUser, authenticate_key, is_certificate
from limen.agents.node.context import ConnState, NodeContext
from limen.agents.node.session import NodeSession
from limen.agents.node.unixuser import UnixUser, check_can_run_as, lookup_user
from limen.errors import AccessDenied, LimenError
from limen.net.sshalgs import MAX_PACKET
from limen.net.tcp import tune_socket
from limen.rbac import SessionOptions
from limen.services.locks import lock_fields

__all__ = ["NodeConnection", "NodeConnectionHandler"]

log = logging.getLogger("limen.agents.node")

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_PROHIBITED = asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED


class NodeConnection(asyncssh.SSHServerConnection):
    """asyncssh's server connection, with Limen's certificate check (see the module doc)."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 options: asyncssh.SSHServerConnectionOptions, *,
                 client_addr: tuple[str, int] | None = None) -> None:
        super().__init__(loop, options)
        self.limen_client_addr = client_addr

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tune_socket(transport.get_extra_info("socket"))
        super().connection_made(transport)

    def _handler(self) -> NodeConnectionHandler | None:
        owner = self.get_owner()
        return owner if isinstance(owner, NodeConnectionHandler) else None

    async def validate_public_key(self, username: str, key_data: bytes, msg: bytes,
                                  signature: bytes) -> bool:
        handler = self._handler()
        if handler is None or not handler.check_key(username, key_data):
            return False
        accepted = bool(await super().validate_public_key(username, key_data, msg, signature))
        if accepted and msg:
            handler.key_accepted(key_data)
        return accepted

    async def create_agent_listener(self) -> bool:
        handler = self._handler()
        if handler is None or not handler.agent_forwarding_allowed():
            return False
        if not await super().create_agent_listener():
            return False
        path = self.get_agent_path()
        if path is not None:
            handler.hand_over_agent_socket(path)
        return True


class _ChannelForwarder(SSHForwarder):
    """The channel side of a ``-L`` forward; data from the client counts as activity."""

    def __init__(self, peer: SSHForwarder, state: ConnState) -> None:
        super().__init__(peer)
        self._state = state

    def data_received(self, data: bytes, datatype: int | None = None) -> None:
        self._state.touch()
        super().data_received(data, datatype)


class NodeConnectionHandler(asyncssh.SSHServer):
    """The per-connection ``SSHServer`` (see the module docstring)."""

    def __init__(self, node: NodeContext, registry: set[NodeConnectionHandler]) -> None:
        self.node = node
        self.registry = registry
        self.conn: NodeConnection | None = None
        self.state = ConnState(node, ("", 0), ("", 0))
        self._candidates: dict[bytes, VerifiedUser] = {}
        self._timers: list[asyncio.TimerHandle] = []
        self.disconnect_reason = ""
        self._plain_key_reason = ""
        self._failed_certificates = 0

    # -- connection life ---------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        assert isinstance(conn, NodeConnection)
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("", 0)
        local = conn.get_extra_info("sockname") or ("", 0)
        client = conn.limen_client_addr or (str(peer[0]), int(peer[1]))
        self.state = ConnState(self.node, client, (str(local[0]), int(local[1])))
        self.registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.registry.discard(self)
        if self.state.verified is not None:
            reason = self.disconnect_reason or (str(exc) if exc else "client disconnected")
            self._audit("client.disconnect", reason=reason)
        elif self._plain_key_reason and not self._failed_certificates:
            self._audit("auth", success=False, reason=self._plain_key_reason)

    def _audit(self, event_type: str, *, success: bool | None = None, **fields: Any) -> None:
        self.node.audit.emit(event_type, success=success, user=self.state.user,
                             **self.state.fields(), **fields)

    def disconnect(self, reason: str) -> None:
        """Tell the sessions why, then close the connection with ``reason``."""
        if self.conn is None:
            return
        self.disconnect_reason = reason
        for session in list(self.state.sessions):
            if session.chan is not None and not session._closed:
                session.chan.write_stderr(f"\r\nlimen: {reason}\r\n".encode())
        self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)

    # -- authentication ------------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        self.state.login = username
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def check_key(self, username: str, key_data: bytes) -> bool:
        """Limen's verdict on an offered key (audited when refused)."""
        if key_data in self._candidates:
            return True
        try:
            verified = authenticate_key(key_data, username, self.node.trust())
        except AccessDenied as err:
            if is_certificate(key_data):
                self._audit("auth", success=False, reason=str(err))
                self._failed_certificates += 1
            else:  # clients probe plain keys too: audited once, if nothing else succeeds
                self._plain_key_reason = str(err)
            return False
        except Exception as err:  # a bug must not let anyone in, nor kill the connection
            log.exception("certificate check failed")
            self._audit("auth", success=False, reason=f"internal error: {err}")
            return False
        self._candidates[key_data] = verified
        return True

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # Called by asyncssh after check_key accepted the certificate: the CA it names must
        # be the one Limen verified.
        return any(v.ca_blob == key.public_data for v in self._candidates.values())

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return False  # plain keys: never (check_key already refused and audited them)

    def key_accepted(self, key_data: bytes) -> None:
        self.state.verified = self._candidates[key_data]

    async def auth_completed(self) -> None:
        try:
            self.state.options = await self.node.access.session_options(self.state.identity)
        except AccessDenied as err:  # a lock (limen.services.locks)
            self._audit("access.denied", action="connection", role=None, rule="lock",
                        reason=str(err), **lock_fields(err))
            self.disconnect(str(err))
            return
        except Exception as err:
            log.exception("cannot read the session options of %s", self.state.user)
            self.disconnect(f"cannot read the user's roles: {err}")
            return
        limit = self.state.options.max_connections
        if limit and self._open_connections() > limit:
            reason = f"at most {limit} concurrent connections for {self.state.user}"
            self._audit("access.denied", action="connection", role=None,
                        rule="options.max_connections", reason=reason)
            self.disconnect(f"access denied: {reason}")
            return
        self._start_timers(self.state.options)

    def _open_connections(self) -> int:
        """Authenticated connections of this user to this node, this one included."""
        me = self.state.identity
        return sum(1 for h in self.registry if h.state.verified is not None
                   and h.state.identity.username == me.username
                   and h.state.identity.cluster == me.cluster)

    def _start_timers(self, options: SessionOptions) -> None:
        loop = asyncio.get_running_loop()
        if options.client_idle_timeout:
            timeout = options.client_idle_timeout.total_seconds()
            self._timers.append(loop.call_later(timeout, self._check_idle, timeout))
        not_after = self.state.identity.not_after
        if options.disconnect_expired_cert and not_after is not None:
            delay = max((not_after - datetime.now(UTC)).total_seconds(), 0.0)
            self._timers.append(loop.call_later(delay, self._expired))

    def _check_idle(self, timeout: float) -> None:
        idle = time.monotonic() - self.state.last_activity
        if idle >= timeout:
            self.disconnect(f"idle timeout: no client activity for {timeout:g}s")
        else:
            self._timers.append(asyncio.get_running_loop().call_later(
                timeout - idle, self._check_idle, timeout))

    def _expired(self) -> None:
        self.disconnect("the user's certificate has expired")

    # -- authorization -----------------------------------------------------------------

    async def authorize(self, what: str) -> tuple[SessionOptions, UnixUser]:
        """RBAC for the connection's login; ChannelOpenError (audited) when refused."""
        state = self.state
        identity = state.identity
        not_after = identity.not_after
        if not_after is not None and datetime.now(UTC) >= not_after:
            self._deny(what, None, "certificate", "the user's certificate has expired")
        try:
            decision = await self.node.access.check_ssh(identity, state.login)
            options = await self.node.access.session_options(identity)  # roles may change
        except AccessDenied as err:  # a lock (limen.services.locks)
            self._deny(what, None, "lock", str(err), **lock_fields(err))
        except LimenError as err:
            self._deny(what, None, "error", f"cannot evaluate access: {err}")
        if not decision.allowed:
            self._deny(what, decision.role, decision.rule, decision.reason)
        try:
            user = state.unix_user or lookup_user(state.login)
            check_can_run_as(user)
        except LimenError as err:
            self._deny(what, None, "unix_user", str(err))
        state.unix_user = user
        return options, user

    def _deny(self, what: str, role: str | None, rule: str, reason: str,
              **fields: Any) -> NoReturn:
        self._audit("access.denied", action=what, role=role, rule=rule, reason=reason, **fields)
        raise asyncssh.ChannelOpenError(_PROHIBITED, f"access denied: {reason}")

    # -- sessions ------------------------------------------------------------------------

    def session_requested(self) -> Any:
        assert self.conn is not None
        self.state.touch()
        chan = self.conn.create_server_channel(encoding=None, max_pktsize=MAX_PACKET)
        return chan, self.open_session()

    async def open_session(self) -> NodeSession:
        options, user = await self.authorize("session")
        if options.max_sessions and len(self.state.sessions) >= options.max_sessions:
            self._deny("session", None, "options.max_sessions",
                       f"at most {options.max_sessions} sessions per connection")
        return NodeSession(self.state, str(uuid.uuid4()), options, user)

    # -- port forwarding -----------------------------------------------------------------

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Any:
        self.state.touch()
        return self.open_direct_tcpip(dest_host, dest_port)

    async def open_direct_tcpip(self, host: str, port: int) -> SSHForwarder:
        options, _ = await self.authorize("port forwarding")
        addr = f"{host}:{port}"
        if not options.port_forwarding:
            self._audit("port", success=False, action="local", addr=addr,
                        reason="port forwarding is disabled by the user's roles")
            raise asyncssh.ChannelOpenError(_PROHIBITED, "access denied: port forwarding is "
                                                         "disabled by the user's roles")
        try:
            _, peer = await asyncio.get_running_loop().create_connection(
                SSHForwarder, host, port)
        except OSError as err:
            self._audit("port", success=False, action="local", addr=addr, reason=str(err))
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(err)) from None
        self._audit("port", action="local", addr=addr)
        return _ChannelForwarder(peer, self.state)

    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        self.state.touch()
        return self.open_remote_forward(listen_host, listen_port)

    async def open_remote_forward(self, host: str, port: int) -> bool:
        addr = f"{host}:{port}"
        try:
            options, user = await self.authorize("remote port forwarding")
        except asyncssh.ChannelOpenError:
            return False
        reason = None
        if not options.port_forwarding:
            reason = "port forwarding is disabled by the user's roles"
        elif host not in _LOOPBACK:
            reason = "remote forwards may only listen on loopback addresses"
        elif 0 < port < 1024 and not user.is_root:
            reason = "privileged ports can only be forwarded by root"
        if reason is not None:
            self._audit("port", success=False, action="remote", addr=addr, reason=reason)
            return False
        self._audit("port", action="remote", addr=addr)
        return True

    # -- agent forwarding ------------------------------------------------------------------

    def agent_forwarding_allowed(self) -> bool:
        state = self.state
        allowed = (state.verified is not None and state.verified.permit_agent_forwarding
                   and state.options is not None and state.options.forward_agent
                   and state.unix_user is not None)
        if not allowed:
            self._audit("access.denied", action="agent forwarding", role=None,
                        rule="options.forward_agent",
                        reason="agent forwarding is not allowed by the certificate or roles")
        return bool(allowed)

    def hand_over_agent_socket(self, path: str) -> None:
        """Give the forwarded agent socket (and its 0700 directory) to the session's user."""
        user = self.state.unix_user
        if user is None or os.geteuid() != 0:
            return
        directory = os.path.dirname(path)
        os.chown(directory, user.uid, user.gid)
        os.chmod(directory, 0o700)
        os.chown(path, user.uid, user.gid)
