"""limen.net.asyncssh_recv in a real asyncssh client and server on 127.0.0.1.

Both ends use Limen's algorithm sets (importing them installs the adaptation) and rekey every
MiB. Each side's connection is handed what its socket reads cut into chunks of given sizes
(1 byte, 7 bytes, 64 KiB, a mix), so key exchange, authentication, rekeying and channel data
all cross packet boundaries at odd places. Several MiB go each way, checked by SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import asyncssh
import pytest

from limen.net import asyncssh_recv
from limen.net.sshalgs import client_algorithms, server_algorithms

MIB = 1 << 20
CHUNKINGS = {"1": [1], "7": [7], "64KiB": [65536], "mixed": [1, 7, 4096, 65536, 3, 33000]}


def chunked(conn: Any, sizes: Sequence[int]) -> Callable[[bytes], None]:
    """What the transport calls instead of ``conn.data_received``: the data in ``sizes``."""
    receive = type(conn).data_received
    turn = 0

    def data_received(data: bytes, datatype: Any = None) -> None:
        nonlocal turn
        at = 0
        while at < len(data):
            size = sizes[turn % len(sizes)]
            receive(conn, data[at:at + size])
            at, turn = at + size, turn + 1

    return data_received


class Sink(asyncssh.SSHServerSession[bytes]):
    """Hashes what the client sends, then sends back ``reply`` bytes and their hash."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.digest = hashlib.sha256()
        self.chan: Any = None

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def shell_requested(self) -> bool:
        return True

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.digest.update(data)

    def eof_received(self) -> bool:
        self.chan.write(self.digest.digest())
        self.chan.write(self.reply)
        self.chan.exit(0)
        return False


class Server(asyncssh.SSHServer):
    def __init__(self, sizes: Sequence[int], reply: bytes) -> None:
        self.sizes, self.reply = sizes, reply

    def connection_made(self, conn: Any) -> None:
        conn.data_received = chunked(conn, self.sizes)

    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> Sink:
        return Sink(self.reply)


class Client(asyncssh.SSHClient):
    def __init__(self, sizes: Sequence[int]) -> None:
        self.sizes = sizes

    def connection_made(self, conn: Any) -> None:
        conn.data_received = chunked(conn, self.sizes)


async def transfer(sizes: Sequence[int], size: int) -> tuple[bytes, bytes, bytes, bytes]:
    """Send ``size`` bytes up and down; the hashes each side computed and expected."""
    rng = random.Random(size)
    upload, reply = rng.randbytes(size), rng.randbytes(size)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[host_key], rekey_bytes=MIB, encoding=None,
        server_factory=lambda: Server(sizes, reply), **server_algorithms())
    try:
        port = server.sockets[0].getsockname()[1]
        async with asyncssh.connect(
                "127.0.0.1", port, known_hosts=None, username="u", client_keys=None,
                agent_path=None, config=None, rekey_bytes=MIB,
                client_factory=lambda: Client(sizes), **client_algorithms()) as conn:
            received = bytearray()
            done = asyncio.get_running_loop().create_future()

            class Reader(asyncssh.SSHClientSession[bytes]):
                def data_received(self, data: bytes, datatype: Any) -> None:
                    received.extend(data)

                def connection_lost(self, exc: Exception | None) -> None:
                    if not done.done():
                        done.set_result(None)

            chan, _ = await conn.create_session(Reader, encoding=None)
            for at in range(0, size, 256 * 1024):
                chan.write(upload[at:at + 256 * 1024])
            chan.write_eof()
            await asyncio.wait_for(done, 60)
    finally:
        server.close()
        await server.wait_closed()
    return (bytes(received[:32]), hashlib.sha256(upload).digest(),
            hashlib.sha256(bytes(received[32:])).digest(), hashlib.sha256(reply).digest())


@pytest.mark.parametrize(("chunking", "size"), [
    ("1", MIB // 4), ("7", 2 * MIB), ("64KiB", 8 * MIB), ("mixed", 8 * MIB)])
def test_large_transfers_through_a_real_pair(chunking: str, size: int,
                                             caplog: pytest.LogCaptureFixture) -> None:
    assert asyncssh_recv.installed()
    with caplog.at_level(logging.DEBUG, logger="asyncssh"):
        server_saw, sent, client_saw, replied = asyncio.run(transfer(CHUNKINGS[chunking], size))
    assert server_saw == sent
    assert client_saw == replied
    rekeys = caplog.text.count("Completed key exchange")
    assert rekeys >= 2 * (1 + size // (2 * MIB))  # both ends, the first exchange and rekeys
