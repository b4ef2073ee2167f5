"""The PostgreSQL frontend/backend wire protocol (version 3) as pure codecs: bytes in, typed
messages out, and back.

Called by the proxy's PostgreSQL front (the startup phase: SSLRequest before TLS, the
StartupMessage, CancelRequest, and rewriting BackendKeyData) and by the db agent (the upstream
login and the query audit of 'Q', 'P' and 'B'). No I/O here: the callers read and write, and
hand the bytes to these functions. Malformed input raises :class:`~limen.errors.BadParameter`,
never anything else.

:class:`MessageSplitter` cuts a stream of typed messages (either direction) into frames. It
never copies the payload of a message whose type nobody asked for, so a 1 GB COPY passes
through it at the cost of one length field per message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from limen.errors import BadParameter

__all__ = [
    "AUTH_OK",
    "CANCEL_REQUEST_CODE",
    "GSSENC_REQUEST_CODE",
    "MAX_MESSAGE",
    "MAX_STARTUP",
    "PROTOCOL_3",
    "SSL_REQUEST_CODE",
    "BackendKey",
    "Bind",
    "CancelRequest",
    "Frame",
    "GSSEncRequest",
    "MessageSplitter",
    "Parse",
    "SSLRequest",
    "StartupMessage",
    "StartupPacket",
    "bind_params_text",
    "decode_authentication",
    "decode_backend_key_data",
    "decode_bind",
    "decode_error_fields",
    "decode_parse",
    "decode_query",
    "decode_startup",
    "encode_authentication_ok",
    "encode_backend_key_data",
    "encode_cancel",
    "encode_message",
    "encode_parameter_status",
    "encode_query",
    "encode_ready_for_query",
    "encode_ssl_request",
    "encode_startup",
    "encode_terminate",
    "error_response",
    "notice_response",
    "startup_length",
]

PROTOCOL_3: int = 196608  # 3.0: major 3 in the high 16 bits, minor 0 in the low ones
SSL_REQUEST_CODE = 80877103  # 1234 << 16 | 5679
GSSENC_REQUEST_CODE = 80877104  # 1234 << 16 | 5680
CANCEL_REQUEST_CODE = 80877102  # 1234 << 16 | 5678
MAX_STARTUP = 10_000  # longest startup packet accepted (as PostgreSQL)
MAX_MESSAGE = 1 << 30  # longest typed message accepted (its length field)

AUTH_OK = 0

_U16 = struct.Struct("!H")
_I16 = struct.Struct("!h")
_U32 = struct.Struct("!I")
_I32 = struct.Struct("!i")
_HEADER = struct.Struct("!cI")
_TWO_U32 = struct.Struct("!II")
_MAX_U32 = 0xFFFFFFFF
_SPECIAL_MAJOR = 1234  # the "major version" of the SSL, GSSENC and cancel request codes
_FRAME_CACHE = 4096  # skipped-message frames shared per splitter (bounded memory)
_BYTE = tuple(bytes((b,)) for b in range(256))  # one-byte types without an allocation each


# --- startup phase (untyped packets) -----------------------------------------------------


@dataclass(frozen=True)
class SSLRequest:
    """The client asks for TLS before its StartupMessage; the answer is one byte S or N."""


@dataclass(frozen=True)
class GSSEncRequest:
    """The client asks for GSSAPI encryption; the answer is one byte G or N."""


@dataclass(frozen=True)
class CancelRequest:
    """Sent on a new connection to cancel the query of the backend (pid, secret)."""

    pid: int
    secret: int


@dataclass(frozen=True)
class StartupMessage:
    """The client's login: protocol version and parameters (user, database, options...)."""

    version: int
    params: Mapping[str, str]  # insertion order kept


StartupPacket = SSLRequest | GSSEncRequest | CancelRequest | StartupMessage


def startup_length(header: bytes) -> int:
    """The whole length of an untyped startup-phase packet from its first 4 bytes (the length
    field counts itself); BadParameter unless exactly 4 bytes and 8 <= length <= MAX_STARTUP.
    """
    if len(header) != 4:
        raise BadParameter(f"a startup packet header is 4 bytes, not {len(header)}")
    length: int = _U32.unpack(header)[0]
    if not 8 <= length <= MAX_STARTUP:
        raise BadParameter(f"invalid startup packet length {length}")
    return length


def decode_startup(packet: bytes) -> StartupPacket:
    """Decode one whole startup-phase packet (length field included)."""
    length = startup_length(bytes(packet[:4]))
    if length != len(packet):
        raise BadParameter(f"startup packet says {length} bytes but has {len(packet)}")
    (code,) = _U32.unpack_from(packet, 4)
    if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
        if length != 8:
            raise BadParameter("an SSL or GSSAPI encryption request is exactly 8 bytes")
        return SSLRequest() if code == SSL_REQUEST_CODE else GSSEncRequest()
    if code == CANCEL_REQUEST_CODE:
        if length != 16:
            raise BadParameter("a cancel request is exactly 16 bytes")
        pid, secret = _TWO_U32.unpack_from(packet, 8)
        return CancelRequest(pid=pid, secret=secret)
    if code >> 16 != 3:
        if code >> 16 == _SPECIAL_MAJOR:
            raise BadParameter(f"unknown startup request code {code}")
        raise BadParameter(f"unsupported protocol version {code >> 16}.{code & 0xFFFF}")
    return StartupMessage(version=code, params=_decode_startup_params(packet, 8))


def _decode_startup_params(packet: bytes, offset: int) -> dict[str, str]:
    params: dict[str, str] = {}
    end = len(packet)
    while True:
        key, offset = _cstring(packet, offset, "startup parameter name")
        if not key:
            break
        value, offset = _cstring(packet, offset, f"value of startup parameter {key!r}")
        if key in params:
            raise BadParameter(f"duplicate startup parameter {key!r}")
        params[key] = value
    if offset != end:
        raise BadParameter("trailing bytes after the startup parameters")
    return params


def encode_startup(params: Mapping[str, str], version: int = PROTOCOL_3) -> bytes:
    """A whole StartupMessage; BadParameter for an empty key, a NUL, or a packet too long."""
    if not 0 <= version <= _MAX_U32:
        raise BadParameter(f"invalid protocol version {version}")
    body = bytearray(_U32.pack(version))
    for key, value in params.items():
        if not key:
            raise BadParameter("a startup parameter name must not be empty")
        body += _to_cstring(key, "startup parameter name")
        body += _to_cstring(value, f"value of startup parameter {key!r}")
    body += b"\0"
    length = 4 + len(body)
    if length > MAX_STARTUP:
        raise BadParameter(f"startup packet of {length} bytes is longer than {MAX_STARTUP}")
    return _U32.pack(length) + bytes(body)


def encode_ssl_request() -> bytes:
    """The 8-byte SSLRequest packet."""
    return _TWO_U32.pack(8, SSL_REQUEST_CODE)


def encode_cancel(pid: int, secret: int) -> bytes:
    """The 16-byte CancelRequest packet."""
    return _TWO_U32.pack(16, CANCEL_REQUEST_CODE) + _pack_key(pid, secret)


# --- typed messages: framing --------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One typed message seen by a :class:`MessageSplitter`."""

    type: bytes  # one byte, e.g. b"Q"
    length: int  # whole message length on the wire (1 + 4 + payload)
    payload: bytes | None  # None unless the type is in the splitter's `keep` set


class MessageSplitter:
    """Incremental splitter of typed messages (either direction).

    Each :meth:`feed` parses straight from the bytes it is given. Only a partial header (at
    most 4 bytes) and the payload so far of an incomplete *kept* message are held between
    feeds; the payload of any other type is skipped by counting the bytes still to come, so
    it is never copied. Each byte is looked at once: no growing buffer is re-sliced.
    """

    def __init__(self, keep: Iterable[bytes] = (), max_message: int = MAX_MESSAGE) -> None:
        self._keep = frozenset(bytes(t) for t in keep)
        for t in self._keep:
            if len(t) != 1:
                raise BadParameter(f"a message type is one byte, not {t!r}")
        if max_message < 4:
            raise BadParameter(f"max_message must be at least 4, not {max_message}")
        self._max = max_message
        self._head = bytearray()  # a partial header, 0..4 bytes
        self._type = b""  # type of the message in progress (b"" between messages)
        self._length = 0  # its whole length on the wire
        self._skip = 0  # payload bytes still to skip of a message not kept
        self._want = 0  # payload length of a kept message in progress
        self._body = bytearray()  # its payload so far
        self._cache: dict[int, Frame] = {}  # frames of skipped messages, by length and type
        self._failed = False

    @property
    def pending(self) -> int:
        """Bytes held between feeds: a partial header and the payload so far of an
        incomplete kept message (a caller's memory limit)."""
        return len(self._head) + len(self._body)

    @property
    def at_boundary(self) -> bool:
        """Whether everything fed so far ends with a whole message (none begun)."""
        return not (self._head or self._type or self._skip or self._failed)

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by data, in order. BadParameter for a length field below 4
        or above max_message; after that the stream is unusable and every feed raises."""
        if self._failed:
            raise BadParameter("the message stream is already broken")
        frames: list[Frame] = []
        with memoryview(data) as view:
            try:
                self._run(view, frames)
            except BadParameter:
                self._failed = True
                raise
        return frames

    def _run(self, view: memoryview, frames: list[Frame]) -> None:
        n = len(view)
        i = 0
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                i += take
                self._skip -= take
                if not self._skip:
                    frames.append(self._skipped(self._type, self._length))
                    self._type = b""
            elif self._type:  # the payload of a kept message, started in an earlier feed
                take = min(self._want - len(self._body), n - i)
                self._body += view[i : i + take]
                i += take
                if len(self._body) == self._want:
                    frames.append(Frame(self._type, self._length, bytes(self._body)))
                    self._body = bytearray()
                    self._type = b""
            elif self._head or n - i < 5:  # a header cut by the end of a feed
                take = min(5 - len(self._head), n - i)
                self._head += view[i : i + take]
                i += take
                if len(self._head) == 5:
                    empty = self._start(self._head[0], _U32.unpack_from(self._head, 1)[0])
                    self._head.clear()
                    if empty is not None:
                        frames.append(empty)
            else:
                i = self._whole_messages(view, i, frames)

    def _whole_messages(self, view: memoryview, i: int, frames: list[Frame]) -> int:
        """The hot loop: every message wholly inside view from i on; returns where it stopped
        (at a header cut by the end of view, or after starting a message that continues)."""
        n = len(view)
        keep, limit, unpack, append = self._keep, self._max, _U32.unpack_from, frames.append
        cache = self._cache
        while n - i >= 5:
            code = view[i]
            length: int = unpack(view, i + 1)[0]
            end = i + 1 + length
            if end > n or not 4 <= length <= limit:
                self._start(code, length)
                return i + 5
            type_ = _BYTE[code]
            if type_ in keep:
                append(Frame(type_, length + 1, bytes(view[i + 5 : end])))
            else:
                frame = cache.get(length << 8 | code)
                append(frame if frame is not None else self._skipped(type_, length + 1))
            i = end
        return i

    def _start(self, code: int, length: int) -> Frame | None:
        """Begin a message from its header: collect a kept one, count down a skipped one.
        An empty message is already whole: its frame is returned."""
        type_ = _BYTE[code]
        if not 4 <= length <= self._max:
            raise BadParameter(f"invalid length {length} of a {type_!r} message")
        kept = type_ in self._keep
        if length == 4:
            return Frame(type_, 5, b"") if kept else self._skipped(type_, 5)
        self._type, self._length = type_, length + 1
        if kept:
            self._want = length - 4
        else:
            self._skip = length - 4
        return None

    def _skipped(self, type_: bytes, length: int) -> Frame:
        """The frame of a message not kept: equal frames are shared (they are immutable),
        which spares building one per row of a large COPY or result."""
        key = (length - 1) << 8 | type_[0]
        frame = self._cache.get(key)
        if frame is None:
            if len(self._cache) >= _FRAME_CACHE:
                self._cache.clear()
            frame = self._cache[key] = Frame(type_, length, None)
        return frame


def encode_message(type_: bytes, payload: bytes) -> bytes:
    """A whole typed message: type byte, length (counting itself), payload."""
    if len(type_) != 1:
        raise BadParameter(f"a message type is one byte, not {type_!r}")
    length = 4 + len(payload)
    if length > MAX_MESSAGE:
        raise BadParameter(f"message of {length} bytes is longer than {MAX_MESSAGE}")
    return _HEADER.pack(bytes(type_), length) + bytes(payload)


# --- frontend messages (client -> server) -------------------------------------------------


@dataclass(frozen=True)
class Parse:
    """'P': prepare a statement (extended query protocol)."""

    statement: str
    query: str
    param_types: tuple[int, ...]


@dataclass(frozen=True)
class Bind:
    """'B': bind parameters to a prepared statement into a portal."""

    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


def decode_query(payload: bytes) -> str:
    """'Q': the SQL text of a simple query."""
    sql, offset = _cstring(payload, 0, "query")
    _expect_end(payload, offset, "Query")
    return sql


def decode_parse(payload: bytes) -> Parse:
    """'P': statement name, query, parameter type OIDs."""
    statement, offset = _cstring(payload, 0, "statement name")
    query, offset = _cstring(payload, offset, "query")
    count, offset = _u16(payload, offset)
    types: list[int] = []
    for _ in range(count):
        oid, offset = _u32(payload, offset)
        types.append(oid)
    _expect_end(payload, offset, "Parse")
    return Parse(statement=statement, query=query, param_types=tuple(types))


def decode_bind(payload: bytes) -> Bind:
    """'B': portal, statement, parameter formats and values (None for NULL), result formats."""
    portal, offset = _cstring(payload, 0, "portal name")
    statement, offset = _cstring(payload, offset, "statement name")
    param_formats, offset = _format_codes(payload, offset)
    count, offset = _u16(payload, offset)
    if len(param_formats) not in (0, 1, count):
        raise BadParameter(
            f"Bind has {len(param_formats)} parameter formats but {count} parameters"
        )
    params: list[bytes | None] = []
    for _ in range(count):
        size, offset = _i32(payload, offset)
        if size == -1:
            params.append(None)
            continue
        if size < 0:
            raise BadParameter(f"invalid parameter length {size} in Bind")
        if offset + size > len(payload):
            raise BadParameter("Bind parameter runs past the end of the message")
        params.append(bytes(payload[offset : offset + size]))
        offset += size
    result_formats, offset = _format_codes(payload, offset)
    _expect_end(payload, offset, "Bind")
    return Bind(
        portal=portal,
        statement=statement,
        param_formats=param_formats,
        params=tuple(params),
        result_formats=result_formats,
    )


def bind_params_text(bind: Bind) -> list[str | None]:
    """The parameters of a Bind for the audit: text-format ones decoded as UTF-8 (invalid
    bytes replaced), binary ones as ``\\x`` + hex, NULL as None. Format codes as the protocol
    says: none means all text, one applies to all, else one per parameter."""
    formats = bind.param_formats
    if len(formats) not in (0, 1, len(bind.params)):
        raise BadParameter(
            f"Bind has {len(formats)} parameter formats but {len(bind.params)} parameters"
        )
    out: list[str | None] = []
    for index, value in enumerate(bind.params):
        if value is None:
            out.append(None)
            continue
        code = 0 if not formats else formats[0] if len(formats) == 1 else formats[index]
        if code == 0:
            out.append(value.decode("utf-8", errors="replace"))
        else:
            out.append("\\x" + value.hex())
    return out


def encode_query(sql: str) -> bytes:
    """A whole 'Q' message; BadParameter if sql contains NUL."""
    return encode_message(b"Q", _to_cstring(sql, "query"))


def encode_terminate() -> bytes:
    """A whole 'X' message."""
    return b"X\0\0\0\4"


# --- backend messages (server -> client) --------------------------------------------------


def decode_authentication(payload: bytes) -> tuple[int, bytes]:
    """'R': (code, the rest), e.g. (AUTH_OK, b"") or (10, SASL mechanisms)."""
    code, offset = _u32(payload, 0)
    return code, bytes(payload[offset:])


def decode_backend_key_data(payload: bytes) -> tuple[int, int]:
    """'K': (pid, secret) of protocol 3.0 (exactly 8 bytes)."""
    if len(payload) != 8:
        raise BadParameter(f"BackendKeyData is 8 bytes, not {len(payload)}")
    pid, secret = _TWO_U32.unpack(payload)
    return pid, secret


BackendKey = Callable[[int, int], tuple[int, int]]
"""``backend_key(pid, secret) -> (pid, secret)``: the cancel key a client is told in place of
the database's BackendKeyData (the proxy's, so that a cancel comes back through it)."""


def encode_backend_key_data(pid: int, secret: int) -> bytes:
    """A whole 'K' message."""
    return encode_message(b"K", _pack_key(pid, secret))


def decode_error_fields(payload: bytes) -> dict[str, str]:
    """'E' or 'N': the fields by their one-letter code, e.g. {"S": ..., "C": ..., "M": ...}.
    Values are decoded as UTF-8 with invalid bytes replaced (a server may send its own
    encoding before the client's is set); a repeated field keeps its last value."""
    fields: dict[str, str] = {}
    offset = 0
    end = len(payload)
    while True:
        if offset >= end:
            raise BadParameter("error fields lack their terminating zero byte")
        code = payload[offset]
        offset += 1
        if code == 0:
            break
        stop = payload.find(b"\0", offset)
        if stop < 0:
            raise BadParameter("error field value is not NUL-terminated")
        fields[chr(code)] = bytes(payload[offset:stop]).decode("utf-8", errors="replace")
        offset = stop + 1
    _expect_end(payload, offset, "error or notice")
    return fields


def error_response(message: str, code: str = "28000", severity: str = "FATAL") -> bytes:
    """A whole 'E' message with fields S, V (same as S), C and M; a NUL in message becomes
    U+FFFD. BadParameter for a SQLSTATE that is not 5 ASCII letters or digits."""
    return encode_message(b"E", _notice_fields(message, code, severity))


def notice_response(message: str) -> bytes:
    """A whole 'N' message with severity NOTICE and SQLSTATE 00000."""
    return encode_message(b"N", _notice_fields(message, "00000", "NOTICE"))


def encode_ready_for_query(status: bytes = b"I") -> bytes:
    """A whole 'Z' message: I idle, T in a transaction, E in a failed transaction."""
    if status not in (b"I", b"T", b"E"):
        raise BadParameter(f"invalid transaction status {status!r}")
    return encode_message(b"Z", status)


def encode_authentication_ok() -> bytes:
    """A whole 'R' message with code AUTH_OK."""
    return encode_message(b"R", _U32.pack(AUTH_OK))


def encode_parameter_status(name: str, value: str) -> bytes:
    """A whole 'S' message; BadParameter for an empty name or a NUL."""
    if not name:
        raise BadParameter("a parameter status name must not be empty")
    return encode_message(
        b"S", _to_cstring(name, "parameter name") + _to_cstring(value, "parameter value")
    )


# --- helpers ------------------------------------------------------------------------------


def _cstring(buf: bytes, offset: int, what: str) -> tuple[str, int]:
    """The UTF-8 string at offset up to its NUL, and the offset after the NUL."""
    stop = buf.find(b"\0", offset)
    if stop < 0:
        raise BadParameter(f"{what} is not NUL-terminated")
    try:
        text = bytes(buf[offset:stop]).decode("utf-8")
    except UnicodeDecodeError:
        raise BadParameter(f"{what} is not valid UTF-8") from None
    return text, stop + 1


def _to_cstring(text: str, what: str) -> bytes:
    if "\0" in text:
        raise BadParameter(f"{what} must not contain NUL")
    try:
        return text.encode("utf-8") + b"\0"
    except UnicodeEncodeError:
        raise BadParameter(f"{what} is not encodable as UTF-8") from None


def _u16(buf: bytes, offset: int) -> tuple[int, int]:
    if offset + 2 > len(buf):
        raise BadParameter("message too short")
    return _U16.unpack_from(buf, offset)[0], offset + 2


def _u32(buf: bytes, offset: int) -> tuple[int, int]:
    if offset + 4 > len(buf):
        raise BadParameter("message too short")
    return _U32.unpack_from(buf, offset)[0], offset + 4


def _i32(buf: bytes, offset: int) -> tuple[int, int]:
    if offset + 4 > len(buf):
        raise BadParameter("message too short")
    return _I32.unpack_from(buf, offset)[0], offset + 4


def _format_codes(buf: bytes, offset: int) -> tuple[tuple[int, ...], int]:
    count, offset = _u16(buf, offset)
    if offset + 2 * count > len(buf):
        raise BadParameter("message too short for its format codes")
    codes = tuple(_I16.unpack_from(buf, offset + 2 * k)[0] for k in range(count))
    for code in codes:
        if code not in (0, 1):
            raise BadParameter(f"unknown format code {code}")
    return codes, offset + 2 * count


def _expect_end(buf: bytes, offset: int, what: str) -> None:
    if offset != len(buf):
        raise BadParameter(f"{len(buf) - offset} trailing bytes after the {what} message")


def _pack_key(pid: int, secret: int) -> bytes:
    if not (0 <= pid <= _MAX_U32 and 0 <= secret <= _MAX_U32):
        raise BadParameter("a backend pid and secret are unsigned 32-bit integers")
    return _TWO_U32.pack(pid, secret)


def _notice_fields(message: str, code: str, severity: str) -> bytes:
    if len(code) != 5 or not code.isascii() or not code.isalnum():
        raise BadParameter(f"invalid SQLSTATE {code!r}")
    if not severity:
        raise BadParameter("a severity must not be empty")
    sev = _to_cstring(severity, "severity")
    text = message.replace("\0", "\ufffd").encode("utf-8", errors="replace")
    return b"S" + sev + b"V" + sev + b"C" + _to_cstring(code, "SQLSTATE") + b"M" + text + b"\0\0"
