"""TCP socket options every Limen connection gets: ``TCP_NODELAY`` and ``TCP_QUICKACK``.

No Nagle or delayed-ACK stall in an SSH handshake or a relayed session (DESIGN.md). Called by
the relay (:mod:`limen.net.relay`), the tunnel's port sniffer and agent, the proxy's SSH front
and the node agent's SSH server for every TCP socket they accept or open.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

__all__ = ["tune_socket"]


def tune_socket(sock: Any) -> None:
    """``TCP_NODELAY`` and ``TCP_QUICKACK`` on a TCP socket (no-op for other sockets)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_QUICKACK"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
