"""The proxy set on the tunnel's wire: ``welcome`` and ``proxies`` carry the proxies, ``hello``
the proxies an agent already holds; they round-trip, older frames without them still decode,
and malformed or oversized lists raise BadParameter only (fuzzed)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.errors import BadParameter
from limen.tunnel.protocol import (
    MAX_PROXIES,
    Decoder,
    Hello,
    Message,
    Proxies,
    ProxyEntry,
    Welcome,
    decode_message,
    encode,
)

SET = (ProxyEntry("proxy-a", "10.0.0.1:3024"), ProxyEntry("proxy-b", "[fd00::2]:3024"))


@pytest.mark.parametrize("message", [
    Welcome(cert="c", proxy_id="proxy-a", cluster="root", proxies=SET),
    Proxies(proxies=SET),
    Proxies(),
    Hello(cert="c", held=("proxy-a", "proxy-b")),
], ids=lambda m: m.type)
def test_round_trip(message: Message) -> None:
    assert Decoder().feed(encode(message)) == [message]


def test_frames_of_older_peers_decode_with_empty_sets() -> None:
    welcome = decode_message(json.dumps({
        "type": "welcome", "cert": "c", "proxy_id": "p", "cluster": "root",
        "heartbeat_interval": 10}).encode())
    assert isinstance(welcome, Welcome)
    assert welcome.proxies == ()
    hello = decode_message(b'{"type": "hello", "cert": "c", "version": 1}')
    assert isinstance(hello, Hello)
    assert hello.held == ()


@pytest.mark.parametrize("body", [
    {"type": "proxies", "proxies": {}},
    {"type": "proxies", "proxies": ["proxy-a"]},
    {"type": "proxies", "proxies": [{"host_id": "a"}]},
    {"type": "proxies", "proxies": [{"host_id": 1, "address": "a:1"}]},
    {"type": "proxies", "proxies": [{"host_id": "a", "address": "x" * 301}]},
    {"type": "proxies", "proxies": [{"host_id": "a", "address": "a:1"}] * (MAX_PROXIES + 1)},
    {"type": "welcome", "cert": "c", "proxy_id": "p", "cluster": "c", "heartbeat_interval": 1,
     "proxies": "a:1"},
    {"type": "hello", "cert": "c", "version": 1, "held": "proxy-a"},
    {"type": "hello", "cert": "c", "version": 1, "held": [1]},
    {"type": "hello", "cert": "c", "version": 1, "held": ["p"] * (MAX_PROXIES + 1)},
])
def test_malformed_sets_raise_bad_parameter(body: dict[str, object]) -> None:
    with pytest.raises(BadParameter):
        decode_message(json.dumps(body).encode())


def test_the_largest_set_fits_in_one_frame() -> None:
    entries = tuple(ProxyEntry("p" * 300, "h" * 294 + ":65535") for _ in range(MAX_PROXIES))
    assert Decoder().feed(encode(Proxies(entries))) == [Proxies(entries)]


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20),
    st.sampled_from(["hello", "welcome", "proxies"]))
def test_random_sets_decode_or_raise_bad_parameter(value: object, kind: str) -> None:
    body = {"type": kind, "cert": "c", "version": 1, "proxy_id": "p", "cluster": "c",
            "heartbeat_interval": 5, "proxies": value, "held": value}
    with contextlib.suppress(BadParameter):
        decode_message(json.dumps(body).encode())
    entry = {"type": "proxies", "proxies": [value, {"host_id": value, "address": value}]}
    with contextlib.suppress(BadParameter):
        decode_message(json.dumps(entry).encode())
