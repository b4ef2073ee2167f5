"""Tests of the PostgreSQL wire codec (``limen.dbproto.postgres``): startup packets as psql
sends them, typed messages both ways, the incremental splitter, every class of malformed
input (always BadParameter), and hypothesis properties (any bytes -> a result or
BadParameter; any split of a stream -> the same frames; startup params round trip).

The messages are built here by hand from the protocol documentation, not with the encoders
under test, so a wrong encoder and a matching wrong decoder cannot agree with each other.
"""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.dbproto import postgres as pg
from limen.errors import BadParameter

MODEST = settings(max_examples=200, deadline=None)


def i16(n: int) -> bytes:
    return struct.pack("!h", n)


def i32(n: int) -> bytes:
    return struct.pack("!i", n)


def u32(n: int) -> bytes:
    return struct.pack("!I", n)


def message(type_: bytes, payload: bytes) -> bytes:
    """A typed message: type byte, Int32 length counting itself, payload."""
    return type_ + u32(4 + len(payload)) + payload


def bind_payload(
    portal: bytes,
    statement: bytes,
    formats: list[int],
    params: list[bytes | None],
    results: list[int],
) -> bytes:
    out = portal + b"\0" + statement + b"\0" + i16(len(formats))
    out += b"".join(i16(f) for f in formats) + i16(len(params))
    for value in params:
        out += i32(-1) if value is None else i32(len(value)) + value
    return out + i16(len(results)) + b"".join(i16(f) for f in results)


def parse_payload(statement: bytes, query: bytes, types: list[int]) -> bytes:
    return statement + b"\0" + query + b"\0" + i16(len(types)) + b"".join(u32(t) for t in types)


# What psql 16 sends first on a fresh connection (`psql "host=db user=alice dbname=shop
# sslmode=prefer"`): an SSLRequest, then after TLS the StartupMessage below.
PSQL_SSL_REQUEST = bytes.fromhex("00000008 04d2162f")
PSQL_STARTUP_BODY = (
    b"user\0alice\0database\0shop\0application_name\0psql\0client_encoding\0UTF8\0\0"
)
PSQL_STARTUP = u32(8 + len(PSQL_STARTUP_BODY)) + bytes.fromhex("00030000") + PSQL_STARTUP_BODY
# What a server answers a failed password (fields S V C M F L R as PostgreSQL 16 sends them).
SERVER_AUTH_FAILED = (
    b'SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user "alice"\0'
    b"Fauth.c\0L326\0Rauth_failed\0\0"
)


# --- startup phase ------------------------------------------------------------------------


def test_psql_startup_message_decodes_with_params_in_order() -> None:
    packet = pg.decode_startup(PSQL_STARTUP)

    assert packet == pg.StartupMessage(
        version=pg.PROTOCOL_3,
        params={
            "user": "alice",
            "database": "shop",
            "application_name": "psql",
            "client_encoding": "UTF8",
        },
    )
    assert isinstance(packet, pg.StartupMessage)
    assert list(packet.params) == ["user", "database", "application_name", "client_encoding"]
    assert pg.startup_length(PSQL_STARTUP[:4]) == len(PSQL_STARTUP)


def test_encode_startup_produces_the_bytes_psql_sends() -> None:
    params = {
        "user": "alice",
        "database": "shop",
        "application_name": "psql",
        "client_encoding": "UTF8",
    }
    assert pg.encode_startup(params) == PSQL_STARTUP


def test_ssl_gssenc_and_cancel_requests_decode() -> None:
    assert pg.decode_startup(PSQL_SSL_REQUEST) == pg.SSLRequest()
    assert pg.encode_ssl_request() == PSQL_SSL_REQUEST
    assert pg.decode_startup(bytes.fromhex("00000008 04d21630")) == pg.GSSEncRequest()
    cancel = bytes.fromhex("00000010 04d2162e") + u32(4242) + u32(0xDEADBEEF)
    assert pg.decode_startup(cancel) == pg.CancelRequest(pid=4242, secret=0xDEADBEEF)
    assert pg.encode_cancel(4242, 0xDEADBEEF) == cancel


def test_protocol_minor_versions_of_3_are_accepted() -> None:
    packet = pg.decode_startup(pg.encode_startup({"user": "u"}, version=(3 << 16) | 2))
    assert isinstance(packet, pg.StartupMessage)
    assert packet.version == (3 << 16) | 2


def test_a_startup_with_no_params_is_just_the_terminator() -> None:
    raw = u32(9) + u32(pg.PROTOCOL_3) + b"\0"
    assert pg.encode_startup({}) == raw
    assert pg.decode_startup(raw) == pg.StartupMessage(version=pg.PROTOCOL_3, params={})


@pytest.mark.parametrize(
    "header",
    [u32(7), u32(0), u32(pg.MAX_STARTUP + 1), u32(0xFFFFFFFF), b"\0\0\0", b"\0\0\0\x08\0"],
)
def test_startup_length_rejects_bad_headers(header: bytes) -> None:
    with pytest.raises(BadParameter):
        pg.startup_length(header)


def test_startup_length_bounds_are_inclusive() -> None:
    assert pg.startup_length(u32(8)) == 8
    assert pg.startup_length(u32(pg.MAX_STARTUP)) == pg.MAX_STARTUP


def _startup(body: bytes, version: int = pg.PROTOCOL_3) -> bytes:
    return u32(8 + len(body)) + u32(version) + body


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (_startup(b"user\0a\0user\0b\0\0"), "duplicate key"),
        (_startup(b"user\0alice\0"), "missing terminator"),
        (_startup(b"user\0alice"), "value not NUL-terminated"),
        (_startup(b"user\0"), "key without a value"),
        (_startup(b""), "no terminator at all"),
        (_startup(b"user\0alice\0\0x"), "trailing bytes"),
        (_startup(b"user\0alice\0\0\0"), "trailing NUL"),
        (_startup(b"us\xffer\0alice\0\0"), "invalid UTF-8 key"),
        (_startup(b"user\0al\xc3\0\0"), "invalid UTF-8 value"),
        (_startup(b"user\0a\0\0", version=2 << 16), "protocol 2"),
        (_startup(b"user\0a\0\0", version=4 << 16), "protocol 4"),
        (u32(8) + u32((1234 << 16) | 5681), "unknown request code"),
        (u32(12) + u32(pg.SSL_REQUEST_CODE) + b"\0\0\0\0", "long SSLRequest"),
        (u32(12) + u32(pg.GSSENC_REQUEST_CODE) + b"\0\0\0\0", "long GSSENCRequest"),
        (u32(12) + u32(pg.CANCEL_REQUEST_CODE) + u32(1), "short CancelRequest"),
        (u32(20) + u32(pg.CANCEL_REQUEST_CODE) + u32(1) + u32(2) + u32(3), "long Cancel"),
        (PSQL_STARTUP[:-1], "shorter than its length field"),
        (PSQL_STARTUP + b"\0", "longer than its length field"),
        (b"\0\0\0", "shorter than a header"),
    ],
)
def test_decode_startup_rejects_malformed_packets(packet: bytes, why: str) -> None:
    with pytest.raises(BadParameter):
        pg.decode_startup(packet)


@pytest.mark.parametrize(
    "params",
    [
        {"": "x"},
        {"us\0er": "x"},
        {"user": "al\0ice"},
        {"user": "x" * pg.MAX_STARTUP},
        {"user\ud800": "x"},
    ],
)
def test_encode_startup_rejects_what_cannot_be_sent(params: dict[str, str]) -> None:
    with pytest.raises(BadParameter):
        pg.encode_startup(params)


@pytest.mark.parametrize(("pid", "secret"), [(-1, 0), (0, -1), (1 << 32, 0), (0, 1 << 32)])
def test_keys_outside_uint32_are_refused(pid: int, secret: int) -> None:
    with pytest.raises(BadParameter):
        pg.encode_cancel(pid, secret)
    with pytest.raises(BadParameter):
        pg.encode_backend_key_data(pid, secret)


# --- the splitter -------------------------------------------------------------------------


def test_splitter_keeps_only_the_asked_types() -> None:
    stream = (
        message(b"Q", b"select 1\0")
        + message(b"d", b"row data")
        + message(b"H", b"")
        + message(b"X", b"")
    )
    frames = pg.MessageSplitter(keep=[b"Q", b"X"]).feed(stream)

    assert frames == [
        pg.Frame(b"Q", 14, b"select 1\0"),
        pg.Frame(b"d", 13, None),
        pg.Frame(b"H", 5, None),
        pg.Frame(b"X", 5, b""),
    ]


def test_splitter_byte_by_byte_reports_pending_and_completes_once() -> None:
    raw = message(b"Q", b"select 42\0")
    splitter = pg.MessageSplitter(keep=[b"Q"])
    seen: list[pg.Frame] = []
    for k, byte in enumerate(raw[:-1]):
        seen += splitter.feed(bytes([byte]))
        # a partial header is held until it is whole, then only the payload so far
        assert splitter.pending == (k + 1 if k < 4 else k + 1 - 5)
    assert seen == []

    assert splitter.feed(raw[-1:]) == [pg.Frame(b"Q", len(raw), b"select 42\0")]
    assert splitter.pending == 0


def test_a_skipped_message_is_never_buffered_across_feeds() -> None:
    size = 8 << 20
    chunk = bytes(1 << 20)
    splitter = pg.MessageSplitter(keep=[b"Q"])

    assert splitter.feed(b"d" + u32(4 + size) + chunk) == []
    for _ in range(6):
        assert splitter.feed(chunk) == []
        assert splitter.pending == 0
    # the last megabyte finishes the row and a kept message follows in the same feed
    frames = splitter.feed(chunk + message(b"Q", b"x\0"))

    assert frames == [pg.Frame(b"d", 5 + size, None), pg.Frame(b"Q", 7, b"x\0")]
    assert splitter.pending == 0


def test_a_partial_header_is_pending_until_complete() -> None:
    splitter = pg.MessageSplitter()
    assert splitter.feed(b"d\0\0") == []
    assert splitter.pending == 3
    assert splitter.feed(b"\0\x06ab") == [pg.Frame(b"d", 7, None)]
    assert splitter.pending == 0


def test_an_empty_message_whose_header_is_cut_keeps_its_empty_payload() -> None:
    splitter = pg.MessageSplitter(keep=[b"X"])
    assert splitter.feed(b"X\0\0") == []
    assert splitter.feed(b"\0\x04H\0") == [pg.Frame(b"X", 5, b"")]
    assert splitter.feed(b"\0\0\x04") == [pg.Frame(b"H", 5, None)]


def test_skipped_frames_stay_right_past_the_bound_of_shared_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pg, "_FRAME_CACHE", 3)
    rows = [message(b"D", bytes(size)) for size in (1, 2, 3, 4, 5, 1, 2, 6, 1)]
    frames = pg.MessageSplitter().feed(b"".join(rows))
    assert frames == [pg.Frame(b"D", len(row), None) for row in rows]
    # the same lengths with another type are other frames
    assert pg.MessageSplitter().feed(message(b"d", b"x") + message(b"D", b"x")) == [
        pg.Frame(b"d", 6, None),
        pg.Frame(b"D", 6, None),
    ]


@pytest.mark.parametrize("length", [0, 3, 101])
def test_splitter_rejects_bad_lengths_and_stays_broken(length: int) -> None:
    splitter = pg.MessageSplitter(keep=[b"Q"], max_message=100)
    assert splitter.feed(message(b"Q", b"ok\0")) == [pg.Frame(b"Q", 8, b"ok\0")]
    with pytest.raises(BadParameter):
        splitter.feed(b"Q" + u32(length))
    with pytest.raises(BadParameter):
        splitter.feed(message(b"Q", b"ok\0"))


def test_splitter_accepts_a_message_of_exactly_max_message() -> None:
    splitter = pg.MessageSplitter(keep=[b"Q"], max_message=10)
    assert splitter.feed(message(b"Q", b"123456")) == [pg.Frame(b"Q", 11, b"123456")]


def test_splitter_refuses_keep_types_that_are_not_one_byte() -> None:
    with pytest.raises(BadParameter):
        pg.MessageSplitter(keep=[b"QQ"])


def test_encode_message_and_constant_messages() -> None:
    assert pg.encode_message(b"Q", b"x\0") == b"Q\0\0\0\x06x\0"
    assert pg.encode_query("select 1") == message(b"Q", b"select 1\0")
    assert pg.encode_terminate() == b"X\0\0\0\x04"
    assert pg.encode_authentication_ok() == b"R\0\0\0\x08\0\0\0\0"
    assert pg.encode_ready_for_query() == b"Z\0\0\0\x05I"
    assert pg.encode_ready_for_query(b"E") == b"Z\0\0\0\x05E"
    assert pg.encode_parameter_status("TimeZone", "UTC") == message(b"S", b"TimeZone\0UTC\0")
    with pytest.raises(BadParameter):
        pg.encode_message(b"QQ", b"")
    with pytest.raises(BadParameter):
        pg.encode_ready_for_query(b"X")
    with pytest.raises(BadParameter):
        pg.encode_query("select '\0'")
    with pytest.raises(BadParameter):
        pg.encode_parameter_status("", "x")
    with pytest.raises(BadParameter):
        pg.encode_parameter_status("a", "b\0")


# --- frontend messages --------------------------------------------------------------------


def test_decode_query_round_trips_utf8() -> None:
    sql = "select 'héllo ☃' from t"
    (frame,) = pg.MessageSplitter(keep=[b"Q"]).feed(pg.encode_query(sql))
    assert frame.payload is not None
    assert pg.decode_query(frame.payload) == sql


def test_decode_parse() -> None:
    payload = parse_payload(b"s1", b"select $1::int, $2", [23, 0xFFFFFFFF])
    assert pg.decode_parse(payload) == pg.Parse(
        statement="s1", query="select $1::int, $2", param_types=(23, 0xFFFFFFFF)
    )
    assert pg.decode_parse(parse_payload(b"", b"select 1", [])) == pg.Parse("", "select 1", ())


def test_decode_bind_with_nulls_and_per_param_formats() -> None:
    payload = bind_payload(b"p", b"s1", [0, 1, 0], [b"42", b"\x00\x01", None], [1])
    assert pg.decode_bind(payload) == pg.Bind(
        portal="p",
        statement="s1",
        param_formats=(0, 1, 0),
        params=(b"42", b"\x00\x01", None),
        result_formats=(1,),
    )


def test_bind_params_text_follows_the_format_code_rules() -> None:
    per_param = pg.decode_bind(
        bind_payload(b"", b"", [0, 1, 0], [b"h\xc3\xa9", b"\xde\xad", None], [])
    )
    assert pg.bind_params_text(per_param) == ["hé", "\\xdead", None]

    all_text = pg.decode_bind(bind_payload(b"", b"", [], [b"a", b"\xff"], []))
    assert pg.bind_params_text(all_text) == ["a", "\ufffd"]

    all_binary = pg.decode_bind(bind_payload(b"", b"", [1], [b"a", b""], []))
    assert pg.bind_params_text(all_binary) == ["\\x61", "\\x"]


def test_bind_params_text_refuses_a_format_count_that_does_not_match() -> None:
    bind = pg.Bind("", "", (0, 1), (b"a", b"b", b"c"), ())
    with pytest.raises(BadParameter):
        pg.bind_params_text(bind)


VALID_PARSE = parse_payload(b"s", b"select $1", [23])
VALID_BIND = bind_payload(b"p", b"s", [0, 1], [b"ab", None], [0, 1])
VALID_QUERY = b"select 1\0"


@pytest.mark.parametrize(
    ("decode", "payload"),
    [
        (pg.decode_query, VALID_QUERY),
        (pg.decode_parse, VALID_PARSE),
        (pg.decode_bind, VALID_BIND),
        (pg.decode_error_fields, SERVER_AUTH_FAILED),
    ],
)
def test_every_truncation_and_any_trailing_byte_is_refused(
    decode: Callable[[bytes], Any], payload: bytes
) -> None:
    decode(payload)  # the valid one decodes
    for cut in range(len(payload)):
        with pytest.raises(BadParameter):
            decode(payload[:cut])
    with pytest.raises(BadParameter):
        decode(payload + b"\0")
    with pytest.raises(BadParameter):
        decode(payload + b"x")


@pytest.mark.parametrize(
    ("decode", "payload", "why"),
    [
        (pg.decode_query, b"select \xff\0", "invalid UTF-8 query"),
        (pg.decode_query, b"select 1", "no NUL"),
        (pg.decode_parse, parse_payload(b"s\xff", b"q", []), "invalid UTF-8 name"),
        (pg.decode_parse, parse_payload(b"s", b"q\xc3", []), "invalid UTF-8 query"),
        (pg.decode_parse, b"s\0q\0" + i16(2) + u32(23), "fewer types than counted"),
        (pg.decode_bind, bind_payload(b"\xff", b"s", [], [], []), "invalid UTF-8 portal"),
        (pg.decode_bind, bind_payload(b"", b"", [0, 0], [b"a"], []), "2 formats, 1 param"),
        (pg.decode_bind, bind_payload(b"", b"", [2], [b"a"], []), "unknown format code"),
        (pg.decode_bind, bind_payload(b"", b"", [], [], [-1]), "negative result format"),
        (
            pg.decode_bind,
            b"\0\0" + i16(0) + i16(1) + i32(-2) + i16(0),
            "negative length other than -1",
        ),
        (pg.decode_bind, b"\0\0" + i16(0) + i16(1) + i32(10) + b"abc" + i16(0), "past end"),
        (pg.decode_bind, b"\0\0" + i16(0) + i16(2) + i32(-1) + i16(0), "fewer params"),
        (pg.decode_error_fields, b"", "empty"),
        (pg.decode_error_fields, b"Mno terminator", "value without NUL"),
        (pg.decode_authentication, b"\0\0\0", "short code"),
        (pg.decode_backend_key_data, b"\0" * 7, "short key data"),
        (pg.decode_backend_key_data, b"\0" * 9, "long key data"),
    ],
)
def test_decoders_refuse_malformed_payloads(
    decode: Callable[[bytes], Any], payload: bytes, why: str
) -> None:
    with pytest.raises(BadParameter):
        decode(payload)


@pytest.mark.parametrize("size", [-2, -6, -(2**31)])
def test_a_negative_parameter_length_other_than_null_is_named(size: int) -> None:
    with pytest.raises(BadParameter, match="invalid parameter length"):
        pg.decode_bind(b"\0\0" + i16(0) + i16(1) + i32(size) + i16(0))


# --- backend messages ---------------------------------------------------------------------


def test_decode_authentication() -> None:
    assert pg.decode_authentication(b"\0\0\0\0") == (pg.AUTH_OK, b"")
    sasl = u32(10) + b"SCRAM-SHA-256\0\0"
    assert pg.decode_authentication(sasl) == (10, b"SCRAM-SHA-256\0\0")
    assert pg.decode_authentication(u32(5) + b"salt") == (5, b"salt")


def test_backend_key_data_round_trips() -> None:
    raw = pg.encode_backend_key_data(7, 0xFFFFFFFF)
    assert raw == b"K\0\0\0\x0c" + u32(7) + u32(0xFFFFFFFF)
    (frame,) = pg.MessageSplitter(keep=[b"K"]).feed(raw)
    assert frame.payload is not None
    assert pg.decode_backend_key_data(frame.payload) == (7, 0xFFFFFFFF)


def test_decode_error_fields_of_a_real_server_error() -> None:
    fields = pg.decode_error_fields(SERVER_AUTH_FAILED)
    assert fields["S"] == "FATAL"
    assert fields["C"] == "28P01"
    assert fields["M"] == 'password authentication failed for user "alice"'
    assert fields["R"] == "auth_failed"
    assert pg.decode_error_fields(b"\0") == {}
    assert pg.decode_error_fields(b"Mbad \xff\0\0") == {"M": "bad \ufffd"}


def test_error_response_carries_s_v_c_m_and_no_nul_from_the_message() -> None:
    raw = pg.error_response("no\0way", code="42501", severity="ERROR")
    (frame,) = pg.MessageSplitter(keep=[b"E"]).feed(raw)
    assert frame.type == b"E"
    assert frame.length == len(raw)
    assert frame.payload is not None
    assert pg.decode_error_fields(frame.payload) == {
        "S": "ERROR",
        "V": "ERROR",
        "C": "42501",
        "M": "no\ufffdway",
    }
    default = pg.decode_error_fields(pg.error_response("denied")[5:])
    assert (default["S"], default["V"], default["C"]) == ("FATAL", "FATAL", "28000")
    with pytest.raises(BadParameter):
        pg.error_response("x", code="2800")
    with pytest.raises(BadParameter):
        pg.error_response("x", code="28\x0000")


def test_notice_response() -> None:
    raw = pg.notice_response("session recorded")
    assert raw[:1] == b"N"
    assert pg.decode_error_fields(raw[5:]) == {
        "S": "NOTICE",
        "V": "NOTICE",
        "C": "00000",
        "M": "session recorded",
    }


# --- properties ---------------------------------------------------------------------------

DECODERS: list[Callable[[bytes], Any]] = [
    pg.decode_startup,
    pg.decode_query,
    pg.decode_parse,
    pg.decode_bind,
    pg.decode_authentication,
    pg.decode_backend_key_data,
    pg.decode_error_fields,
]


@MODEST
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", PSQL_STARTUP[:8], b"\0\0"]))
def test_any_bytes_decode_or_raise_bad_parameter(data: bytes, prefix: bytes) -> None:
    raw = prefix + data
    if len(raw) >= 4:
        # make the startup length field agree sometimes so the body parsing is reached
        patched = u32(len(raw)) + raw[4:]
        for candidate in (raw, patched):
            with contextlib.suppress(BadParameter):
                pg.decode_startup(candidate)
    for decode in DECODERS:
        with contextlib.suppress(BadParameter):
            decode(raw)
    with contextlib.suppress(BadParameter):
        pg.startup_length(raw[:4])


@MODEST
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_any_bytes_fed_to_the_splitter_give_frames_or_bad_parameter(
    data: bytes, cuts: list[int]
) -> None:
    splitter = pg.MessageSplitter(keep=[b"Q", b"d"], max_message=64)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    try:
        for start, stop in itertools.pairwise(bounds):
            for frame in splitter.feed(data[start:stop]):
                assert len(frame.type) == 1
                assert 5 <= frame.length <= 65
    except BadParameter:
        pass


TYPES = [b"Q", b"P", b"B", b"d", b"D", b"X"]


@MODEST
@given(
    messages=st.lists(
        st.tuples(st.sampled_from(TYPES), st.binary(max_size=40)), min_size=0, max_size=12
    ),
    keep=st.sets(st.sampled_from(TYPES)),
    cuts=st.lists(st.integers(0, 600), max_size=12),
)
def test_any_split_of_a_stream_gives_the_same_frames(
    messages: list[tuple[bytes, bytes]], keep: set[bytes], cuts: list[int]
) -> None:
    stream = b"".join(pg.encode_message(t, p) for t, p in messages)
    expected = [pg.Frame(t, 5 + len(p), p if t in keep else None) for t, p in messages]

    assert pg.MessageSplitter(keep=keep).feed(stream) == expected

    splitter = pg.MessageSplitter(keep=keep)
    bounds = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    frames: list[pg.Frame] = []
    for start, stop in itertools.pairwise(bounds):
        frames += splitter.feed(stream[start:stop])
    assert frames == expected
    assert splitter.pending == 0


PARAM_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=20)


@MODEST
@given(
    params=st.dictionaries(PARAM_TEXT.filter(bool), PARAM_TEXT, max_size=8),
    minor=st.integers(0, 0xFFFF),
)
def test_startup_params_round_trip(params: dict[str, str], minor: int) -> None:
    raw = pg.encode_startup(params, version=(3 << 16) | minor)
    assert pg.startup_length(raw[:4]) == len(raw)
    packet = pg.decode_startup(raw)
    assert packet == pg.StartupMessage(version=(3 << 16) | minor, params=params)
    assert isinstance(packet, pg.StartupMessage)
    assert list(packet.params) == list(params)


def test_the_splitter_tells_when_it_stands_between_two_messages() -> None:
    splitter = pg.MessageSplitter(keep={b"Q"})
    assert splitter.at_boundary
    whole = pg.encode_query("select 1") + pg.encode_message(b"S", b"")
    for cut in range(1, len(whole)):
        splitter.feed(whole[:cut])
        assert not splitter.at_boundary or cut == len(pg.encode_query("select 1"))
        splitter.feed(whole[cut:])
        assert splitter.at_boundary
