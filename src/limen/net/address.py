"""``host:port`` parsing and formatting. Called by every listener and dialer."""

from __future__ import annotations

import ipaddress
import socket

from limen.errors import BadParameter

__all__ = ["bind_tcp", "format_address", "is_ip_address", "parse_address", "socket_address"]


def parse_address(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (or ``host`` when ``default_port`` is given)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
    if not port_text and default_port is not None:
        port_text = str(default_port)
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise BadParameter(f"invalid address {text!r}: expected host:port")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def socket_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return format_address(host, port)


def bind_tcp(address: str) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 = a free port), reuse-address set."""
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        raise BadParameter(f"cannot listen on {address}: {err.strerror}") from err
    return sock


def is_ip_address(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (not a host name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
