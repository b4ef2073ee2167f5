"""A bench for asyncssh's receive path: one client connection fed a byte stream in given chunks.

Used by tests/unit/test_asyncssh_recv.py to compare :mod:`limen.net.asyncssh_recv` with
asyncssh's own receive path on the same bytes. The connection is asyncssh's real
``SSHClientConnection`` with a transport that records what it sends; a test sets the receive
keys directly (no key exchange), so the stream is deterministic and can be built here with the
wire format of RFC 4253 section 6, including packets that are corrupted on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncssh.connection import SSHClientConnection, SSHClientConnectionOptions
from asyncssh.encryption import get_encryption, get_encryption_params

from limen.net import asyncssh_recv

MSG_IGNORE, MSG_DEBUG, MSG_GLOBAL_REQUEST = 2, 4, 80
MSG_KEXINIT = 20


@contextlib.contextmanager
def receive_path(limen: bool) -> Iterator[None]:
    """asyncssh with Limen's receive path (``limen``) or with its own, restored afterwards."""
    was = asyncssh_recv.installed()
    if limen:
        assert asyncssh_recv.install()
    else:
        asyncssh_recv.uninstall()
    try:
        yield
    finally:
        if was:
            asyncssh_recv.install()
        else:
            asyncssh_recv.uninstall()


class RecordingTransport(asyncio.Transport):
    """Drops what the connection writes (its packets are recorded as they are sent);
    ``abort`` only marks it."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def write(self, data: Any) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


@dataclass
class Keys:
    """Fixed keys of one cipher (and MAC) for both the stream builder and the connection;
    ``etm`` (encrypt-then-MAC, AEAD included) comes from asyncssh's parameters."""

    cipher: bytes
    mac: bytes = b""
    etm: bool = field(init=False)
    key: bytes = field(init=False)
    iv: bytes = field(init=False)
    mac_key: bytes = field(init=False)

    def __post_init__(self) -> None:
        key_size, iv_size, _, mac_keysize, _, self.etm = get_encryption_params(self.cipher,
                                                                                self.mac)
        self.key = bytes(range(1, key_size + 1))
        self.iv = bytes(range(100, 100 + iv_size))
        self.mac_key = bytes(range(50, 50 + mac_keysize))

    def new(self) -> Any:
        return get_encryption(self.cipher, self.key, self.iv, self.mac, self.mac_key, self.etm)

    def sizes(self) -> tuple[int, int]:
        """(block size, MAC size) as asyncssh's key exchange sets them."""
        _, _, block, _, mac_size, _ = get_encryption_params(self.cipher, self.mac)
        return max(8, block), mac_size


class StreamBuilder:
    """SSH binary packets as asyncssh's ``send_packet`` frames them, with known padding."""

    def __init__(self, keys: Keys | None) -> None:
        self.keys = keys
        self.enc = keys.new() if keys else None
        self.block = keys.sizes()[0] if keys else 8
        self.hdrlen = 1 if keys and keys.etm else 5
        self.seq = 0

    def packet(self, payload: bytes, *, length: int | None = None, flip: int | None = None
               ) -> bytes:
        """One packet; ``length`` overrides the length field, ``flip`` corrupts that byte."""
        padlen = -(self.hdrlen + len(payload)) % self.block
        if padlen < 4:
            padlen += self.block
        body = bytes([padlen]) + payload + bytes(padlen)
        hdr = (len(body) if length is None else length).to_bytes(4, "big")
        if self.enc is not None:
            data, mac = self.enc.encrypt_packet(self.seq, hdr, body)
            wire = bytes(data + mac)
        else:
            wire = hdr + body
        self.seq += 1
        if flip is not None:
            wire = wire[:flip] + bytes([wire[flip] ^ 0x5A]) + wire[flip + 1:]
        return wire


@dataclass
class Outcome:
    """What a connection made of a stream: packets, packets it sent, how it ended."""

    received: list[tuple[int, int, bytes]]
    sent: list[tuple[int, bytes]]
    closed: list[tuple[str, str]]
    unread: bytes
    recv_seq: int


def new_connection(loop: asyncio.AbstractEventLoop, keys: Keys | None) -> Any:
    """A client connection with receive keys set (``keys``) or reading the version line."""
    options = SSHClientConnectionOptions(host="bench", known_hosts=None, config=None,
                                         client_keys=None, agent_path=None)
    conn: Any = SSHClientConnection(loop, options)
    conn._transport = RecordingTransport()
    if keys is not None:
        conn._recv_handler = conn._recv_pkthdr
        conn._recv_encryption = keys.new()
        conn._recv_blocksize, conn._recv_macsize = keys.sizes()
        conn._kex_complete = conn._auth_complete = True
    return conn


def run_stream(loop: asyncio.AbstractEventLoop, keys: Keys | None, stream: bytes,
               chunks: Sequence[int]) -> Outcome:
    """Feed ``stream`` cut into ``chunks`` (cycled) to a new connection, synchronously."""
    conn = new_connection(loop, keys)
    received: list[tuple[int, int, bytes]] = []
    sent: list[tuple[int, bytes]] = []
    closed: list[tuple[str, str]] = []

    def on_received(pkttype: int, seq: int, packet: Any, skip_reason: str = "") -> None:
        received.append((pkttype, seq, bytes(packet.get_full_payload())))

    def on_sent(pkttype: int, seq: int, payload: bytes, handler: Any = None) -> None:
        if pkttype != MSG_KEXINIT:  # a random cookie and a connection's own lists
            sent.append((pkttype, bytes(payload)))

    force_close = conn._force_close

    def on_close(exc: Exception | None) -> None:
        closed.append((type(exc).__name__, str(exc)))
        force_close(exc)

    conn.log_received_packet, conn.log_sent_packet = on_received, on_sent
    conn._force_close = on_close
    at, turn = 0, 0
    while at < len(stream):
        size = chunks[turn % len(chunks)]
        conn.data_received(stream[at:at + size])
        at, turn = at + size, turn + 1
    unread = bytes(conn._inpbuf)
    backlog = getattr(conn, "_limen_rx", b"")
    unread += backlog[getattr(conn, "_limen_rx_off", 0):]
    outcome = Outcome(list(received), list(sent), list(closed), unread, conn._recv_seq)
    conn.abort()
    return outcome


def compare(keys: Keys | None, stream: bytes, chunks: Sequence[int]) -> Outcome:
    """The outcome with Limen's receive path, asserted equal to asyncssh's own."""
    loop = asyncio.new_event_loop()
    try:
        with receive_path(limen=False):
            stock = run_stream(loop, keys, stream, chunks)
        with receive_path(limen=True):
            limen = run_stream(loop, keys, stream, chunks)
        loop.run_until_complete(asyncio.sleep(0))  # the closes asyncssh scheduled
    finally:
        loop.close()
    assert limen == stock
    return limen


def random_payloads(count: int, seed: int) -> list[bytes]:
    """IGNORE and DEBUG payloads of varied sizes (the DEBUG ones carry text)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        size = rng.choice((0, 1, 15, 16, 17, 255, 1000, 32768, rng.randrange(0, 35000)))
        if i % 5 == 4:
            msg = b"d" * min(size, 200)
            out.append(bytes([MSG_DEBUG, 0]) + len(msg).to_bytes(4, "big") + msg
                       + (0).to_bytes(4, "big"))
        else:
            out.append(bytes([MSG_IGNORE]) + size.to_bytes(4, "big") + rng.randbytes(size))
    return out


__all__ = ["MSG_GLOBAL_REQUEST", "Keys", "Outcome", "StreamBuilder", "compare",
           "new_connection", "random_payloads", "receive_path", "run_stream"]
