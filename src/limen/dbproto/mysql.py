"""The MySQL/MariaDB client/server protocol as pure codecs: bytes in, typed messages out, and back.

Called by the proxy's MySQL front (its own server greeting, the client's SSLRequest before TLS,
the client's HandshakeResponse41 after it) and by the db agent (the upstream login as a client,
then relaying commands: it audits COM_QUERY and prepared statements, refuses COM_CHANGE_USER
and checks COM_INIT_DB and ``USE``). No I/O here: the callers read and write and hand the bytes
to these functions. Malformed input raises :class:`~limen.errors.BadParameter`, never anything
else. The peers: MariaDB 10.11 (server and client) and PyMySQL 1.2.

A greeting the proxy sends should offer CLIENT_SECURE_CONNECTION, CLIENT_PLUGIN_AUTH,
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, CLIENT_CONNECT_WITH_DB and CLIENT_CONNECT_ATTRS: PyMySQL
sets these flags in its response whatever the server offers, but writes the matching fields only
when the server offered them, and a response is decoded by its own flags.

:class:`PacketSplitter` cuts a stream (either direction) into packets; a payload of exactly
:data:`MAX_PAYLOAD` bytes means "continued in the next packet", which the splitter leaves to the
caller (it keeps packets as they are, with their sequence numbers, for relaying).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from limen.dbproto.mysql_use import use_statement_database, use_statement_databases
from limen.errors import BadParameter

__all__ = [
    "CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS",
    "CLIENT_COMPRESS",
    "CLIENT_CONNECT_ATTRS",
    "CLIENT_CONNECT_WITH_DB",
    "CLIENT_DEPRECATE_EOF",
    "CLIENT_FOUND_ROWS",
    "CLIENT_IGNORE_SIGPIPE",
    "CLIENT_IGNORE_SPACE",
    "CLIENT_INTERACTIVE",
    "CLIENT_LOCAL_FILES",
    "CLIENT_LONG_FLAG",
    "CLIENT_LONG_PASSWORD",
    "CLIENT_MULTI_RESULTS",
    "CLIENT_MULTI_STATEMENTS",
    "CLIENT_NO_SCHEMA",
    "CLIENT_ODBC",
    "CLIENT_PLUGIN_AUTH",
    "CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA",
    "CLIENT_PROTOCOL_41",
    "CLIENT_PS_MULTI_RESULTS",
    "CLIENT_RESERVED",
    "CLIENT_SECURE_CONNECTION",
    "CLIENT_SESSION_TRACK",
    "CLIENT_SSL",
    "CLIENT_TRANSACTIONS",
    "COM_BINLOG_DUMP",
    "COM_CHANGE_USER",
    "COM_FIELD_LIST",
    "COM_INIT_DB",
    "COM_PING",
    "COM_PROCESS_KILL",
    "COM_QUERY",
    "COM_QUIT",
    "COM_RESET_CONNECTION",
    "COM_SET_OPTION",
    "COM_STATISTICS",
    "COM_STMT_BULK_EXECUTE",
    "COM_STMT_CLOSE",
    "COM_STMT_EXECUTE",
    "COM_STMT_FETCH",
    "COM_STMT_PREPARE",
    "COM_STMT_RESET",
    "COM_STMT_SEND_LONG_DATA",
    "LOCAL_INFILE",
    "MAX_PAYLOAD",
    "AuthSwitch",
    "Command",
    "ErrPacket",
    "Handshake",
    "HandshakeResponse",
    "Packet",
    "PacketSplitter",
    "SSLRequest",
    "decode_auth_switch",
    "decode_client_hello",
    "decode_command",
    "decode_err",
    "decode_handshake",
    "encode_handshake",
    "encode_handshake_response",
    "encode_packet",
    "encode_packets",
    "encode_ssl_request",
    "err_payload",
    "is_eof",
    "is_err",
    "is_ok",
    "lenenc_bytes",
    "lenenc_int",
    "ok_payload",
    "read_lenenc_int",
    "use_statement_database",
    "use_statement_databases",
]

# Capability flags: the 32-bit standard set. Bit 0 is also MariaDB's "CLIENT_MYSQL": a MariaDB
# peer clears it to announce 4 more bytes of MariaDB capabilities in the greeting and response.
CLIENT_LONG_PASSWORD = 1 << 0
CLIENT_FOUND_ROWS = 1 << 1
CLIENT_LONG_FLAG = 1 << 2
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_NO_SCHEMA = 1 << 4
CLIENT_COMPRESS = 1 << 5
CLIENT_ODBC = 1 << 6
CLIENT_LOCAL_FILES = 1 << 7
CLIENT_IGNORE_SPACE = 1 << 8
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_INTERACTIVE = 1 << 10
CLIENT_SSL = 1 << 11
CLIENT_IGNORE_SIGPIPE = 1 << 12
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_RESERVED = 1 << 14
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
CLIENT_SESSION_TRACK = 1 << 23
CLIENT_DEPRECATE_EOF = 1 << 24

MAX_PAYLOAD = 0xFFFFFF
LOCAL_INFILE = 0xFB  # the header of a server's LOCAL INFILE request (answering COM_QUERY)

COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_FIELD_LIST = 0x04
COM_STATISTICS = 0x09
COM_PROCESS_KILL = 0x0C
COM_PING = 0x0E
COM_CHANGE_USER = 0x11
COM_BINLOG_DUMP = 0x12
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_RESET = 0x1A
COM_SET_OPTION = 0x1B
COM_STMT_FETCH = 0x1C
COM_RESET_CONNECTION = 0x1F
COM_STMT_BULK_EXECUTE = 0xFA  # MariaDB

_PROTOCOL_V10 = 10
_SCRAMBLE_PART1 = 8
_MIN_PART2 = 13  # the second scramble part as sent: at least 12 bytes and a NUL
_CLIENT_FIXED = 32  # caps, max packet, charset, 23 reserved: the whole of an SSLRequest
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_GREETING_MIDDLE = struct.Struct("<BHHB")  # charset, status, caps (upper), auth data length
_CLIENT_HEAD = struct.Struct("<IIB")  # caps, max packet, charset
_MAX_U64 = (1 << 64) - 1


# -- packets ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet: its sequence number and its payload (at most :data:`MAX_PAYLOAD` bytes)."""

    seq: int
    payload: bytes


class PacketSplitter:
    """Incremental splitter of MySQL packets (3-byte little-endian length, 1-byte sequence).

    Linear in the bytes fed: the unfinished tail is kept in one bytearray, trimmed once per
    :meth:`feed`. After a :class:`~limen.errors.BadParameter` the stream is lost.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= MAX_PAYLOAD:
            raise BadParameter(f"max_payload must be within 0..{MAX_PAYLOAD}")
        self._max = max_payload
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        """The packets completed by ``data``, in order (an empty list while one is partial)."""
        if not self._buf:
            packets, used = self._cut(data)
            if used < len(data):
                self._buf += memoryview(data)[used:]
            return packets
        self._buf += data
        packets, used = self._cut(self._buf)
        del self._buf[:used]
        return packets

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole packet."""
        return len(self._buf)

    def _cut(self, buf: bytes | bytearray) -> tuple[list[Packet], int]:
        packets: list[Packet] = []
        pos, end, limit = 0, len(buf), self._max
        with memoryview(buf) as view:
            while end - pos >= 4:
                length = view[pos] | view[pos + 1] << 8 | view[pos + 2] << 16
                if length > limit:
                    raise BadParameter(f"a packet of {length} bytes exceeds the limit of {limit}")
                stop = pos + 4 + length
                if stop > end:
                    break
                packets.append(Packet(view[pos + 3], bytes(view[pos + 4 : stop])))
                pos = stop
        return packets, pos


def encode_packet(seq: int, payload: bytes) -> bytes:
    """One packet: header and payload (sequence taken modulo 256; at most 0xFFFFFF bytes, and a
    payload of exactly 0xFFFFFF means "continued": larger data goes through encode_packets)."""
    if len(payload) > MAX_PAYLOAD:
        raise BadParameter(f"a payload of {len(payload)} bytes needs encode_packets")
    return len(payload).to_bytes(3, "little") + bytes((seq & 0xFF,)) + payload


def encode_packets(seq: int, payload: bytes) -> tuple[bytes, int]:
    """A payload of any size as packets (0xFFFFFF-byte pieces, ended by a shorter one, empty if
    need be), and the sequence number that follows them."""
    parts: list[bytes] = []
    pos = 0
    while True:
        piece = payload[pos : pos + MAX_PAYLOAD]
        parts.append(encode_packet(seq, piece))
        seq = (seq + 1) & 0xFF
        pos += MAX_PAYLOAD
        if len(piece) < MAX_PAYLOAD:
            return b"".join(parts), seq


# -- length-encoded integers and strings --------------------------------------------------


def read_lenenc_int(buf: bytes, pos: int) -> tuple[int | None, int]:
    """The length-encoded integer at ``pos`` (None for the 0xFB NULL) and the position after."""
    if not 0 <= pos < len(buf):
        raise BadParameter("a length-encoded integer is missing")
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None:
        raise BadParameter("0xFF does not start a length-encoded integer")
    stop = pos + 1 + size
    if stop > len(buf):
        raise BadParameter("a length-encoded integer is cut short")
    return int.from_bytes(buf[pos + 1 : stop], "little"), stop


def lenenc_int(value: int) -> bytes:
    """``value`` (0 .. 2**64-1) as a length-encoded integer."""
    if value < 0 or value > _MAX_U64:
        raise BadParameter(f"{value} does not fit a length-encoded integer")
    if value < 0xFB:
        return bytes((value,))
    if value <= 0xFFFF:
        return b"\xfc" + value.to_bytes(2, "little")
    if value <= 0xFFFFFF:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def lenenc_bytes(value: bytes) -> bytes:
    """``value`` preceded by its length as a length-encoded integer."""
    return lenenc_int(len(value)) + value


class _Reader:
    """A cursor over one payload whose every read raises BadParameter when the data is short."""

    def __init__(self, payload: bytes, what: str) -> None:
        self.buf = payload
        self.pos = 0
        self.what = what

    def fail(self, reason: str) -> BadParameter:
        return BadParameter(f"malformed {self.what}: {reason}")

    def at_end(self) -> bool:
        return self.pos >= len(self.buf)

    def take(self, size: int) -> bytes:
        stop = self.pos + size
        if size < 0 or stop > len(self.buf):
            raise self.fail("cut short")
        data = self.buf[self.pos : stop]
        self.pos = stop
        return data

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def nul_bytes(self) -> bytes:
        stop = self.buf.find(b"\x00", self.pos)
        if stop < 0:
            raise self.fail("a NUL terminator is missing")
        data = self.buf[self.pos : stop]
        self.pos = stop + 1
        return data

    def nul_text(self, field: str) -> str:
        return self.text(self.nul_bytes(), field)

    def lenenc(self) -> int:
        value, self.pos = read_lenenc_int(self.buf, self.pos)
        if value is None:
            raise self.fail("NULL where a length is due")
        return value

    def lenenc_bytes(self) -> bytes:
        return self.take(self.lenenc())

    def rest(self) -> bytes:
        data = self.buf[self.pos :]
        self.pos = len(self.buf)
        return data

    def text(self, raw: bytes, field: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{field} is not UTF-8") from None

    def done(self) -> None:
        if not self.at_end():
            raise self.fail(f"{len(self.buf) - self.pos} bytes of trailing garbage")


def _check_uint(value: int, bits: int, what: str) -> None:
    if not 0 <= value < 1 << bits:
        raise BadParameter(f"{what} must fit in {bits} bits")


def _name_bytes(value: str, what: str) -> bytes:
    """``value`` as a NUL-terminated UTF-8 string."""
    if "\x00" in value:
        raise BadParameter(f"{what} must not contain NUL")
    return value.encode("utf-8") + b"\x00"


def _mariadb_caps_bytes(capabilities: int, mariadb_capabilities: int) -> bytes:
    """The last 4 reserved bytes: MariaDB's capabilities when bit 0 (CLIENT_MYSQL) is unset."""
    _check_uint(mariadb_capabilities, 32, "mariadb_capabilities")
    if capabilities & CLIENT_LONG_PASSWORD:
        if mariadb_capabilities:
            raise BadParameter("MariaDB capabilities need CLIENT_LONG_PASSWORD (bit 0) unset")
        return bytes(4)
    return _U32.pack(mariadb_capabilities)


def _read_mariadb_caps(reader: _Reader, capabilities: int) -> int:
    raw = reader.take(4)
    if capabilities & CLIENT_LONG_PASSWORD:
        return 0
    value: int = _U32.unpack(raw)[0]
    return value


# -- the server greeting ------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """Protocol::HandshakeV10, the server's greeting (sequence 0)."""

    server_version: str
    connection_id: int
    auth_data: bytes  # the scramble, 20 bytes usually (parts 1 and 2, without the trailing NUL)
    capabilities: int  # the 32-bit standard flags
    charset: int
    status: int
    auth_plugin: str  # e.g. "mysql_native_password"; "" without CLIENT_PLUGIN_AUTH
    mariadb_capabilities: int = 0  # MariaDB's extended flags, when bit 0 is unset


def decode_handshake(payload: bytes) -> Handshake:
    """The server greeting (check :func:`is_err` first: a server may refuse with an ERR)."""
    reader = _Reader(payload, "server greeting")
    version = reader.u8()
    if version != _PROTOCOL_V10:
        raise reader.fail(f"protocol version {version}, 10 expected")
    server_version = reader.nul_text("the server version")
    connection_id = reader.u32()
    part1 = reader.take(_SCRAMBLE_PART1)
    reader.take(1)  # filler
    capabilities = reader.u16()
    if reader.at_end():
        raise reader.fail("protocol 4.1 required")
    charset, status, upper, auth_len = _GREETING_MIDDLE.unpack(reader.take(_GREETING_MIDDLE.size))
    capabilities |= upper << 16
    if not capabilities & CLIENT_PROTOCOL_41:
        raise reader.fail("protocol 4.1 required")
    reader.take(6)  # reserved
    mariadb_capabilities = _read_mariadb_caps(reader, capabilities)
    auth_data = part1
    if capabilities & CLIENT_SECURE_CONNECTION:
        part2 = reader.take(max(_MIN_PART2, auth_len - _SCRAMBLE_PART1))
        if part2[-1] != 0:
            raise reader.fail("the scramble lacks its NUL terminator")
        auth_data += part2[:-1]
    auth_plugin = ""
    if capabilities & CLIENT_PLUGIN_AUTH:
        auth_plugin = reader.nul_text("the auth plugin name")
    reader.done()
    return Handshake(
        server_version=server_version,
        connection_id=connection_id,
        auth_data=auth_data,
        capabilities=capabilities,
        charset=charset,
        status=status,
        auth_plugin=auth_plugin,
        mariadb_capabilities=mariadb_capabilities,
    )


def encode_handshake(h: Handshake) -> bytes:
    """The payload of a greeting. With CLIENT_SECURE_CONNECTION the scramble has 20 bytes or
    more; without it, exactly 8. With CLIENT_PLUGIN_AUTH unset, ``auth_plugin`` must be ""."""
    _check_uint(h.capabilities, 32, "capabilities")
    _check_uint(h.connection_id, 32, "connection_id")
    _check_uint(h.charset, 8, "charset")
    _check_uint(h.status, 16, "status")
    if not h.capabilities & CLIENT_PROTOCOL_41:
        raise BadParameter("a greeting must offer CLIENT_PROTOCOL_41")
    secure = bool(h.capabilities & CLIENT_SECURE_CONNECTION)
    size = len(h.auth_data)
    plugin_auth = bool(h.capabilities & CLIENT_PLUGIN_AUTH)
    # The length of the second part travels only with CLIENT_PLUGIN_AUTH (13 bytes without).
    longest = 254 if plugin_auth else 20
    if (secure and not 20 <= size <= longest) or (not secure and size != _SCRAMBLE_PART1):
        raise BadParameter(f"a scramble of {size} bytes does not fit these capabilities")
    if h.auth_plugin and not plugin_auth:
        raise BadParameter("auth_plugin needs CLIENT_PLUGIN_AUTH")
    parts = [
        bytes((_PROTOCOL_V10,)),
        _name_bytes(h.server_version, "server_version"),
        _U32.pack(h.connection_id),
        h.auth_data[:_SCRAMBLE_PART1],
        b"\x00",
        _U16.pack(h.capabilities & 0xFFFF),
        _GREETING_MIDDLE.pack(
            h.charset, h.status, h.capabilities >> 16, size + 1 if plugin_auth else 0
        ),
        bytes(6),
        _mariadb_caps_bytes(h.capabilities, h.mariadb_capabilities),
    ]
    if secure:
        parts.append(h.auth_data[_SCRAMBLE_PART1:] + b"\x00")
    if plugin_auth:
        parts.append(_name_bytes(h.auth_plugin, "auth_plugin"))
    return b"".join(parts)


# -- the client's answer ------------------------------------------------------------------


@dataclass(frozen=True)
class SSLRequest:
    """The short HandshakeResponse41 with CLIENT_SSL (sequence 1): TLS starts after it."""

    capabilities: int
    max_packet: int
    charset: int
    mariadb_capabilities: int = 0


@dataclass(frozen=True)
class HandshakeResponse:
    """Protocol::HandshakeResponse41: who logs in, and how."""

    capabilities: int
    max_packet: int
    charset: int
    username: str
    auth_response: bytes
    database: str | None  # with CLIENT_CONNECT_WITH_DB
    auth_plugin: str | None  # with CLIENT_PLUGIN_AUTH
    attributes: Mapping[str, str]  # with CLIENT_CONNECT_ATTRS (else empty)
    mariadb_capabilities: int = 0


def _client_head(capabilities: int, max_packet: int, charset: int, mariadb_caps: int) -> bytes:
    _check_uint(capabilities, 32, "capabilities")
    _check_uint(max_packet, 32, "max_packet")
    _check_uint(charset, 8, "charset")
    if not capabilities & CLIENT_PROTOCOL_41:
        raise BadParameter("protocol 4.1 required")
    return (
        _CLIENT_HEAD.pack(capabilities, max_packet, charset)
        + bytes(19)
        + _mariadb_caps_bytes(capabilities, mariadb_caps)
    )


def encode_ssl_request(r: SSLRequest) -> bytes:
    """The 32-byte payload asking the server to start TLS."""
    if not r.capabilities & CLIENT_SSL:
        raise BadParameter("an SSLRequest needs CLIENT_SSL")
    return _client_head(r.capabilities, r.max_packet, r.charset, r.mariadb_capabilities)


def decode_client_hello(payload: bytes) -> SSLRequest | HandshakeResponse:
    """The client's first answer: an SSLRequest (exactly 32 bytes with CLIENT_SSL) or a whole
    HandshakeResponse41. Protocol 4.1 required; names must be UTF-8."""
    reader = _Reader(payload, "handshake response")
    # CLIENT_PROTOCOL_41 is in the first two bytes, all an old (3.20) response has of flags.
    if len(payload) >= 2 and not payload[1] << 8 & CLIENT_PROTOCOL_41:
        raise reader.fail("protocol 4.1 required")
    if len(payload) < _CLIENT_FIXED:
        raise reader.fail("cut short")
    capabilities, max_packet, charset = _CLIENT_HEAD.unpack(reader.take(_CLIENT_HEAD.size))
    reader.take(19)  # reserved
    mariadb_capabilities = _read_mariadb_caps(reader, capabilities)
    if len(payload) == _CLIENT_FIXED and capabilities & CLIENT_SSL:
        return SSLRequest(capabilities, max_packet, charset, mariadb_capabilities)
    username = reader.nul_text("the user name")
    if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth_response = reader.lenenc_bytes()
    elif capabilities & CLIENT_SECURE_CONNECTION:
        auth_response = reader.take(reader.u8())
    else:
        auth_response = reader.nul_bytes()
    database = reader.nul_text("the database") if capabilities & CLIENT_CONNECT_WITH_DB else None
    plugin = reader.nul_text("the auth plugin") if capabilities & CLIENT_PLUGIN_AUTH else None
    attributes: dict[str, str] = {}
    if capabilities & CLIENT_CONNECT_ATTRS:
        attributes = _decode_attributes(reader)
    reader.done()
    return HandshakeResponse(
        capabilities=capabilities,
        max_packet=max_packet,
        charset=charset,
        username=username,
        auth_response=auth_response,
        database=database,
        auth_plugin=plugin,
        attributes=attributes,
        mariadb_capabilities=mariadb_capabilities,
    )


def _decode_attributes(reader: _Reader) -> dict[str, str]:
    inner = _Reader(reader.lenenc_bytes(), "connection attributes")
    attributes: dict[str, str] = {}
    while not inner.at_end():
        key = inner.text(inner.lenenc_bytes(), "an attribute name")
        value = inner.text(inner.lenenc_bytes(), "an attribute value")
        if key in attributes:
            raise inner.fail(f"attribute {key!r} twice")
        attributes[key] = value
    return attributes


def encode_handshake_response(r: HandshakeResponse) -> bytes:
    """The payload of a HandshakeResponse41, its fields chosen by ``r.capabilities`` (a
    database exactly with CLIENT_CONNECT_WITH_DB, a plugin exactly with CLIENT_PLUGIN_AUTH,
    attributes only with CLIENT_CONNECT_ATTRS)."""
    caps = r.capabilities
    parts = [
        _client_head(caps, r.max_packet, r.charset, r.mariadb_capabilities),
        _name_bytes(r.username, "username"),
    ]
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        parts.append(lenenc_bytes(r.auth_response))
    elif caps & CLIENT_SECURE_CONNECTION:
        if len(r.auth_response) > 0xFF:
            raise BadParameter("an auth response over 255 bytes needs lenenc client data")
        parts.append(bytes((len(r.auth_response),)) + r.auth_response)
    else:
        if b"\x00" in r.auth_response:
            raise BadParameter("this auth response must not contain NUL")
        parts.append(r.auth_response + b"\x00")
    parts.append(_optional_name(r.database, caps & CLIENT_CONNECT_WITH_DB, "database"))
    parts.append(_optional_name(r.auth_plugin, caps & CLIENT_PLUGIN_AUTH, "auth_plugin"))
    if caps & CLIENT_CONNECT_ATTRS:
        parts.append(lenenc_bytes(b"".join(
            lenenc_bytes(key.encode("utf-8")) + lenenc_bytes(value.encode("utf-8"))
            for key, value in r.attributes.items()
        )))
    elif r.attributes:
        raise BadParameter("attributes need CLIENT_CONNECT_ATTRS")
    return b"".join(parts)


def _optional_name(value: str | None, flag: int, what: str) -> bytes:
    if (value is not None) != bool(flag):
        raise BadParameter(f"{what} is given exactly when its capability flag is set")
    return b"" if value is None else _name_bytes(value, what)


# -- generic responses --------------------------------------------------------------------


def ok_payload(affected_rows: int = 0, last_insert_id: int = 0, status: int = 2,
               warnings: int = 0, info: str = "") -> bytes:
    """An OK packet (status 2 = SERVER_STATUS_AUTOCOMMIT). ``info`` is written to the end of
    the packet, as without CLIENT_SESSION_TRACK."""
    _check_uint(status, 16, "status")
    _check_uint(warnings, 16, "warnings")
    return (
        b"\x00" + lenenc_int(affected_rows) + lenenc_int(last_insert_id)
        + _U16.pack(status) + _U16.pack(warnings) + info.encode("utf-8")
    )


def err_payload(code: int, sql_state: str, message: str) -> bytes:
    """An ERR packet: code, '#' and the 5-character SQLSTATE, message."""
    _check_uint(code, 16, "code")
    if len(sql_state) != 5 or not (sql_state.isascii() and sql_state.isalnum()):
        raise BadParameter(f"SQLSTATE {sql_state!r} is not 5 ASCII letters or digits")
    return b"\xff" + _U16.pack(code) + b"#" + sql_state.encode("ascii") + message.encode("utf-8")


@dataclass(frozen=True)
class ErrPacket:
    """A decoded ERR packet."""

    code: int
    sql_state: str  # "HY000" when the server sent none (before the 4.1 handshake completed)
    message: str


def decode_err(payload: bytes) -> ErrPacket:
    """An ERR packet (0xFF header); the message decoded with replacement characters."""
    reader = _Reader(payload, "ERR packet")
    if reader.u8() != 0xFF:
        raise reader.fail("not an ERR packet")
    code = reader.u16()
    sql_state = "HY000"
    if payload[3:4] == b"#":
        reader.take(1)
        raw = reader.take(5)
        if not (raw.isascii() and raw.isalnum()):
            raise reader.fail("the SQLSTATE is not 5 ASCII letters or digits")
        sql_state = raw.decode("ascii")
    return ErrPacket(code, sql_state, reader.rest().decode("utf-8", "replace"))


def is_ok(payload: bytes) -> bool:
    """An OK packet (0x00 header)."""
    return payload[:1] == b"\x00"


def is_err(payload: bytes) -> bool:
    """An ERR packet (0xFF header)."""
    return payload[:1] == b"\xff"


def is_eof(payload: bytes) -> bool:
    """An EOF packet (0xFE header, shorter than 9 bytes: a row would be longer)."""
    return payload[:1] == b"\xfe" and len(payload) < 9


@dataclass(frozen=True)
class AuthSwitch:
    """The server's AuthSwitchRequest during login (0xFE): use this plugin with this data."""

    plugin: str
    data: bytes  # as sent: mysql_native_password's 20-byte scramble is followed by a NUL


def decode_auth_switch(payload: bytes) -> AuthSwitch:
    """An AuthSwitchRequest. The bare 0xFE of the old-password switch is refused."""
    reader = _Reader(payload, "auth switch request")
    if reader.u8() != 0xFE:
        raise reader.fail("not an auth switch request")
    if reader.at_end():
        raise reader.fail("the old-password authentication is not supported")
    plugin = reader.nul_text("the plugin name")
    return AuthSwitch(plugin, reader.rest())


# -- commands -----------------------------------------------------------------------------


_COMMAND_NAMES = {
    COM_QUIT: "COM_QUIT",
    COM_INIT_DB: "COM_INIT_DB",
    COM_QUERY: "COM_QUERY",
    COM_FIELD_LIST: "COM_FIELD_LIST",
    COM_STATISTICS: "COM_STATISTICS",
    COM_PROCESS_KILL: "COM_PROCESS_KILL",
    COM_PING: "COM_PING",
    COM_CHANGE_USER: "COM_CHANGE_USER",
    COM_BINLOG_DUMP: "COM_BINLOG_DUMP",
    COM_STMT_PREPARE: "COM_STMT_PREPARE",
    COM_STMT_EXECUTE: "COM_STMT_EXECUTE",
    COM_STMT_SEND_LONG_DATA: "COM_STMT_SEND_LONG_DATA",
    COM_STMT_CLOSE: "COM_STMT_CLOSE",
    COM_STMT_RESET: "COM_STMT_RESET",
    COM_SET_OPTION: "COM_SET_OPTION",
    COM_STMT_FETCH: "COM_STMT_FETCH",
    COM_RESET_CONNECTION: "COM_RESET_CONNECTION",
    COM_STMT_BULK_EXECUTE: "COM_STMT_BULK_EXECUTE",
}
# Commands of a fixed size (code included).
_EXACT_SIZE = {
    COM_QUIT: 1, COM_STATISTICS: 1, COM_PING: 1, COM_RESET_CONNECTION: 1,
    COM_PROCESS_KILL: 5, COM_SET_OPTION: 3, COM_STMT_CLOSE: 5, COM_STMT_RESET: 5,
    COM_STMT_FETCH: 9,
}
# Commands naming a prepared statement, and their least size: id 4, then for EXECUTE flags 1
# and iteration count 4, for SEND_LONG_DATA the parameter 2, for BULK_EXECUTE flags 2.
_STATEMENT_MIN_SIZE = {
    COM_STMT_EXECUTE: 10, COM_STMT_SEND_LONG_DATA: 7, COM_STMT_CLOSE: 5, COM_STMT_RESET: 5,
    COM_STMT_FETCH: 9, COM_STMT_BULK_EXECUTE: 7,
}


@dataclass(frozen=True)
class Command:
    """The first packet of a client command (sequence 0), as the audit sees it."""

    code: int
    name: str  # "COM_QUERY", ... ("COM_0x42" for codes not listed here)
    text: str | None  # COM_QUERY / COM_STMT_PREPARE: the SQL; COM_INIT_DB: the database
    statement_id: int | None  # the COM_STMT_* commands that name a prepared statement


def decode_command(payload: bytes) -> Command:
    """A command packet. SQL is decoded with replacement characters (it is only audited); the
    database of COM_INIT_DB strictly (UTF-8, no NUL). Sizes are checked where they are fixed."""
    reader = _Reader(payload, "command")
    code = reader.u8()
    name = _COMMAND_NAMES.get(code, f"COM_0x{code:02X}")
    exact = _EXACT_SIZE.get(code)
    if exact is not None and len(payload) != exact:
        raise reader.fail(f"{name} has {len(payload)} bytes, not {exact}")
    text: str | None = None
    statement_id: int | None = None
    if code in (COM_QUERY, COM_STMT_PREPARE):
        text = reader.rest().decode("utf-8", "replace")
    elif code == COM_INIT_DB:
        raw = reader.rest()
        if b"\x00" in raw:
            raise reader.fail("the database name contains NUL")
        text = reader.text(raw, "the database name")
    elif code == COM_FIELD_LIST:
        reader.nul_bytes()  # the table, then a wildcard to the end
    elif code in _STATEMENT_MIN_SIZE:
        if len(payload) < _STATEMENT_MIN_SIZE[code]:
            raise reader.fail(f"{name} is cut short")
        statement_id = reader.u32()
    return Command(code, name, text, statement_id)
