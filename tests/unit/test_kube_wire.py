"""The kube data connection's first frame (``limen.tunnel.kube_wire``): round trip, and any
malformed input refused with BadParameter (fuzzed)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from limen.errors import BadParameter
from limen.tunnel.kube_wire import (
    KubeConnect,
    connect_length,
    decode_connect,
    encode_connect,
)


def test_round_trip() -> None:
    request = KubeConnect("prod", "-----BEGIN CERTIFICATE-----\n", "10.0.0.7:1", "s1")
    frame = encode_connect(request)
    assert connect_length(frame[:4]) == len(frame) - 4
    assert decode_connect(frame[4:]) == request


@pytest.mark.parametrize("payload", [b"[]", b"{}", b'{"cluster":"a"}',
                                     b'{"cluster":1,"user_cert":"x"}', b"\xff"])
def test_malformed_requests_are_refused(payload: bytes) -> None:
    with pytest.raises(BadParameter):
        decode_connect(payload)


def test_lengths_are_bounded() -> None:
    for header in (b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00"):
        with pytest.raises(BadParameter):
            connect_length(header)
    with pytest.raises(BadParameter, match="too large"):
        encode_connect(KubeConnect("a", "x" * 70_000))


@given(st.binary(max_size=256))
def test_fuzz(payload: bytes) -> None:
    with contextlib.suppress(BadParameter):
        decode_connect(payload)
