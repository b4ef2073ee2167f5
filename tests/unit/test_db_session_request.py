"""The proxy-to-db-agent session request frame (``limen.dbproto.session_request``): what the
proxy encodes decodes to the same request, and anything malformed is a BadParameter."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.dbproto.session_request import (
    MAX_REQUEST,
    SessionRequest,
    decode_request,
    encode_request,
    request_length,
)
from limen.errors import BadParameter

REQUEST = SessionRequest(
    op="connect", protocol="postgres", service="pg-main", user_cert="-----BEGIN CERT...",
    db_user="alice", db_name="app", session_id="s-1", client_addr="127.0.0.1:5000",
    params={"application_name": "psql", "client_encoding": "UTF8"})


def test_a_request_round_trips() -> None:
    frame = encode_request(REQUEST)
    assert request_length(frame[:4]) == len(frame) - 4
    assert decode_request(frame[4:]) == REQUEST


def test_a_cancel_request_round_trips() -> None:
    cancel = SessionRequest(op="cancel", protocol="postgres", service="pg-main", user_cert="c",
                            cancel_pid=42, cancel_secret=2**32 - 1)
    assert decode_request(encode_request(cancel)[4:]) == cancel


@pytest.mark.parametrize("doc", [
    {"op": "drop", "protocol": "postgres"},
    {"op": "connect", "protocol": "oracle"},
    {"op": "connect", "protocol": "postgres", "db_user": 7},
    {"op": "connect", "protocol": "postgres", "db_user": "a\x00b"},
    {"op": "connect", "protocol": "postgres", "params": {"a": 1}},
    {"op": "cancel", "protocol": "postgres", "cancel_pid": -1},
    {"op": "cancel", "protocol": "postgres", "cancel_secret": 2**32},
    {"op": "cancel", "protocol": "postgres", "cancel_pid": True},
    ["not", "an", "object"],
])
def test_malformed_requests_are_refused(doc: object) -> None:
    with pytest.raises(BadParameter):
        decode_request(json.dumps(doc).encode())


@pytest.mark.parametrize("size", [0, 1, MAX_REQUEST + 1, 2**32 - 1])
def test_an_announced_length_out_of_range_is_refused(size: int) -> None:
    with pytest.raises(BadParameter):
        request_length(struct.pack(">I", size))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_any_bytes_decode_or_raise_bad_parameter(data: bytes) -> None:
    with contextlib.suppress(BadParameter):
        decode_request(data)
