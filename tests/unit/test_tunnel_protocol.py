"""The tunnel's wire formats: control frames round-trip, the decoder is incremental and bounded,
random bytes never crash it (only BadParameter), and the data preamble is exact."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.errors import BadParameter
from limen.tunnel.protocol import (
    MAX_FRAME,
    Connect,
    ConnectFailed,
    ConnectOk,
    Decoder,
    Dial,
    DialFailed,
    DialRequest,
    Heartbeat,
    Hello,
    Message,
    Welcome,
    decode_message,
    encode,
    format_preamble,
    new_nonce,
    parse_preamble,
)

NONCE = "0123456789abcdef0123456789abcdef"
MESSAGES: list[Message] = [
    Hello(cert="ssh-ed25519-cert-v01@openssh.com AAAA"),
    Welcome(cert="c", proxy_id="p1", cluster="root", heartbeat_interval=10.0),
    Heartbeat(resource={"kind": "Resource", "metadata": {"name": "web1", "labels": {"a": "b"}}}),
    Dial(DialRequest(kind="node", target="web1:22", mode="raw", client_addr="1.2.3.4:5",
                     user="alice", session_id="s", nonce=NONCE)),
    DialFailed(nonce=NONCE, reason="no"),
    Connect(id=7, kind="auth"),
    ConnectOk(id=7, nonce=NONCE),
    ConnectFailed(id=7, reason="down"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.type)
def test_round_trip(message: Message) -> None:
    frame = encode(message)
    assert Decoder().feed(frame) == [message]


def test_decoder_is_incremental_across_arbitrary_splits() -> None:
    stream = b"".join(encode(m) for m in MESSAGES)
    for step in (1, 3, 7, 64):
        decoder = Decoder()
        out = []
        for i in range(0, len(stream), step):
            out.extend(decoder.feed(stream[i:i + step]))
        assert out == MESSAGES


def test_oversized_frame_is_refused_before_buffering_it() -> None:
    decoder = Decoder()
    with pytest.raises(BadParameter, match="exceeds"):
        decoder.feed(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(BadParameter, match="already failed"):
        decoder.feed(encode(MESSAGES[0]))


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"type": 1}', b'{"type": "nope"}', b'{"type": "hello"}',
    b'{"type": "hello", "cert": 1, "version": 1}',
    b'{"type": "connect", "id": -1, "kind": "auth"}',
    b'{"type": "connect", "id": true, "kind": "auth"}',
    b'{"type": "connect_ok", "id": 1, "nonce": "short"}',
    b'{"type": "dial", "request": {"kind": "node", "mode": "weird", "nonce": "' + NONCE.encode()
    + b'"}}',
    b'{"type": "welcome", "cert": "c", "proxy_id": "p", "cluster": "c", '
    b'"heartbeat_interval": 0}',
    b'{"type": "heartbeat", "resource": []}',
    b"\xff\xfe",
    b"[" * 100_000,
])
def test_malformed_bodies_raise_bad_parameter(body: bytes) -> None:
    with pytest.raises(BadParameter):
        decode_message(body)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(BadParameter):
        Decoder().feed(data)


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20),
    st.sampled_from(["hello", "welcome", "heartbeat", "dial", "dial_failed", "connect",
                     "connect_ok", "connect_failed"]))
def test_random_json_of_every_type_decodes_or_raises_bad_parameter(value: object,
                                                                   kind: str) -> None:
    body = {"type": kind, "cert": value, "resource": value, "request": value, "id": value,
            "nonce": value, "reason": value, "kind": value, "version": value}
    with contextlib.suppress(BadParameter):
        decode_message(json.dumps(body).encode())


def test_preamble_round_trip_and_strictness() -> None:
    nonce = new_nonce()
    assert len(nonce) == 32
    assert nonce != new_nonce()
    assert parse_preamble(format_preamble(nonce)) == nonce
    for bad in (b"LIMEN-DATA " + NONCE.upper().encode() + b"\n",
                b"LIMEN-DATA " + NONCE.encode(), b"LIMEN-DATA " + NONCE.encode() + b"\r\n",
                b"LIMEN-DATA  " + NONCE[1:].encode() + b"\n", b"SSH-2.0-x\n"):
        with pytest.raises(BadParameter):
            parse_preamble(bad)
    with pytest.raises(BadParameter):
        format_preamble("zz")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_preambles_never_crash(data: bytes) -> None:
    with contextlib.suppress(BadParameter):
        parse_preamble(data)
