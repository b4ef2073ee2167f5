"""The MySQL/MariaDB wire codec (limen.dbproto.mysql): captured MariaDB 10.11 and PyMySQL 1.2
bytes, round trips, length-encoded integers at their boundaries, commands, USE detection, and
properties over arbitrary bytes (every decoder returns or raises BadParameter, nothing else)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.dbproto import mysql
from limen.dbproto.mysql import (
    CLIENT_CONNECT_ATTRS,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_LONG_PASSWORD,
    CLIENT_MULTI_STATEMENTS,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SSL,
    MAX_PAYLOAD,
    AuthSwitch,
    Command,
    ErrPacket,
    Handshake,
    HandshakeResponse,
    Packet,
    PacketSplitter,
    SSLRequest,
    decode_auth_switch,
    decode_client_hello,
    decode_command,
    decode_err,
    decode_handshake,
    encode_handshake,
    encode_handshake_response,
    encode_packet,
    encode_packets,
    encode_ssl_request,
    err_payload,
    is_eof,
    is_err,
    is_ok,
    lenenc_bytes,
    lenenc_int,
    ok_payload,
    read_lenenc_int,
    use_statement_database,
    use_statement_databases,
)
from limen.errors import BadParameter

PROPERTY = settings(max_examples=200, deadline=None)

# Captured by hand (a relay logging a TCP session) from MariaDB 10.11.19 (Debian 12), the
# mariadb 10.11 client (libmariadb 3.3.20) and PyMySQL 1.2.4: whole packets, headers included.
MARIADB_GREETING = bytes.fromhex(
    "640000000a352e352e352d31302e31312e31392d4d6172696144422d302b646562313275310004000000"
    "52402b54453b394b00fef7080200ff81150000000000001d0000004d236246784b4b7631303c7a006d79"
    "73716c5f6e61746976655f70617373776f726400"
)
MARIADB_CLIENT_RESPONSE = bytes.fromhex(
    "d60000018ca2bf000000100021000000000000000000000000000000000000001d0000006c696d656e00"
    "1422042010a17642dd606c9b4d1d8d877bad6a741073686f70006d7973716c5f6e61746976655f7061"
    "7373776f7264007f035f6f73054c696e75780c5f636c69656e745f6e616d650a6c69626d6172696164"
    "62045f7069640531353632320f5f636c69656e745f76657273696f6e06332e332e3230095f706c6174"
    "666f726d067838365f36340c70726f6772616d5f6e616d65056d7973716c0c5f7365727665725f686f"
    "7374093132372e302e302e31"
)
# The mariadb client with --default-auth=client_ed25519 and no database: an empty auth response.
MARIADB_CLIENT_ED25519 = bytes.fromhex(
    "b600000184a2bf000000100021000000000000000000000000000000000000001d0000006c696d656e00"
    "00636c69656e745f65643235353139007f035f6f73054c696e75780c5f636c69656e745f6e616d650a"
    "6c69626d617269616462045f7069640531353932340f5f636c69656e745f76657273696f6e06332e33"
    "2e3230095f706c6174666f726d067838365f36340c70726f6772616d5f6e616d65056d7973716c0c5f"
    "7365727665725f686f7374093132372e302e302e31"
)
PYMYSQL_RESPONSE = bytes.fromhex(
    "8d0000010da23a00ffffff002d00000000000000000000000000000000000000000000006c696d656e00"
    "141042a792b3bf073c65b581945906d5a906a0f87973686f70006d7973716c5f6e61746976655f7061"
    "7373776f726400360c5f636c69656e745f6e616d650770796d7973716c0f5f636c69656e745f766572"
    "73696f6e05312e322e34045f706964053135363235"
)
MARIADB_SSL_REQUEST = bytes.fromhex(
    "2000000184aabf000000100021000000000000000000000000000000000000001d000000"
)
PYMYSQL_SSL_REQUEST = bytes.fromhex(
    "2000000105aa3a00ffffff002d0000000000000000000000000000000000000000000000"
)
MARIADB_AUTH_SWITCH = bytes.fromhex(
    "2c000002fe6d7973716c5f6e61746976655f70617373776f726400567671532a763648476a612a4c7c51"
    "5c5c39483c00"
)
MARIADB_ACCESS_DENIED = bytes.fromhex(
    "49000002ff15042332383030304163636573732064656e69656420666f72207573657220276c696d656e"
    "2740276c6f63616c686f73742720287573696e672070617373776f72643a2059455329"
)
MARIADB_ATTRIBUTES = {
    "_os": "Linux", "_client_name": "libmariadb", "_pid": "15622", "_client_version": "3.3.20",
    "_platform": "x86_64", "program_name": "mysql", "_server_host": "127.0.0.1",
}


def only_packet(data: bytes) -> Packet:
    packets = PacketSplitter().feed(data)
    assert len(packets) == 1
    return packets[0]


# -- captured bytes -------------------------------------------------------------------------


def test_a_mariadb_greeting_decodes_and_encodes_to_the_same_bytes() -> None:
    packet = only_packet(MARIADB_GREETING)
    greeting = decode_handshake(packet.payload)
    assert packet.seq == 0
    assert greeting.server_version == "5.5.5-10.11.19-MariaDB-0+deb12u1"
    assert greeting.connection_id == 4
    assert greeting.auth_data == b"R@+TE;9KM#bFxKKv10<z"
    assert greeting.auth_plugin == "mysql_native_password"
    assert greeting.capabilities == 0x81FFF7FE
    assert not greeting.capabilities & CLIENT_LONG_PASSWORD  # MariaDB: extended flags follow
    assert greeting.mariadb_capabilities == 0x1D
    assert (greeting.charset, greeting.status) == (8, 2)
    assert encode_packet(0, encode_handshake(greeting)) == MARIADB_GREETING


def test_the_mariadb_clients_response_decodes_and_encodes_to_the_same_bytes() -> None:
    packet = only_packet(MARIADB_CLIENT_RESPONSE)
    response = decode_client_hello(packet.payload)
    assert isinstance(response, HandshakeResponse)
    assert response.username == "limen"
    assert response.database == "shop"
    assert response.auth_plugin == "mysql_native_password"
    assert len(response.auth_response) == 20
    assert dict(response.attributes) == MARIADB_ATTRIBUTES
    assert response.capabilities & CLIENT_MULTI_STATEMENTS
    assert (response.max_packet, response.charset, response.mariadb_capabilities) == (
        1 << 20, 33, 0x1D)
    assert encode_packet(1, encode_handshake_response(response)) == MARIADB_CLIENT_RESPONSE


def test_an_empty_auth_response_without_database_decodes_and_encodes_the_same() -> None:
    response = decode_client_hello(only_packet(MARIADB_CLIENT_ED25519).payload)
    assert isinstance(response, HandshakeResponse)
    assert (response.auth_response, response.database, response.auth_plugin) == (
        b"", None, "client_ed25519")
    assert encode_packet(1, encode_handshake_response(response)) == MARIADB_CLIENT_ED25519


def test_pymysqls_response_decodes_and_encodes_to_the_same_bytes() -> None:
    response = decode_client_hello(only_packet(PYMYSQL_RESPONSE).payload)
    assert isinstance(response, HandshakeResponse)
    assert (response.username, response.database, response.charset) == ("limen", "shop", 45)
    assert response.capabilities & CLIENT_LONG_PASSWORD  # the MySQL flavour: no MariaDB flags
    assert response.mariadb_capabilities == 0
    assert response.attributes == {
        "_client_name": "pymysql", "_client_version": "1.2.4", "_pid": "15625"}
    assert encode_packet(1, encode_handshake_response(response)) == PYMYSQL_RESPONSE


@pytest.mark.parametrize(("captured", "mariadb_caps", "max_packet"), [
    (MARIADB_SSL_REQUEST, 0x1D, 1 << 20),
    (PYMYSQL_SSL_REQUEST, 0, 0xFFFFFF),
])
def test_captured_ssl_requests_decode_and_encode_to_the_same_bytes(
    captured: bytes, mariadb_caps: int, max_packet: int,
) -> None:
    request = decode_client_hello(only_packet(captured).payload)
    assert isinstance(request, SSLRequest)
    assert request.capabilities & CLIENT_SSL
    assert (request.mariadb_capabilities, request.max_packet) == (mariadb_caps, max_packet)
    assert encode_packet(1, encode_ssl_request(request)) == captured


def test_a_captured_auth_switch_keeps_its_data_as_sent() -> None:
    packet = only_packet(MARIADB_AUTH_SWITCH)
    switch = decode_auth_switch(packet.payload)
    assert packet.seq == 2
    assert switch == AuthSwitch("mysql_native_password", b"VvqS*v6HGja*L|Q\\\\9H<\x00")


def test_a_captured_access_denied_decodes() -> None:
    payload = only_packet(MARIADB_ACCESS_DENIED).payload
    assert is_err(payload)
    assert decode_err(payload) == ErrPacket(
        1045, "28000", "Access denied for user 'limen'@'localhost' (using password: YES)")


# -- handshake round trips ------------------------------------------------------------------

BASE_CAPS = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH


@pytest.mark.parametrize("greeting", [
    Handshake("8.0.36", 7, bytes(range(1, 21)), BASE_CAPS | CLIENT_LONG_PASSWORD | CLIENT_SSL,
              255, 2, "caching_sha2_password"),
    Handshake("10.11.6-MariaDB", 0xFFFFFFFF, b"s" * 20, BASE_CAPS, 45, 0, "mysql_native_password",
              mariadb_capabilities=0x1D),
    Handshake("limen", 1, b"x" * 32, BASE_CAPS, 33, 2, "client_ed25519"),
    Handshake("no plugins", 2, b"y" * 20, CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION, 8, 2, ""),
    Handshake("old scramble", 3, b"z" * 8, CLIENT_PROTOCOL_41, 8, 2, ""),
])
def test_greetings_round_trip(greeting: Handshake) -> None:
    assert decode_handshake(encode_handshake(greeting)) == greeting


@pytest.mark.parametrize("greeting", [
    Handshake("v", 1, b"s" * 20, BASE_CAPS | CLIENT_LONG_PASSWORD, 8, 2, "p",
              mariadb_capabilities=1),
    Handshake("v", 1, b"s" * 19, BASE_CAPS, 8, 2, "p"),
    Handshake("v", 1, b"s" * 21, CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION, 8, 2, ""),
    Handshake("v", 1, b"s" * 20, CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION, 8, 2, "p"),
    Handshake("v\x00", 1, b"s" * 20, BASE_CAPS, 8, 2, "p"),
    Handshake("v", 1, b"s" * 20, BASE_CAPS & ~CLIENT_PROTOCOL_41, 8, 2, "p"),
    Handshake("v", 1 << 32, b"s" * 20, BASE_CAPS, 8, 2, "p"),
])
def test_greetings_the_format_cannot_carry_are_refused(greeting: Handshake) -> None:
    with pytest.raises(BadParameter):
        encode_handshake(greeting)


def test_a_greeting_with_another_protocol_version_or_cut_short_is_refused() -> None:
    payload = encode_handshake(Handshake("v", 1, b"s" * 20, BASE_CAPS, 8, 2, "p"))
    with pytest.raises(BadParameter, match="protocol version 9"):
        decode_handshake(b"\x09" + payload[1:])
    for cut in (1, 5, 20, len(payload) - 1):
        with pytest.raises(BadParameter):
            decode_handshake(payload[:cut])
    with pytest.raises(BadParameter, match="trailing garbage"):
        decode_handshake(payload + b"x")


def test_a_pre_41_greeting_is_refused() -> None:
    short = b"\x0a" + b"v\x00" + bytes(4) + b"s" * 8 + b"\x00" + b"\x00\x00"
    with pytest.raises(BadParameter, match=r"protocol 4\.1 required"):
        decode_handshake(short)


# -- handshake response round trips ---------------------------------------------------------

P41 = CLIENT_PROTOCOL_41


@pytest.mark.parametrize("response", [
    HandshakeResponse(P41 | CLIENT_SECURE_CONNECTION, 1 << 24, 45, "alice", b"a" * 20,
                      None, None, {}),
    HandshakeResponse(P41 | CLIENT_SECURE_CONNECTION | CLIENT_CONNECT_WITH_DB, 0, 33, "bob",
                      b"", "inventory", None, {}),
    HandshakeResponse(P41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH, 0, 33, "carol",
                      b"c" * 255, None, "mysql_clear_password", {}),
    HandshakeResponse(P41 | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_PLUGIN_AUTH
                      | CLIENT_CONNECT_ATTRS | CLIENT_CONNECT_WITH_DB, 1, 255, "dåve",
                      bytes(range(256)) * 2, "bäse", "client_ed25519",
                      {"_client_name": "limen", "ünï": "cödé", "": ""}),
    HandshakeResponse(P41 | CLIENT_CONNECT_ATTRS, 2, 8, "", b"old", None, None, {}),
    HandshakeResponse(P41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION, 3, 8, "tls", b"t",
                      None, None, {}, mariadb_capabilities=0xFFFFFFFF),
])
def test_handshake_responses_round_trip(response: HandshakeResponse) -> None:
    assert decode_client_hello(encode_handshake_response(response)) == response


@pytest.mark.parametrize("response", [
    HandshakeResponse(P41 | CLIENT_SECURE_CONNECTION, 0, 8, "a", b"x" * 256, None, None, {}),
    HandshakeResponse(P41, 0, 8, "a", b"with\x00nul", None, None, {}),
    HandshakeResponse(P41, 0, 8, "a\x00b", b"", None, None, {}),
    HandshakeResponse(P41, 0, 8, "a", b"", "db", None, {}),
    HandshakeResponse(P41 | CLIENT_CONNECT_WITH_DB, 0, 8, "a", b"", None, None, {}),
    HandshakeResponse(P41, 0, 8, "a", b"", None, "plugin", {}),
    HandshakeResponse(P41, 0, 8, "a", b"", None, None, {"k": "v"}),
    HandshakeResponse(0, 0, 8, "a", b"", None, None, {}),
    HandshakeResponse(P41, 0, 256, "a", b"", None, None, {}),
])
def test_handshake_responses_the_format_cannot_carry_are_refused(
    response: HandshakeResponse,
) -> None:
    with pytest.raises(BadParameter):
        encode_handshake_response(response)


def test_an_ssl_request_round_trips_and_needs_client_ssl() -> None:
    request = SSLRequest(P41 | CLIENT_SSL, 1 << 24, 45, mariadb_capabilities=0)
    payload = encode_ssl_request(request)
    assert len(payload) == 32
    assert decode_client_hello(payload) == request
    with pytest.raises(BadParameter, match="CLIENT_SSL"):
        encode_ssl_request(SSLRequest(P41, 0, 45))


def test_a_client_without_protocol_41_is_refused() -> None:
    payload = encode_handshake_response(
        HandshakeResponse(P41 | CLIENT_SECURE_CONNECTION, 0, 8, "a", b"", None, None, {}))
    old = (int.from_bytes(payload[:4], "little") & ~P41).to_bytes(4, "little") + payload[4:]
    with pytest.raises(BadParameter, match=r"protocol 4\.1 required"):
        decode_client_hello(old)
    # The HandshakeResponse320 example of the MySQL documentation (17 bytes).
    response320 = bytes.fromhex("85240000006f6c6400474453435159525f")
    with pytest.raises(BadParameter, match=r"protocol 4\.1 required"):
        decode_client_hello(response320)


def test_thirty_two_bytes_without_client_ssl_are_not_an_ssl_request() -> None:
    payload = encode_ssl_request(SSLRequest(P41 | CLIENT_SSL, 0, 45))
    plain = (P41).to_bytes(4, "little") + payload[4:]
    with pytest.raises(BadParameter, match="NUL terminator"):
        decode_client_hello(plain)


def _response_with(tail: bytes, caps: int = P41 | CLIENT_SECURE_CONNECTION) -> bytes:
    return caps.to_bytes(4, "little") + bytes(4) + b"\x21" + bytes(23) + tail


@pytest.mark.parametrize(("payload", "reason"), [
    (_response_with(b"\xff\xfe\x00\x00"), "not UTF-8"),
    (_response_with(b"user"), "NUL terminator"),
    (_response_with(b"user\x00\x05abc"), "cut short"),
    (_response_with(b"user\x00\x00junk"), "trailing garbage"),
    (_response_with(b"user\x00\x00", P41 | CLIENT_SECURE_CONNECTION | CLIENT_CONNECT_WITH_DB),
     "NUL terminator"),
    (_response_with(b"user\x00\xfb", P41 | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA), "NULL"),
    (_response_with(b"u\x00\x00\x09\x01k\x01v", P41 | CLIENT_SECURE_CONNECTION
                    | CLIENT_CONNECT_ATTRS), "cut short"),
    (_response_with(b"u\x00\x00\x03\x01k\x05", P41 | CLIENT_SECURE_CONNECTION
                    | CLIENT_CONNECT_ATTRS), "cut short"),
    (_response_with(b"u\x00\x00\x08\x01k\x01v\x01k\x01w", P41 | CLIENT_SECURE_CONNECTION
                    | CLIENT_CONNECT_ATTRS), "twice"),
    (_response_with(b"u\x00\x00\x04\x01k\x01\xff", P41 | CLIENT_SECURE_CONNECTION
                    | CLIENT_CONNECT_ATTRS), "not UTF-8"),
    (b"\x00\x02\x00\x00", "cut short"),
])
def test_malformed_handshake_responses_are_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(BadParameter, match=reason):
        decode_client_hello(payload)


# -- generic responses ----------------------------------------------------------------------


def test_ok_payload_lays_out_its_fields() -> None:
    assert ok_payload() == b"\x00\x00\x00\x02\x00\x00\x00"
    payload = ok_payload(affected_rows=300, last_insert_id=7, status=0x4002, warnings=1,
                         info="Rows matched: 1")
    assert payload == b"\x00\xfc\x2c\x01\x07\x02\x40\x01\x00Rows matched: 1"
    assert is_ok(payload)
    assert not is_err(payload)
    assert not is_eof(payload)
    with pytest.raises(BadParameter):
        ok_payload(status=1 << 16)


def test_err_payload_round_trips() -> None:
    payload = err_payload(1044, "42000", "Access denied to database 'ünï'")
    assert payload[:4] == b"\xff\x14\x04#"
    assert is_err(payload)
    assert not is_ok(payload)
    assert decode_err(payload) == ErrPacket(1044, "42000", "Access denied to database 'ünï'")


@pytest.mark.parametrize(("code", "state"), [(1 << 16, "HY000"), (1, "HY00"), (1, "HY00!"),
                                             (1, "HY00é")])
def test_err_payload_refuses_what_cannot_be_sent(code: int, state: str) -> None:
    with pytest.raises(BadParameter):
        err_payload(code, state, "m")


def test_an_err_without_sqlstate_gets_hy000_and_garbage_is_replaced() -> None:
    assert decode_err(b"\xff\x10\x04Too many connections") == ErrPacket(
        1040, "HY000", "Too many connections")
    assert decode_err(b"\xff\x01\x00#HY000bad \xff") == ErrPacket(1, "HY000", "bad \ufffd")
    for bad in (b"", b"\x00\x01\x00", b"\xff\x01", b"\xff\x01\x00#HY0", b"\xff\x01\x00#H\x00000"):
        with pytest.raises(BadParameter):
            decode_err(bad)


def test_eof_is_a_short_fe_packet() -> None:
    assert is_eof(b"\xfe\x00\x00\x02\x00")
    assert not is_eof(b"\xfe" + bytes(8))
    assert not is_eof(b"")
    assert not is_ok(b"")
    assert not is_err(b"")


def test_auth_switch_decodes_and_refuses_old_password_and_malformed_input() -> None:
    assert decode_auth_switch(b"\xfeclient_ed25519\x00" + b"n" * 32) == AuthSwitch(
        "client_ed25519", b"n" * 32)
    assert decode_auth_switch(b"\xfemysql_clear_password\x00") == AuthSwitch(
        "mysql_clear_password", b"")
    with pytest.raises(BadParameter, match="old-password"):
        decode_auth_switch(b"\xfe")
    for bad in (b"", b"\x00plugin\x00", b"\xfeplugin", b"\xfe\xff\x00data"):
        with pytest.raises(BadParameter):
            decode_auth_switch(bad)


# -- length-encoded integers ----------------------------------------------------------------


@pytest.mark.parametrize(("value", "encoded"), [
    (0, b"\x00"),
    (250, b"\xfa"),
    (251, b"\xfc\xfb\x00"),
    (0xFFFF, b"\xfc\xff\xff"),
    (0x10000, b"\xfd\x00\x00\x01"),
    (0xFFFFFF, b"\xfd\xff\xff\xff"),
    (0x1000000, b"\xfe\x00\x00\x00\x01\x00\x00\x00\x00"),
    (2**64 - 1, b"\xfe" + b"\xff" * 8),
])
def test_lenenc_ints_at_each_boundary(value: int, encoded: bytes) -> None:
    assert lenenc_int(value) == encoded
    assert read_lenenc_int(b"pre" + encoded + b"post", 3) == (value, 3 + len(encoded))


def test_lenenc_null_strings_and_refusals() -> None:
    assert read_lenenc_int(b"\xfb", 0) == (None, 1)
    assert lenenc_bytes(b"abc") == b"\x03abc"
    assert lenenc_bytes(b"x" * 300) == b"\xfc\x2c\x01" + b"x" * 300
    for value in (-1, 2**64):
        with pytest.raises(BadParameter):
            lenenc_int(value)
    for buf, pos in ((b"\xff", 0), (b"", 0), (b"\xfc\x01", 0), (b"\xfe" + bytes(7), 0),
                     (b"\x01", 1), (b"\x01", -1)):
        with pytest.raises(BadParameter):
            read_lenenc_int(buf, pos)


# -- packets ---------------------------------------------------------------------------------


def test_the_splitter_cuts_packets_and_keeps_partial_ones() -> None:
    splitter = PacketSplitter()
    stream = encode_packet(0, b"\x03SELECT 1") + encode_packet(1, b"") + encode_packet(2, b"ab")
    assert splitter.feed(stream[:5]) == []
    assert splitter.pending == 5
    assert splitter.feed(stream[5:-1]) == [Packet(0, b"\x03SELECT 1"), Packet(1, b"")]
    assert splitter.pending == 5
    assert splitter.feed(stream[-1:]) == [Packet(2, b"ab")]
    assert splitter.pending == 0


def test_the_splitter_refuses_a_packet_over_its_limit_from_its_header() -> None:
    splitter = PacketSplitter(max_payload=10)
    assert splitter.feed(encode_packet(0, b"x" * 10)) == [Packet(0, b"x" * 10)]
    with pytest.raises(BadParameter, match="exceeds the limit of 10"):
        splitter.feed(encode_packet(0, b"x" * 11)[:4])
    with pytest.raises(BadParameter):
        PacketSplitter(max_payload=MAX_PAYLOAD + 1)


def test_encode_packet_wraps_the_sequence_and_refuses_oversized_payloads() -> None:
    assert encode_packet(256 + 5, b"ab") == b"\x02\x00\x00\x05ab"
    with pytest.raises(BadParameter, match="encode_packets"):
        encode_packet(0, bytes(MAX_PAYLOAD + 1))


def test_encode_packets_splits_at_the_maximum_and_ends_with_a_short_packet() -> None:
    assert encode_packets(255, b"abc") == (b"\x03\x00\x00\xffabc", 0)
    big = bytes(MAX_PAYLOAD)
    data, next_seq = encode_packets(3, big)
    assert next_seq == 5
    assert PacketSplitter().feed(data) == [Packet(3, big), Packet(4, b"")]
    data, next_seq = encode_packets(0, big + b"tail")
    assert next_seq == 2
    assert PacketSplitter().feed(data) == [Packet(0, big), Packet(1, b"tail")]


def test_a_large_payload_fed_in_small_chunks_comes_out_whole() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    stream = encode_packet(0, payload) + encode_packet(1, b"next")
    splitter = PacketSplitter()
    packets: list[Packet] = []
    for start in range(0, len(stream), 4096):
        packets += splitter.feed(stream[start : start + 4096])
    assert packets == [Packet(0, payload), Packet(1, b"next")]
    assert splitter.pending == 0


# -- commands --------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "expected"), [
    (b"\x01", Command(0x01, "COM_QUIT", None, None)),
    (b"\x02shop", Command(0x02, "COM_INIT_DB", "shop", None)),
    ("\x03SELECT 'é'".encode(), Command(0x03, "COM_QUERY", "SELECT 'é'", None)),
    (b"\x03SELECT '\xff'", Command(0x03, "COM_QUERY", "SELECT '\ufffd'", None)),
    (b"\x04users\x00%", Command(0x04, "COM_FIELD_LIST", None, None)),
    (b"\x09", Command(0x09, "COM_STATISTICS", None, None)),
    (b"\x0c\x05\x00\x00\x00", Command(0x0C, "COM_PROCESS_KILL", None, None)),
    (b"\x0e", Command(0x0E, "COM_PING", None, None)),
    (b"\x11bob\x00\x00", Command(0x11, "COM_CHANGE_USER", None, None)),
    (b"\x12" + bytes(10), Command(0x12, "COM_BINLOG_DUMP", None, None)),
    (b"\x16SELECT ?", Command(0x16, "COM_STMT_PREPARE", "SELECT ?", None)),
    (b"\x17\x07\x00\x00\x00\x00\x01\x00\x00\x00", Command(0x17, "COM_STMT_EXECUTE", None, 7)),
    (b"\x18\x08\x00\x00\x00\x01\x00data", Command(0x18, "COM_STMT_SEND_LONG_DATA", None, 8)),
    (b"\x19\x09\x00\x00\x00", Command(0x19, "COM_STMT_CLOSE", None, 9)),
    (b"\x1a\xff\xff\xff\xff", Command(0x1A, "COM_STMT_RESET", None, 0xFFFFFFFF)),
    (b"\x1b\x01\x00", Command(0x1B, "COM_SET_OPTION", None, None)),
    (b"\x1c\x0a\x00\x00\x00\x64\x00\x00\x00", Command(0x1C, "COM_STMT_FETCH", None, 10)),
    (b"\x1f", Command(0x1F, "COM_RESET_CONNECTION", None, None)),
    (b"\xfa\x0b\x00\x00\x00\x80\x00", Command(0xFA, "COM_STMT_BULK_EXECUTE", None, 11)),
    (b"\x42anything", Command(0x42, "COM_0x42", None, None)),
])
def test_decode_command(payload: bytes, expected: Command) -> None:
    assert decode_command(payload) == expected


@pytest.mark.parametrize("payload", [
    b"", b"\x01\x00", b"\x0e\x00", b"\x02sh\x00op", b"\x02\xff", b"\x04users",
    b"\x0c\x01", b"\x1b\x01", b"\x17\x01\x00\x00\x00\x00", b"\x18\x01\x00\x00\x00\x01",
    b"\x19\x01\x00\x00", b"\x19\x01\x00\x00\x00\x00", b"\x1c\x01\x00\x00\x00", b"\xfa\x01",
])
def test_malformed_commands_are_refused(payload: bytes) -> None:
    with pytest.raises(BadParameter):
        decode_command(payload)


# -- USE statements --------------------------------------------------------------------------


@pytest.mark.parametrize(("sql", "database"), [
    ("USE shop", "shop"),
    ("use shop;", "shop"),
    ("  \n\tUsE   shop  ;  ", "shop"),
    ("USE `my``db`", "my`db"),
    ("USE`spaced name`;", "spaced name"),
    ('USE "ansi"', "ansi"),
    ("/* first */ USE /* between */ shop /* after */;", "shop"),
    ("-- a line comment\nUSE shop", "shop"),
    ("# a hash comment\nUSE shop -- trailing\n", "shop"),
    ("USE/**/shop", "shop"),
    ("/*!40101 USE shop */", "shop"),
    ("/*M!100100 USE shop*/;", "shop"),
    ("USE båse_$1", "båse_$1"),
    ("USE shop;;", "shop"),
    ("USEFUL", None),
    ("USE", None),
    ("USE;", None),
    ("USE shop extra", None),
    ("USE shop.tbl", None),
    ("SELECT 'USE shop'", None),
    ("SELECT * FROM t USE INDEX (i)", None),
    ("/* USE shop */ SELECT 1", None),
    ("-- USE shop", None),
    ("--USE shop", None),
    ("USE shop; SELECT 1", None),
    ("SELECT 1; USE shop", None),
    ("", None),
])
def test_use_statement_database(sql: str, database: str | None) -> None:
    assert use_statement_database(sql) == database


@pytest.mark.parametrize(("sql", "databases"), [
    ("SELECT 1", ()),
    ("USE a", ("a",)),
    ("SELECT 1; USE secret", ("secret",)),
    ("USE a; USE `b`; use c;", ("a", "b", "c")),
    ("USE a; USE a", ("a",)),
    ("SELECT 'x; USE no'; SELECT `y; USE no`; /* ; USE no */ SELECT 1", ()),
    # Either sql_mode may hold: with NO_BACKSLASH_ESCAPES the string ends at \' and USE runs.
    ("SELECT 'a\\'; USE x; -- '", ("x",)),
    # With backslash escapes the first string ends at the second quote and USE runs.
    ("SELECT '\\''; USE y", ("y",)),
    ('SELECT "a\\"; USE z; -- "', ("z",)),
    ("SELECT 1 /*!; USE hidden */", ("hidden",)),
    ("SELECT 1 # comment ; USE no\n; USE yes", ("yes",)),
])
def test_use_statement_databases_in_multi_statements(
    sql: str, databases: tuple[str, ...],
) -> None:
    assert use_statement_databases(sql) == databases


# -- properties -------------------------------------------------------------------------------


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """A valid payload cut, with a byte changed, or with bytes inserted: deep malformed input."""
    size = len(valid)
    cut = st.integers(0, size).map(lambda n: valid[:n])
    flipped = st.tuples(st.integers(0, size - 1), st.integers(0, 255)).map(
        lambda t: valid[: t[0]] + bytes((t[1],)) + valid[t[0] + 1 :])
    inserted = st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=8)).map(
        lambda t: valid[: t[0]] + t[1] + valid[t[0] :])
    return st.one_of(st.binary(max_size=300), cut, flipped, inserted)


DECODERS = {
    "handshake": (decode_handshake, MARIADB_GREETING[4:]),
    "client_hello": (decode_client_hello, MARIADB_CLIENT_RESPONSE[4:]),
    "pymysql_hello": (decode_client_hello, PYMYSQL_RESPONSE[4:]),
    "err": (decode_err, MARIADB_ACCESS_DENIED[4:]),
    "auth_switch": (decode_auth_switch, MARIADB_AUTH_SWITCH[4:]),
    "command": (decode_command, b"\x17\x07\x00\x00\x00\x00\x01\x00\x00\x00"),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoders_return_or_raise_bad_parameter_on_any_bytes(name: str) -> None:
    decoder, valid = DECODERS[name]

    @PROPERTY
    @given(_mutations(valid))
    def check(payload: bytes) -> None:
        with contextlib.suppress(BadParameter):
            decoder(payload)

    check()


@PROPERTY
@given(st.binary(max_size=64), st.integers(0, 70))
def test_read_lenenc_int_returns_or_raises_bad_parameter(buf: bytes, pos: int) -> None:
    try:
        value, end = read_lenenc_int(buf, pos)
    except BadParameter:
        return
    assert pos < end <= len(buf)
    assert value is None or value >= 0


@PROPERTY
@given(st.integers(0, 2**64 - 1))
def test_lenenc_ints_round_trip(value: int) -> None:
    encoded = lenenc_int(value)
    assert read_lenenc_int(encoded, 0) == (value, len(encoded))


@PROPERTY
@given(st.binary(max_size=600), st.integers(0, 300))
def test_the_splitter_returns_or_raises_bad_parameter_on_any_bytes(data: bytes, limit: int) -> None:
    splitter = PacketSplitter(max_payload=limit)
    try:
        packets = splitter.feed(data)
    except BadParameter:
        return
    assert sum(4 + len(p.payload) for p in packets) + splitter.pending == len(data)


@PROPERTY
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=6),
       st.binary(max_size=3), st.lists(st.integers(0, 2000), max_size=12))
def test_arbitrary_split_points_give_the_same_packets(
    packets: list[tuple[int, bytes]], tail: bytes, cuts: list[int],
) -> None:
    stream = b"".join(encode_packet(seq, payload) for seq, payload in packets) + tail
    whole = PacketSplitter()
    expected = whole.feed(stream)
    assert expected == [Packet(seq, payload) for seq, payload in packets]
    pieces = PacketSplitter()
    got: list[Packet] = []
    start = 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        got += pieces.feed(stream[start:cut])
        start = max(start, cut)
    assert got == expected
    assert pieces.pending == whole.pending == len(tail)


names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@PROPERTY
@given(
    st.integers(0, 0xFFFFFFFF), st.integers(0, 255), names, st.binary(max_size=300),
    st.one_of(st.none(), names), st.one_of(st.none(), names),
    st.dictionaries(names, names, max_size=4), st.booleans(), st.integers(0, 0xFFFFFFFF),
)
def test_handshake_responses_round_trip_for_any_fields(
    max_packet: int, charset: int, username: str, auth: bytes, database: str | None,
    plugin: str | None, attributes: dict[str, str], mariadb: bool, mariadb_caps: int,
) -> None:
    caps = P41 | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_CONNECT_ATTRS
    caps |= CLIENT_CONNECT_WITH_DB if database is not None else 0
    caps |= CLIENT_PLUGIN_AUTH if plugin is not None else 0
    caps |= 0 if mariadb else CLIENT_LONG_PASSWORD
    response = HandshakeResponse(caps, max_packet, charset, username, auth, database, plugin,
                                 attributes, mariadb_caps if mariadb else 0)
    assert decode_client_hello(encode_handshake_response(response)) == response


@PROPERTY
@given(st.text(max_size=200))
def test_use_detection_never_fails_on_any_text(sql: str) -> None:
    single = use_statement_database(sql)
    several = use_statement_databases(sql)
    assert single is None or single in several


@PROPERTY
@given(st.text(min_size=1, max_size=20), st.sampled_from(["", ";", " ; -- end"]))
def test_any_backtick_quoted_name_is_recovered(name: str, end: str) -> None:
    sql = "USE `" + name.replace("`", "``") + "`" + end
    assert use_statement_database(sql) == name
    assert use_statement_databases(sql) == (name,)


def test_the_public_names_are_all_exported() -> None:
    assert all(hasattr(mysql, name) for name in mysql.__all__)
    assert "use_statement_database" in mysql.__all__
