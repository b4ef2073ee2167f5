"""SPDY/3.1 frames (the framing of ``kubectl exec``/``attach``/``port-forward`` over SPDY, as
moby/spdystream speaks it): pure code, bytes in, frames out, and frames back to bytes.

One :class:`SpdyDecoder` reads one direction of one connection: every frame type of SPDY/3.1
(DATA, SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE;
control frames of an unknown type are skipped, as the protocol says). Header blocks are one
zlib stream per direction for the whole connection, primed with the SPDY/3 dictionary, so a
decoder must see every byte of its direction from the start. Everything is bounded: a control
frame longer than ``max_frame`` bytes, a header block inflating to more than
``max_header_block`` bytes (a decompression bomb is stopped at that size, never inflated
whole) or holding more than :data:`MAX_HEADER_PAIRS` names, and any malformed frame raise
:class:`SpdyError`; after that the decoder refuses every later byte (its zlib stream is out
of step). DATA frames, which SPDY allows up to 16 MiB, are never refused for their size: one
longer than :data:`DATA_PIECE` whose bytes have not all arrived is given in pieces as they
come (each a :class:`DataFrame`, ``fin`` on the last), so memory stays bounded and a client
cannot stop the reading with a large but valid frame. A :class:`SpdyEncoder` writes frames,
one deflate stream per direction.

Called by :mod:`limen.agents.kube.exec_streams` (the recording of an exec over SPDY reads a
copy of the relayed bytes; the relay itself never parses them).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from limen.errors import BadParameter

__all__ = [
    "DATA_PIECE",
    "DICTIONARY",
    "FLAG_FIN",
    "FLAG_UNIDIRECTIONAL",
    "MAX_FRAME",
    "MAX_HEADER_BLOCK",
    "MAX_HEADER_PAIRS",
    "DataFrame",
    "Frame",
    "GoAway",
    "Headers",
    "Ping",
    "RstStream",
    "Settings",
    "SpdyDecoder",
    "SpdyEncoder",
    "SpdyError",
    "SynReply",
    "SynStream",
    "WindowUpdate",
]

VERSION = 3
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_CLEAR_SETTINGS = 0x01
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9

MAX_FRAME = 1 << 20
"""The longest control frame a decoder accepts by default (spdystream writes far less)."""
DATA_PIECE = 64 << 10
"""A DATA frame longer than this is given in pieces as its bytes arrive."""
MAX_HEADER_BLOCK = 64 << 10
"""The most bytes one header block may inflate to by default."""
MAX_HEADER_PAIRS = 1024
"""The most name/value pairs one header block may hold."""

_STREAM_MASK = 0x7FFFFFFF
_FIXED_LENGTH = {RST_STREAM: 8, PING: 4, GOAWAY: 8, WINDOW_UPDATE: 8}
_MIN_LENGTH = {SYN_STREAM: 10, SYN_REPLY: 4, HEADERS: 4, SETTINGS: 4}

# The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): length-prefixed
# words, then a run of common header values. "_" stands for the space inside "200 OK".
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
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(
    struct.pack(">I", len(word)) + word.encode()
    for word in (w.replace("_", " ") for w in _WORDS.split(" "))) + _TAIL.encode()


class SpdyError(BadParameter):
    """Bytes that are not (or no longer) a well-formed SPDY/3.1 stream, or exceed a bound.
    ``decoded`` holds the frames the same :meth:`SpdyDecoder.feed` completed before."""

    def __init__(self, message: str, decoded: Sequence[Frame] = ()) -> None:
        super().__init__(message)
        self.decoded = list(decoded)


HeaderMap = Mapping[str, tuple[str, ...]]
"""A header block: lower-case names, each with its values (NUL-separated on the wire)."""


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: HeaderMap = field(default_factory=dict)
    fin: bool = False
    unidirectional: bool = False
    associated_id: int = 0
    priority: int = 0
    """0 (highest) to 7."""

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (lower case), if any."""
        values = self.headers.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: HeaderMap = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class Headers:
    stream_id: int
    headers: HeaderMap = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    entries: tuple[tuple[int, int, int], ...] = ()
    """(flags, id, value) for each setting."""
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_stream_id: int
    status: int = 0


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


Frame = (DataFrame | SynStream | SynReply | Headers | RstStream | Settings | Ping | GoAway
         | WindowUpdate)


class SpdyDecoder:
    """The frames of one direction of one SPDY/3.1 connection (see the module)."""

    def __init__(self, *, max_frame: int = MAX_FRAME,
                 max_header_block: int = MAX_HEADER_BLOCK) -> None:
        self.max_frame = max_frame
        self.max_header_block = max_header_block
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._data_left = 0
        """Bytes still to come of a DATA frame given in pieces (its stream, its FIN)."""
        self._data_stream = 0
        self._data_fin = False
        self.failed: str | None = None
        """Why the decoder stopped (None while it reads)."""

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by ``data`` (SpdyError once the stream is not SPDY/3.1)."""
        if self.failed is not None:
            raise SpdyError(f"the SPDY stream was already refused: {self.failed}")
        self._buffer += data
        frames: list[Frame] = []
        try:
            while (frame := self._next()) is not None:
                if not isinstance(frame, bool):
                    frames.append(frame)
        except SpdyError as err:
            self.failed = str(err)
            self._buffer.clear()
            raise SpdyError(str(err), frames) from None
        return frames

    def _next(self) -> Frame | bool | None:
        """The next frame; True for a skipped one; None when more bytes are needed."""
        buf = self._buffer
        if self._data_left:
            return self._data_piece()
        if len(buf) < 8:
            return None
        first, flags_length = struct.unpack_from(">II", buf)
        flags, length = flags_length >> 24, flags_length & 0xFFFFFF
        data = not first & 0x80000000
        if data and length > DATA_PIECE and len(buf) < 8 + length:
            del buf[:8]
            self._data_left, self._data_stream = length, first & _STREAM_MASK
            self._data_fin = bool(flags & FLAG_FIN)
            return True
        if not data and length > self.max_frame:
            raise SpdyError(f"a SPDY control frame of {length} bytes is over the limit of "
                            f"{self.max_frame}")
        if len(buf) < 8 + length:
            return None
        payload = bytes(buf[8:8 + length])
        del buf[:8 + length]
        if not first & 0x80000000:
            return DataFrame(first & _STREAM_MASK, payload, bool(flags & FLAG_FIN))
        version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise SpdyError(f"SPDY version {version} is not 3")
        return self._control(kind, flags, payload)

    def _data_piece(self) -> DataFrame | None:
        buf = self._buffer
        if not buf:
            return None
        size = min(len(buf), self._data_left)
        piece = bytes(buf[:size])
        del buf[:size]
        self._data_left -= size
        return DataFrame(self._data_stream, piece, self._data_fin and not self._data_left)

    def _control(self, kind: int, flags: int, payload: bytes) -> Frame | bool:
        size = len(payload)
        if size != _FIXED_LENGTH.get(kind, size) or size < _MIN_LENGTH.get(kind, 0):
            raise SpdyError(f"a SPDY control frame of type {kind} with {size} bytes")
        fin = bool(flags & FLAG_FIN)
        if kind == SYN_STREAM:
            stream_id, associated, priority = struct.unpack_from(">IIB", payload)
            return SynStream(stream_id & _STREAM_MASK, self._headers(payload[10:]), fin,
                             bool(flags & FLAG_UNIDIRECTIONAL), associated & _STREAM_MASK,
                             priority >> 5)
        if kind in (SYN_REPLY, HEADERS):
            stream_id = struct.unpack_from(">I", payload)[0] & _STREAM_MASK
            cls = SynReply if kind == SYN_REPLY else Headers
            return cls(stream_id, self._headers(payload[4:]), fin)
        if kind == RST_STREAM:
            stream_id, status = struct.unpack(">II", payload)
            return RstStream(stream_id & _STREAM_MASK, status)
        if kind == SETTINGS:
            return self._settings(flags, payload)
        if kind == PING:
            return Ping(struct.unpack(">I", payload)[0])
        if kind == GOAWAY:
            last, status = struct.unpack(">II", payload)
            return GoAway(last & _STREAM_MASK, status)
        if kind == WINDOW_UPDATE:
            stream_id, delta = struct.unpack(">II", payload)
            return WindowUpdate(stream_id & _STREAM_MASK, delta & _STREAM_MASK)
        return True  # an unknown control frame: skipped

    @staticmethod
    def _settings(flags: int, payload: bytes) -> Settings:
        (count,) = struct.unpack_from(">I", payload)
        if len(payload) != 4 + 8 * count:
            raise SpdyError(f"a SPDY SETTINGS frame announcing {count} entries in "
                            f"{len(payload)} bytes")
        entries = []
        for offset in range(4, len(payload), 8):
            head, value = struct.unpack_from(">II", payload, offset)
            entries.append((head >> 24, head & 0xFFFFFF, value))
        return Settings(tuple(entries), bool(flags & FLAG_CLEAR_SETTINGS))

    def _headers(self, block: bytes) -> dict[str, tuple[str, ...]]:
        limit = self.max_header_block
        try:
            raw = self._inflate.decompress(block, limit + 1)
        except zlib.error as err:
            raise SpdyError(f"a SPDY header block does not inflate: {err}") from None
        if len(raw) > limit or self._inflate.unconsumed_tail:
            raise SpdyError(f"a SPDY header block inflates to more than {limit} bytes")
        if self._inflate.eof:
            raise SpdyError("a SPDY header block ended the connection's zlib stream")
        return _header_pairs(raw)


def _header_pairs(raw: bytes) -> dict[str, tuple[str, ...]]:
    if len(raw) < 4:
        raise SpdyError("a SPDY header block shorter than its count")
    (count,), position = struct.unpack_from(">I", raw), 4
    if count > MAX_HEADER_PAIRS:
        raise SpdyError(f"a SPDY header block of {count} pairs (at most {MAX_HEADER_PAIRS})")
    headers: dict[str, tuple[str, ...]] = {}
    for _ in range(count):
        name, position = _string(raw, position)
        value, position = _string(raw, position)
        if not name:
            raise SpdyError("a SPDY header with an empty name")
        headers[name.lower()] = headers.get(name.lower(), ()) + tuple(value.split("\x00"))
    if position != len(raw):
        raise SpdyError("a SPDY header block with bytes after its last pair")
    return headers


def _string(raw: bytes, position: int) -> tuple[str, int]:
    if position + 4 > len(raw):
        raise SpdyError("a SPDY header block cut short")
    (size,) = struct.unpack_from(">I", raw, position)
    end = position + 4 + size
    if end > len(raw):
        raise SpdyError("a SPDY header block cut short")
    try:
        return raw[position + 4:end].decode(), end
    except UnicodeDecodeError:
        raise SpdyError("a SPDY header that is not UTF-8") from None


class SpdyEncoder:
    """Frames to bytes for one direction of one connection (header blocks share its deflate
    stream, so frames must be sent in the order they are encoded)."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zdict=DICTIONARY)

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            return struct.pack(">II", frame.stream_id & _STREAM_MASK,
                               (FLAG_FIN if frame.fin else 0) << 24 | len(frame.data)) \
                + frame.data
        fin = FLAG_FIN if getattr(frame, "fin", False) else 0
        if isinstance(frame, SynStream):
            flags = fin | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
            return _control(SYN_STREAM, flags, struct.pack(
                ">IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5, 0)
                + self._block(frame.headers))
        if isinstance(frame, SynReply | Headers):
            kind = SYN_REPLY if isinstance(frame, SynReply) else HEADERS
            return _control(kind, fin, struct.pack(">I", frame.stream_id)
                            + self._block(frame.headers))
        if isinstance(frame, RstStream):
            return _control(RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            body = b"".join(struct.pack(">II", f << 24 | i, v) for f, i, v in frame.entries)
            return _control(SETTINGS, FLAG_CLEAR_SETTINGS if frame.clear else 0,
                            struct.pack(">I", len(frame.entries)) + body)
        if isinstance(frame, Ping):
            return _control(PING, 0, struct.pack(">I", frame.ping_id))
        if isinstance(frame, GoAway):
            return _control(GOAWAY, 0, struct.pack(">II", frame.last_stream_id, frame.status))
        return _control(WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))

    def _block(self, headers: HeaderMap) -> bytes:
        pairs = [(name.lower().encode(), "\x00".join(values).encode())
                 for name, values in headers.items()]
        raw = struct.pack(">I", len(pairs)) + b"".join(
            struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v for k, v in pairs)
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, flags << 24 | len(payload)) + payload
