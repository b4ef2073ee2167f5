"""SPDY/3.1 framing, the server's half, as kubectl's port-forward speaks it (moby/spdystream).

Used by ``portforward.py``: kubectl 1.32 tunnels SPDY/3.1 through a WebSocket
(``SPDY/3.1+portforward.k8s.io``). :class:`SpdyFramer` turns the bytes received into frames
(:meth:`SpdyFramer.feed`) and frames to send into bytes. Header blocks are zlib streams with
the SPDY/3 dictionary, one stream per direction for the whole connection. Flow control
(WINDOW_UPDATE) is neither sent nor enforced, as spdystream does not.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

__all__ = [
    "FLAG_FIN",
    "DataFrame",
    "Frame",
    "GoAway",
    "Ping",
    "RstStream",
    "SpdyError",
    "SpdyFramer",
    "SynStream",
]

FLAG_FIN = 0x01
_VERSION = 3
_SYN_STREAM, _SYN_REPLY, _RST_STREAM, _SETTINGS = 1, 2, 3, 4
_PING, _GOAWAY, _HEADERS, _WINDOW_UPDATE = 6, 7, 8, 9

# The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): length-prefixed
# words, then a run of common header values.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base "
    "content-encoding content-language content-length content-location content-md5 "
    "content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status 200_OK version HTTP/1.1 url public set-cookie "
    "keep-alive origin"
)  # "_" stands for the space inside "200 OK"
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _dictionary() -> bytes:
    words = [w.replace("_", " ") for w in _WORDS.split(" ")]
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + _TAIL.encode()


DICTIONARY = _dictionary()


class SpdyError(Exception):
    """Bytes that are not SPDY/3.1 (the connection cannot go on)."""


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: dict[str, list[str]]
    fin: bool


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_stream_id: int


Frame = SynStream | DataFrame | RstStream | Ping | GoAway


@dataclass
class SpdyFramer:
    """Parses received bytes into frames and encodes frames to send (one connection)."""

    _buffer: bytearray = field(default_factory=bytearray)
    _inflate: zlib._Decompress = field(default_factory=lambda: zlib.decompressobj(zdict=DICTIONARY))
    _deflate: zlib._Compress = field(
        default_factory=lambda: zlib.compressobj(zlib.Z_BEST_COMPRESSION, zdict=DICTIONARY)
    )

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by ``data`` (SETTINGS, WINDOW_UPDATE and HEADERS are
        consumed and not returned)."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first, flags_length = struct.unpack(">II", self._buffer[:8])
            flags, length = flags_length >> 24, flags_length & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            if not first & 0x80000000:
                frames.append(DataFrame(first & 0x7FFFFFFF, payload, bool(flags & FLAG_FIN)))
                continue
            version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
            if version != _VERSION:
                raise SpdyError(f"unsupported SPDY version {version}")
            frame = self._control(kind, flags, payload)
            if frame is not None:
                frames.append(frame)
        return frames

    def _control(self, kind: int, flags: int, payload: bytes) -> Frame | None:
        if kind == _SYN_STREAM:
            stream_id = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            return SynStream(stream_id, self._headers(payload[10:]), bool(flags & FLAG_FIN))
        if kind == _HEADERS:
            self._headers(payload[4:])  # keeps the zlib stream in step
            return None
        if kind == _RST_STREAM:
            stream_id, status = struct.unpack(">II", payload[:8])
            return RstStream(stream_id & 0x7FFFFFFF, status)
        if kind == _PING:
            return Ping(struct.unpack(">I", payload[:4])[0])
        if kind == _GOAWAY:
            return GoAway(struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF)
        if kind in (_SETTINGS, _WINDOW_UPDATE, _SYN_REPLY):
            return None
        raise SpdyError(f"unknown SPDY control frame type {kind}")

    def _headers(self, block: bytes) -> dict[str, list[str]]:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as e:
            raise SpdyError(f"bad header block: {e}") from e
        (count,), position = struct.unpack(">I", raw[:4]), 4
        headers: dict[str, list[str]] = {}
        for _ in range(count):
            (size,) = struct.unpack(">I", raw[position : position + 4])
            name = raw[position + 4 : position + 4 + size].decode().lower()
            position += 4 + size
            (size,) = struct.unpack(">I", raw[position : position + 4])
            value = raw[position + 4 : position + 4 + size].decode()
            position += 4 + size
            headers.setdefault(name, []).extend(value.split("\x00"))
        return headers

    # ---- frames to send -----------------------------------------------------------------

    def _control_frame(self, kind: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | _VERSION, kind, flags << 24 | len(payload)) + payload

    def syn_reply(self, stream_id: int, headers: dict[str, str] | None = None) -> bytes:
        pairs = sorted((headers or {}).items())
        raw = struct.pack(">I", len(pairs)) + b"".join(
            struct.pack(">I", len(k)) + k.lower().encode() + struct.pack(">I", len(v)) + v.encode()
            for k, v in pairs
        )
        block = self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        return self._control_frame(_SYN_REPLY, 0, struct.pack(">I", stream_id) + block)

    def data(self, stream_id: int, data: bytes, fin: bool = False) -> bytes:
        flags = FLAG_FIN if fin else 0
        return struct.pack(">II", stream_id & 0x7FFFFFFF, flags << 24 | len(data)) + data

    def rst_stream(self, stream_id: int, status: int) -> bytes:
        return self._control_frame(_RST_STREAM, 0, struct.pack(">II", stream_id, status))

    def ping(self, ping_id: int) -> bytes:
        return self._control_frame(_PING, 0, struct.pack(">I", ping_id))

    def goaway(self, last_stream_id: int) -> bytes:
        return self._control_frame(_GOAWAY, 0, struct.pack(">II", last_stream_id, 0))
