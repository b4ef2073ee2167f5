"""Proxy side of one agent's control connection: SSH login, the hello check, the messages.

Authentication scheme (asyncssh accepts only *user* certificates for client authentication,
and an agent holds a *host* certificate):

1. SSH user authentication with the agent's plain public key. Any key passes this step; what it
   proves is that the peer holds the private key of ``key`` (the signature covers the session
   id). Certificates offered here are refused: a user certificate never opens a tunnel.
2. The only thing the connection may then do is open the ``limen-control@limen.dev``
   subsystem and send ``hello`` with its host certificate, within ``hello_timeout``. The
   proxy verifies it with :func:`~limen.ca.ssh_certs.verify_ssh_host_cert` against this
   cluster's host CA (signature, cluster, validity, agent role) and checks that it certifies
   the key from step 1. Otherwise the connection is dropped and the reason logged and audited.
3. Then the proxy answers ``welcome`` with its own host certificate (the agent runs the same
   check on the proxy's handshake key) and the cluster's proxy set, registers the agent, and
   accepts heartbeats, ``connect`` requests and ``dial_failed`` answers. No port forwarding,
   shells or other channels are ever accepted on the tunnel port. A hello whose ``held``
   names this proxy comes from an agent that already has its tunnel here (through another
   address): it is welcomed but not registered (the tunnel it holds stays), may send
   nothing, and is closed after ``hello_timeout`` if the agent does not close it first.

A hello whose certificate claims ANOTHER cluster is a leaf proxy's cluster link: it is verified
asynchronously against that leaf's host CA only (role proxy), and the link may then send nothing
but heartbeats, ``dial_failed`` answers and the leaf's own CAs (``leaf_cas``, passed on
unchecked: the root's auth checks the signature) (see :mod:`limen.tunnel.clusters`).

What a link needs from the server that accepted it is the :class:`LinkOwner` protocol declared
here (implemented by :class:`~limen.tunnel.server.TunnelServer`), so this module never imports
the server: the link reports, the owner keeps the books. Called by :mod:`limen.tunnel.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncssh

from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import PublicKey
from limen.ca.ssh_peer import verify_peer_host_cert
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError
from limen.net.sshserver import PublicKeyOnlyServer
from limen.tunnel.clusters import ClusterRecord, RemoteTrust, claimed_cluster, link_key
from limen.tunnel.protocol import (
    CONTROL_SUBSYSTEM,
    Connect,
    Decoder,
    DialFailed,
    Heartbeat,
    Hello,
    LeafCAs,
    Message,
    ProxyEntry,
    Welcome,
    encode,
)
from limen.tunnel.registry import AgentRecord

__all__ = ["AGENT_ROLES", "AgentLink", "LinkOwner"]

log = logging.getLogger(__name__)

AGENT_ROLES = frozenset({SystemRole.NODE, SystemRole.DB, SystemRole.KUBE, SystemRole.APP})
"""System roles allowed to open a reverse tunnel."""


class LinkOwner(Protocol):
    """What an :class:`AgentLink` needs from the server that accepted it: the settings it
    reads, the link's life (opened, registered, lost) and the messages it passes on. The owner
    keeps every table of links; a link never touches them."""

    @property
    def credentials(self) -> HostCredentials:
        """This proxy's host credentials (its cluster, the certificate sent in ``welcome``)."""

    @property
    def host_trust(self) -> Mapping[str, Sequence[PublicKey]]:
        """``{cluster: host CA keys}`` that verify an agent's hello."""

    @property
    def remote_trust(self) -> RemoteTrust | None:
        """Host CA keys of an admitted leaf cluster; None: no cluster links accepted."""

    @property
    def hello_timeout(self) -> float: ...

    @property
    def proxies(self) -> tuple[ProxyEntry, ...]:
        """The cluster's proxies, told to agents in ``welcome``."""

    @property
    def heartbeat_interval(self) -> float: ...

    def now(self) -> datetime: ...

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` as a task cancelled when the owner stops."""

    def refuse(self, peer: str, reason: str) -> None:
        """Log and audit a refused connection."""

    def link_opened(self, link: AgentLink) -> None:
        """A control connection arrived (not yet authenticated)."""

    def link_lost(self, link: AgentLink) -> None: ...

    def register(self, link: AgentLink, record: AgentRecord) -> None:
        """``link``'s hello is verified: it is now the agent ``record.host_id``."""

    def register_cluster(self, link: AgentLink, record: ClusterRecord) -> None:
        """``link``'s hello is verified: it is now the cluster link of ``record.cluster``."""

    def heartbeat(self, link: AgentLink, resource: Mapping[str, Any]) -> None: ...

    def cluster_heartbeat(self, link: AgentLink, payload: Mapping[str, Any]) -> None: ...

    def cluster_cas(self, link: AgentLink, update: Mapping[str, Any]) -> None:
        """A cluster link sent its leaf's own CA update (``leaf_cas``)."""

    def dial_failed(self, link: AgentLink, nonce: str, reason: str) -> None: ...

    def connect_request(self, link: AgentLink, message: Connect) -> Message:
        """The answer (``connect_ok`` or ``connect_failed``) to an agent's ``connect``."""

    def refuse_cluster_request(self, link: AgentLink, what: str) -> None:
        """A cluster link asked for something: refused, audited, the link dropped."""


class AgentLink(PublicKeyOnlyServer):
    """One control connection (the asyncssh ``server_factory`` object of the tunnel port)."""

    def __init__(self, owner: LinkOwner) -> None:
        self.owner = owner
        self.conn: Any = None
        self.peer = ""
        self.key_blob = b""
        self.identity: Identity | None = None
        self.host_id = ""
        """Set once the hello is verified (``@<cluster>`` for a cluster link)."""
        self.remote_cluster = ""
        """The leaf cluster of a verified cluster link; empty for agents."""
        self._verifying = False
        self.session: ControlSession | None = None
        self.replaced = False
        self.redundant = False
        """Welcomed but not registered: the agent holds a tunnel here already."""
        self._deadline: asyncio.TimerHandle | None = None
        self._refused: set[bytes] = set()
        self.wants_trust = False
        """The agent's hello asked for auth's signed trust answer (``trust`` messages)."""

    # ------------------------------------------------------------------ SSH server hooks

    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        host, port = (conn.get_extra_info("peername") or ("?", 0))[:2]
        self.peer = f"{host}:{port}"
        self.owner.link_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self.owner.link_lost(self)

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: Any) -> bool:
        # The last key asyncssh asks about before auth completes is the one that signed.
        self.key_blob = bytes(key.public_data)
        return True

    def validate_ca_key(self, username: str, key: Any) -> bool:
        blob = bytes(key.public_data)
        if blob not in self._refused:
            self._refused.add(blob)
            self.owner.refuse(self.peer, "a certificate was offered for SSH login at the "
                                          "tunnel port; agents log in with their key")
        return False

    def auth_completed(self) -> None:
        self._deadline = asyncio.get_running_loop().call_later(
            self.owner.hello_timeout, self._hello_missing)

    def session_requested(self) -> Any:
        if self.session is not None or self.replaced:
            return False
        self.session = ControlSession(self)
        return self.session

    def connection_requested(self, *args: Any) -> bool:
        return False

    def server_requested(self, *args: Any) -> bool:
        return False

    # ------------------------------------------------------------------ messages

    def send(self, message: Message) -> None:
        """Write one control message; :class:`ConnectionProblem` when the channel is gone."""
        self.send_frame(encode(message))

    def send_frame(self, frame: bytes) -> None:
        """Write one encoded control message (a message sent to many agents is encoded
        once); :class:`ConnectionProblem` when the channel is gone."""
        chan = self.session.chan if self.session is not None else None
        if chan is None or chan.is_closing():
            raise ConnectionProblem(f"the control channel of {self.host_id or self.peer} "
                                    "is closed")
        try:
            chan.write(frame)
        except (OSError, asyncssh.Error) as err:
            raise ConnectionProblem(f"cannot write to agent {self.host_id}: {err}") from None

    def handle(self, message: Message) -> None:
        if self.identity is None:
            if isinstance(message, Hello) and not self._verifying:
                self._hello(message)
            else:
                self.fail(f"expected hello, got {message.type}")
        elif self.redundant:
            self.fail(f"unexpected {message.type} message on a redundant tunnel")
        elif self.remote_cluster:
            self._cluster_message(message)
        elif isinstance(message, Heartbeat):
            self.owner.heartbeat(self, message.resource)
        elif isinstance(message, DialFailed):
            self.owner.dial_failed(self, message.nonce, message.reason)
        elif isinstance(message, Connect):
            with contextlib.suppress(ConnectionProblem):
                self.send(self.owner.connect_request(self, message))
        else:
            self.fail(f"unexpected {message.type} message from an agent")

    def _hello(self, hello: Hello) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        claimed = claimed_cluster(hello.cert)
        if claimed and claimed != self.owner.credentials.cluster \
                and self.owner.remote_trust is not None:
            self._verifying = True
            self.owner.spawn(self._cluster_hello(hello, claimed))
            return
        try:
            identity = verify_peer_host_cert(hello.cert, self.key_blob, self.owner.host_trust,
                                             AGENT_ROLES, self.owner.now())
        except AccessDenied as err:
            self.owner.refuse(self.peer, str(err))
            self.fail(f"tunnel refused: {err}", log_it=False)
            return
        self.identity = identity
        self.host_id = identity.host_id or ""
        self.wants_trust = hello.trust
        if self.owner.credentials.host_id in hello.held:
            self.redundant = True
            self._deadline = asyncio.get_running_loop().call_later(
                self.owner.hello_timeout, self.close)
            self._welcome(self.owner.proxies)
            return
        if not self._welcome(self.owner.proxies):
            return
        self.owner.register(self, AgentRecord(
            host_id=self.host_id, hostname=identity.hostname or "",
            cluster=identity.cluster, role=str(identity.system_role), address=self.peer,
            connected_at=datetime.now(UTC)))

    async def _cluster_hello(self, hello: Hello, claimed: str) -> None:
        """A leaf proxy's cluster link: its host CA (stored at the handshake) must verify it."""
        assert self.owner.remote_trust is not None
        try:
            keys = await self.owner.remote_trust(claimed)
            identity = verify_peer_host_cert(hello.cert, self.key_blob, {claimed: tuple(keys)},
                                             {SystemRole.PROXY}, self.owner.now())
        except (LimenError, OSError) as err:
            reason = f"cluster link claiming cluster {claimed!r} refused: {err}"
            self.owner.refuse(self.peer, reason)
            self.fail(reason, log_it=False)
            return
        self.identity, self.remote_cluster = identity, identity.cluster
        self.host_id = link_key(identity.cluster)
        if not self._welcome(leaf_cas=True):
            return
        self.owner.register_cluster(self, ClusterRecord(
            cluster=identity.cluster, proxy_id=identity.host_id or "", address=self.peer,
            connected_at=datetime.now(UTC)))

    def _cluster_message(self, message: Message) -> None:
        if isinstance(message, Heartbeat):
            self.owner.cluster_heartbeat(self, message.resource)
        elif isinstance(message, DialFailed):
            self.owner.dial_failed(self, message.nonce, message.reason)
        elif isinstance(message, LeafCAs):
            self.owner.cluster_cas(self, message.update)
        else:
            self.owner.refuse_cluster_request(self, message.type)

    def _welcome(self, proxies: tuple[ProxyEntry, ...] = (), *, leaf_cas: bool = False) -> bool:
        """Send ``welcome`` (a cluster link is told no proxies: they are not its own; it is
        told that its ``leaf_cas`` are taken)."""
        creds = self.owner.credentials
        try:
            self.send(Welcome(cert=creds.ssh_cert.decode().strip(), proxy_id=creds.host_id,
                              cluster=creds.cluster,
                              heartbeat_interval=self.owner.heartbeat_interval,
                              proxies=proxies, leaf_cas=leaf_cas))
        except ConnectionProblem:
            return False
        return True

    def _hello_missing(self) -> None:
        if self.identity is None:
            self.owner.refuse(self.peer, "no valid hello within "
                                          f"{self.owner.hello_timeout:.0f} s")
            self.fail("no hello", log_it=False)

    def fail(self, reason: str, *, log_it: bool = True) -> None:
        if log_it:
            log.warning("tunnel: dropping control connection from %s: %s", self.peer, reason)
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason[:200])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def supersede(self) -> None:
        """Another connection of the same agent (or cluster) registered: this one closes and
        may open no control session any more."""
        self.replaced = True
        self.close()


class ControlSession(asyncssh.SSHServerSession[bytes]):
    """The control subsystem channel: frames in, messages to the link."""

    def __init__(self, link: AgentLink) -> None:
        self.link = link
        self.chan: Any = None
        self.decoder = Decoder()

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == CONTROL_SUBSYSTEM

    def data_received(self, data: bytes, datatype: Any) -> None:
        try:
            messages = self.decoder.feed(data)
        except BadParameter as err:
            self.link.fail(f"bad control message: {err}")
            return
        for message in messages:
            self.link.handle(message)

    def eof_received(self) -> bool:
        self.link.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close()
