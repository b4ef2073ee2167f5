"""The server name (SNI) and ALPN names of a TLS ClientHello, read before the handshake.

The web port chooses its TLS context by the server name (:mod:`limen.proxy.tls_router`): the
kube front's name gets a context that requires a client certificate, which OpenSSL cannot
switch to once the handshake has started (an SNI callback may change the certificate, not the
verify mode). So the router reads the ClientHello's records first, asks :func:`parse` what
they name, then replays them into the handshake.

:func:`parse` is pure: ``None`` while more bytes are needed, :class:`NotClientHello` for bytes
that are not a well-formed ClientHello (the router then uses its default context and lets
OpenSSL refuse them as before). A ClientHello may span several handshake records; it is read
up to :data:`MAX_HELLO` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_HELLO", "ClientHello", "NotClientHello", "parse"]

MAX_HELLO = 64 * 1024
_HANDSHAKE = 22
_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16


class NotClientHello(ValueError):
    """The bytes are not a ClientHello the router can read."""


@dataclass(frozen=True)
class ClientHello:
    server_name: str
    """The ``host_name`` asked for, lower case, no trailing dot; empty when none."""
    alpn: tuple[str, ...]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise NotClientHello("a field runs past the end of the ClientHello")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> _Reader:
        return _Reader(self.take(self.number(length_bytes)))

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def _handshake_bytes(data: bytes) -> bytes | None:
    """The handshake message bytes of the records at the start of ``data`` (None: more
    needed)."""
    if len(data) > MAX_HELLO:
        raise NotClientHello("the ClientHello is too long")
    payload, pos = b"", 0
    while True:
        if len(data) - pos < 5:
            return None
        if data[pos] != _HANDSHAKE or data[pos + 1] != 3:
            raise NotClientHello("not a TLS handshake record")
        length = int.from_bytes(data[pos + 3:pos + 5], "big")
        if length == 0:
            raise NotClientHello("an empty handshake record")
        if len(data) - pos - 5 < length:
            return None
        payload += data[pos + 5:pos + 5 + length]
        pos += 5 + length
        if len(payload) >= 4:
            if payload[0] != _CLIENT_HELLO:
                raise NotClientHello("the first handshake message is not a ClientHello")
            needed = 4 + int.from_bytes(payload[1:4], "big")
            if len(payload) >= needed:
                return payload[4:needed]


def _server_name(ext: _Reader) -> str:
    names = ext.vector(2)
    while not names.done:
        kind, name = names.number(1), names.vector(2).data
        if kind == 0:
            try:
                return name.decode("ascii").lower().rstrip(".")
            except UnicodeDecodeError:
                raise NotClientHello("a server name that is not ASCII") from None
    return ""


def _alpn(ext: _Reader) -> tuple[str, ...]:
    names, found = ext.vector(2), []
    while not names.done:
        found.append(names.vector(1).data.decode("latin-1"))
    return tuple(found)


def parse(data: bytes) -> ClientHello | None:
    """What the ClientHello at the start of ``data`` names (see the module)."""
    body = _handshake_bytes(data)
    if body is None:
        return None
    hello = _Reader(body)
    hello.take(2 + 32)  # legacy version, random
    hello.vector(1)  # session id
    hello.vector(2)  # cipher suites
    hello.vector(1)  # compression methods
    server_name = ""
    alpn: tuple[str, ...] = ()
    if not hello.done:
        extensions = hello.vector(2)
        while not extensions.done:
            kind, ext = extensions.number(2), extensions.vector(2)
            if kind == _EXT_SERVER_NAME:
                server_name = _server_name(ext)
            elif kind == _EXT_ALPN:
                alpn = _alpn(ext)
    return ClientHello(server_name, alpn)
