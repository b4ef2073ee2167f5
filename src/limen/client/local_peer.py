"""Who owns the other end of a local TCP connection: the ``uid`` column of ``/proc/net/tcp``.

``lmsh proxy db`` serves plaintext on 127.0.0.1 and presents the user's database certificate
upstream, so it must serve only the user who runs it: another local account could otherwise
connect to the port and use that certificate. The kernel lists every TCP socket in
``/proc/net/tcp`` and ``/proc/net/tcp6`` with its owner's uid; the client's socket is the one
whose local address is the peer address of the accepted connection and whose remote address
is the listener's. A connection whose client socket cannot be found (another network
namespace, no ``/proc``) counts as someone else's. Linux only. Called by
:mod:`limen.client.db_local_proxy`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["PROC_TCP_TABLES", "is_own_connection", "kernel_address", "socket_owner"]

PROC_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_WORD = struct.Struct("=I")  # the kernel prints each 32-bit word of an address in host order


def kernel_address(host: str, port: int) -> str:
    """``host:port`` as /proc/net/tcp{,6} print it (``0100007F:1F90`` on little-endian)."""
    packed = ipaddress.ip_address(host.split("%", 1)[0]).packed
    words = "".join(f"{_WORD.unpack(packed[i:i + 4])[0]:08X}" for i in range(0, len(packed), 4))
    return f"{words}:{port:04X}"


def _forms(host: str, port: int) -> list[str]:
    """The ways the socket bound to ``host:port`` may be listed: an IPv4 address also as
    IPv4-mapped IPv6 (a dual-stack client socket)."""
    forms = [kernel_address(host, port)]
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv4Address):
        forms.append(kernel_address(f"::ffff:{address}", port))
    elif address.ipv4_mapped is not None:
        forms.append(kernel_address(str(address.ipv4_mapped), port))
    return forms


def _rows(tables: Iterable[Path]) -> Iterable[list[str]]:
    for table in tables:
        try:
            text = table.read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 8:
                yield fields


def socket_owner(local: tuple[str, int], remote: tuple[str, int],
                 tables: Sequence[Path] = PROC_TCP_TABLES) -> int | None:
    """The uid owning the TCP socket bound to ``local`` and connected to ``remote``; None
    when no table lists it."""
    locals_ = set(_forms(*local))
    remotes = set(_forms(*remote))
    for fields in _rows(tables):
        if fields[1].upper() in locals_ and fields[2].upper() in remotes:
            try:
                return int(fields[7])
            except ValueError:
                return None
    return None


def is_own_connection(sock: socket.socket, tables: Sequence[Path] = PROC_TCP_TABLES,
                      uid: int | None = None) -> bool:
    """Whether the client end of the accepted ``sock`` belongs to ``uid`` (default: ours)."""
    try:
        peer = sock.getpeername()
        here = sock.getsockname()
    except OSError:
        return False
    owner = socket_owner((peer[0], peer[1]), (here[0], here[1]), tables)
    return owner is not None and owner == (os.getuid() if uid is None else uid)
