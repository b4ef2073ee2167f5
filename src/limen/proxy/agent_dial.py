"""A proxy's data connection to a db or kube agent through the agent's reverse tunnel: dial one
of the serving agents connected here (``MODE_TLS``), TLS as the client with this proxy's
certificate, the agent's certificate checked (the cluster's TLS CA, the agent role, the very
host that was dialled), then the first message of the session. Called by
:mod:`limen.proxy.db.db_route` and :mod:`limen.proxy.kube.kube_route`.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Callable, Sequence
from datetime import datetime

from cryptography import x509

from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.x509_certs import verify_server_cert
from limen.errors import AccessDenied, ConnectionProblem, LimenError
from limen.net.streams import close_writer, stream_pair
from limen.tunnel.protocol import MODE_TLS, DialRequest
from limen.tunnel.server import TunnelServer

__all__ = ["AgentDialer", "peer_der"]

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def peer_der(writer: asyncio.StreamWriter) -> bytes | None:
    """The certificate the TLS peer of ``writer`` presented (DER), if any."""
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return bytes(der) if der else None


class AgentDialer:
    """Data connections to the agents of one ``role`` (tunnel ``kind``; ``noun`` names them
    in errors: "db agent")."""

    def __init__(self, credentials: HostCredentials, tunnel: TunnelServer, role: SystemRole,
                 kind: str, noun: str, now: Callable[[], datetime]) -> None:
        self.tunnel = tunnel
        self._role, self._kind, self._noun = role, kind, noun
        self._now = now
        self._trust = {credentials.cluster: credentials.tls_cas()}
        self._ssl = credentials.client_ssl(check_hostname=False, server_role=role)

    async def open(self, host_ids: Sequence[str], target: str, first: bytes, *,
                   client_addr: str, user: str, session_id: str) -> Streams:
        """A connection to one of ``host_ids`` connected to this proxy (chosen at random:
        load spreading, not security) serving ``target``, ``first`` sent."""
        here = [h for h in host_ids if h in self.tunnel.registry]
        if not here:
            raise ConnectionProblem(f"no {self._noun} serving {target} is connected to this "
                                    "proxy")
        host_id = random.choice(here)  # load spreading, not security
        conn = await self.tunnel.dial(host_id, DialRequest(
            kind=self._kind, target=target, mode=MODE_TLS, client_addr=client_addr,
            user=user, session_id=session_id))
        reader, writer = stream_pair(conn.attach)
        try:
            async with asyncio.timeout(10):
                await writer.start_tls(self._ssl)
            self._check(writer, host_id)
            writer.write(first)
            await writer.drain()
        except (LimenError, OSError, ssl.SSLError, TimeoutError) as err:
            await close_writer(writer)
            if isinstance(err, LimenError):
                raise
            raise ConnectionProblem(f"cannot open a connection with the {self._noun}: {err}") \
                from None
        return reader, writer

    def _check(self, writer: asyncio.StreamWriter, host_id: str) -> None:
        der = peer_der(writer)
        if not der:
            raise AccessDenied(f"the {self._noun} presented no certificate")
        agent = verify_server_cert(x509.load_der_x509_certificate(der), self._trust,
                                   self._role, self._now())
        if agent.host_id != host_id:
            raise AccessDenied(f"the data connection is from {agent.host_id}, not {host_id}")
