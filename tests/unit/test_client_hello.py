"""limen.proxy.client_hello: the server name and ALPN of real ClientHellos (made by OpenSSL
through a memory BIO), split anywhere and across records, and bytes that are not one."""

from __future__ import annotations

import ssl

import pytest

from limen.proxy.client_hello import MAX_HELLO, ClientHello, NotClientHello, parse


def _hello(server_name: str | None, alpn: list[str] | None = None) -> bytes:
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def test_the_server_name_and_alpn_are_read() -> None:
    data = _hello("Kube-Limen-Proxy.limen.local.", ["h2", "http/1.1"])
    assert parse(data) == ClientHello("kube-limen-proxy.limen.local", ("h2", "http/1.1"))


def test_none_asked_for() -> None:
    assert parse(_hello(None)) == ClientHello("", ())


def test_more_bytes_are_awaited_wherever_the_hello_is_cut() -> None:
    data = _hello("web.example", ["limen-kube"])
    for cut in range(len(data)):
        assert parse(data[:cut]) is None
    assert parse(data + b"trailing") == ClientHello("web.example", ("limen-kube",))


def test_a_hello_split_over_two_records() -> None:
    data = _hello("web.example", ["http/1.1"])
    header, body = data[:5], data[5:]
    first, second = body[:40], body[40:]
    split = (header[:3] + len(first).to_bytes(2, "big") + first
             + header[:3] + len(second).to_bytes(2, "big") + second)
    assert parse(split) == ClientHello("web.example", ("http/1.1",))


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plain HTTP on the TLS port
    b"\x16\x03\x01\x00\x00",  # an empty record
    b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",  # a ServerHello, not a ClientHello
    b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03",  # a body shorter than its fields
], ids=["http", "empty-record", "server-hello", "truncated-body"])
def test_what_is_not_a_client_hello_is_refused(data: bytes) -> None:
    with pytest.raises(NotClientHello):
        parse(data)


def test_a_hello_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(NotClientHello):
        parse(b"\x16\x03\x01\x40\x00" + b"\x01" * MAX_HELLO)
