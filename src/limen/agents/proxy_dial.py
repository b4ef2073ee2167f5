"""The first step of every data connection a proxy dials to a db or kube agent (tunnel mode
TLS): the TLS handshake as the server, then the proof that a proxy of this cluster dialled —
its client certificate signed by the cluster's TLS CA, unexpired, with the proxy role.
Called by :mod:`limen.agents.db.db_service` and :mod:`limen.agents.kube.kube_service`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Mapping, Sequence
from datetime import datetime

from cryptography import x509

from limen.ca.identity import Identity, SystemRole
from limen.ca.x509_certs import verify_client_cert
from limen.errors import AccessDenied
from limen.net.streams import accept_tls

__all__ = ["accept_proxy", "check_proxy"]

log = logging.getLogger(__name__)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def accept_proxy(sock: socket.socket, server_ssl: ssl.SSLContext, agent: str,
                       target: str) -> Streams | None:
    """The TLS streams of the dialled socket; None (logged, the socket closed) when the
    handshake fails. The caller then calls :func:`check_proxy` and closes the writer."""
    try:
        return await accept_tls(sock, server_ssl)
    except (ssl.SSLError, OSError, TimeoutError) as err:
        log.warning("%s: TLS with the proxy failed for %s: %s", agent, target, err)
        sock.close()
        return None


def check_proxy(writer: asyncio.StreamWriter,
                trust: Mapping[str, Sequence[x509.Certificate]], now: datetime,
                agent: str) -> Identity:
    """The identity of the proxy at the other end; AccessDenied unless its certificate is
    a proxy's of a cluster in ``trust``, unexpired."""
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    proxy = verify_client_cert(der or b"", trust, now)
    if proxy.system_role is not SystemRole.PROXY:
        raise AccessDenied(f"a {proxy.system_role or 'user'} certificate dialled the {agent}")
    return proxy
