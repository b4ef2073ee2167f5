"""limen.net.asyncssh_recv against asyncssh's own receive path, on the same bytes.

Each test builds an SSH byte stream (tests/unit/asyncssh_recv_harness.py), feeds it in chunks
of given sizes to asyncssh's real client connection once with asyncssh's receive path and once
with Limen's, and asserts the same outcome: the packets processed (type, sequence number,
payload), the packets sent back (MSG_UNIMPLEMENTED, MSG_DISCONNECT), the error that closed the
connection, and the bytes left unread. Corrupted packets (a flipped MAC byte, a length past
the limit, a length shorter than its header) end the connection as asyncssh ends it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from asyncssh.connection import SSHConnection
from asyncssh_recv_harness import (
    MSG_GLOBAL_REQUEST,
    Keys,
    StreamBuilder,
    compare,
    new_connection,
    random_payloads,
    receive_path,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from limen.net import asyncssh_recv

KEYS = {
    "aes128-gcm": Keys(b"aes128-gcm@openssh.com"),
    "chacha20-poly1305": Keys(b"chacha20-poly1305@openssh.com"),
    "aes128-ctr+hmac-sha2-256-etm": Keys(b"aes128-ctr", b"hmac-sha2-256-etm@openssh.com"),
    "aes128-ctr+hmac-sha2-256": Keys(b"aes128-ctr", b"hmac-sha2-256"),
}
CHUNKINGS = {"1": [1], "7": [7], "64KiB": [65536], "mixed": [1, 7, 4096, 65536, 3, 33000]}


def encrypted_stream(keys: Keys, count: int = 24, seed: int = 1) -> tuple[StreamBuilder, bytes]:
    builder = StreamBuilder(keys)
    packets = [builder.packet(p) for p in random_payloads(count, seed)]
    # a global request without a reply, and a packet type asyncssh does not know
    packets.append(builder.packet(bytes([MSG_GLOBAL_REQUEST]) + b"\0\0\0\x04test\0"))
    packets.append(builder.packet(bytes([200]) + b"unknown"))
    return builder, b"".join(packets)


@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
@pytest.mark.parametrize("cipher", sorted(KEYS))
def test_encrypted_packets_are_the_same_in_any_chunking(cipher: str, chunking: str) -> None:
    _, stream = encrypted_stream(KEYS[cipher])
    outcome = compare(KEYS[cipher], stream, CHUNKINGS[chunking])
    assert len(outcome.received) == 26
    assert outcome.closed == []
    assert outcome.unread == b""
    assert [pkttype for pkttype, _ in outcome.sent] == [3]  # MSG_UNIMPLEMENTED for type 200


@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
def test_version_line_then_plain_packets(chunking: str) -> None:
    builder = StreamBuilder(None)
    stream = (b"a banner line\r\nanother\nSSH-2.0-OpenSSH_9.2\r\n"
              + b"".join(builder.packet(p) for p in random_payloads(12, 2)))
    outcome = compare(None, stream, CHUNKINGS[chunking])
    assert len(outcome.received) == 12
    assert outcome.closed == []


@pytest.mark.parametrize("stream", [
    b"x" * 9000,
    b"SSH-1.5-old\r\n" + b"y" * 100,
    b"SSH-2.0-" + b"v" * 300 + b"\r\n" + b"\0\0\0\x0c\x0a\x02" + bytes(10),
], ids=["banner-too-long", "unsupported-version", "version-too-long"])
def test_bad_version_lines_end_the_same(stream: bytes) -> None:
    outcome = compare(None, stream, [1, 7, 65536])
    assert outcome.closed


@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
@pytest.mark.parametrize("cipher", sorted(KEYS))
def test_corrupted_mac_ends_the_connection_the_same(cipher: str, chunking: str) -> None:
    keys = KEYS[cipher]
    builder = StreamBuilder(keys)
    good = [builder.packet(p) for p in random_payloads(6, 3)]
    bad = builder.packet(bytes([2]) + bytes(4) + b"", flip=-1)
    after = builder.packet(bytes([2, 0, 0, 0, 0]))
    outcome = compare(keys, b"".join([*good, bad, after]), CHUNKINGS[chunking])
    assert len(outcome.received) == 6
    assert outcome.closed
    assert outcome.closed[0] == ("MACError", "MAC verification failed")
    assert outcome.sent
    assert outcome.sent[0][0] == 1


@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
def test_length_past_the_limit_ends_the_connection_the_same(chunking: str) -> None:
    keys = KEYS["aes128-gcm"]  # its length field is in the clear
    builder = StreamBuilder(keys)
    good = [builder.packet(p) for p in random_payloads(4, 4)]
    huge = builder.packet(bytes([2, 0, 0, 0, 0]), length=0x7FFFFFF0)
    outcome = compare(keys, b"".join([*good, huge, bytes(5000)]), CHUNKINGS[chunking])
    assert len(outcome.received) == 4
    assert outcome.closed[0] == ("ProtocolError", "Max packet size exceeded")


@pytest.mark.parametrize("length", [0, 1, 3])
def test_length_shorter_than_its_header_reads_as_asyncssh_reads_it(length: int) -> None:
    """A plain packet whose length field is below 4: asyncssh slices with negative indices
    there, so what it reads depends on everything buffered; the adaptation hands it all."""
    builder = StreamBuilder(None)
    stream = b"SSH-2.0-x\r\n" + builder.packet(bytes([2, 0, 0, 0, 0])) + \
        builder.packet(bytes([2, 0, 0, 0, 0]), length=length) + bytes(64)
    for chunks in ([1], [7], [65536]):
        compare(None, stream, chunks)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.integers(min_value=1, max_value=70000), min_size=1, max_size=8),
       cipher=st.sampled_from(sorted(KEYS)), seed=st.integers(0, 3))
def test_any_chunking_gives_asyncssh_s_packets(chunks: list[int], cipher: str,
                                               seed: int) -> None:
    _, stream = encrypted_stream(KEYS[cipher], count=10, seed=seed)
    assert len(compare(KEYS[cipher], stream, chunks).received) == 12


def test_bytes_arriving_during_an_asynchronous_packet_are_parsed_after_it() -> None:
    """asyncssh processes some packets in a task and buffers meanwhile; when the task ends it
    resumes on the buffered bytes, which the adaptation holds in its backlog."""
    keys = KEYS["aes128-gcm"]
    builder = StreamBuilder(keys)
    first, *rest = [builder.packet(p) for p in random_payloads(5, 5)]

    async def scenario() -> list[int]:
        conn: Any = new_connection(asyncio.get_running_loop(), keys)
        gate, all_seen = asyncio.Event(), asyncio.Event()
        seen: list[int] = []
        process = conn.process_packet

        def process_packet(pkttype: int, seq: int, packet: Any) -> Any:
            seen.append(seq)
            if len(seen) == 5:
                all_seen.set()
            if seq == 0:
                async def later() -> bool:
                    await gate.wait()
                    return bool(process(pkttype, seq, packet))
                return later()
            return process(pkttype, seq, packet)

        conn.process_packet = process_packet
        conn.data_received(first + rest[0][:10])
        conn.data_received(rest[0][10:] + b"".join(rest[1:]))
        assert seen == [0]
        gate.set()
        await asyncio.wait_for(all_seen.wait(), 5)
        conn.abort()
        await asyncio.sleep(0)
        return seen

    for limen in (False, True):
        with receive_path(limen=limen):
            assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_other_asyncssh_versions_are_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    with receive_path(limen=False):
        with caplog.at_level(logging.WARNING, logger="limen.net.asyncssh_recv"):
            assert asyncssh_recv.install(version="2.25.0") is False
        assert not asyncssh_recv.installed()
        assert SSHConnection.__dict__["data_received"].__module__ == "asyncssh.connection"
        assert "asyncssh 2.25.0: not installing" in caplog.text


def test_limen_s_ssh_modules_install_it() -> None:
    import limen.net.sshalgs  # noqa: F401 - every Limen SSH endpoint imports it

    assert asyncssh_recv.installed()
    assert SSHConnection.__dict__["data_received"].__module__ == "limen.net.asyncssh_recv"


def test_closing_drops_the_backlog_with_asyncssh_s_buffer() -> None:
    """A packet failing its MAC closes the connection; the bytes behind it (in asyncssh's
    buffer and in the adaptation's backlog) are dropped when asyncssh cleans up."""
    keys = KEYS["aes128-gcm"]
    builder = StreamBuilder(keys)
    stream = builder.packet(bytes([2, 0, 0, 0, 0]), flip=-1) + bytes(100_000)

    async def scenario() -> Any:
        conn: Any = new_connection(asyncio.get_running_loop(), keys)
        conn.data_received(stream)
        assert len(conn._limen_rx) - conn._limen_rx_off >= 100_000
        await conn.wait_closed()
        return conn

    with receive_path(limen=True):
        conn = asyncio.run(scenario())
    assert conn._transport is None
    assert conn._inpbuf == b""
    assert len(conn._limen_rx) == conn._limen_rx_off
