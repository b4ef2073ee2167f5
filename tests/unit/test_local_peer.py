"""``limen.client.local_peer``: the owner of a loopback connection's client socket, from
``/proc/net/tcp{,6}`` — a real socket pair on 127.0.0.1 (and ::1) is ours; the same
connection listed with another uid, or not listed at all, is refused; the kernel's address
format, IPv4-mapped client sockets included.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from limen.client.local_peer import (
    PROC_TCP_TABLES,
    is_own_connection,
    kernel_address,
    socket_owner,
)

HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
          "timeout inode\n")
linux_only = pytest.mark.skipif(not PROC_TCP_TABLES[0].exists(), reason="needs /proc/net/tcp")


@contextmanager
def _pair(host: str) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, accepted) connected over ``host``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname()[:2]) as client:
            accepted, _ = listener.accept()
            with accepted:
                yield client, accepted


def _row(local: str, remote: str, uid: int) -> str:
    return f"   0: {local} {remote} 01 00000000:00000000 00:00000000 00000000 {uid:5d} 0 1 1\n"


def _table(tmp_path: Path, name: str, *rows: str) -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(rows))
    return path


@linux_only
def test_a_real_loopback_connection_is_our_own() -> None:
    with _pair("127.0.0.1") as (client, accepted):
        assert socket_owner(client.getsockname(), accepted.getsockname()) == os.getuid()
        assert is_own_connection(accepted)
        # the listener's end (local = the server address) is not what is looked up
        assert socket_owner(accepted.getsockname(), ("127.0.0.1", 1)) is None


@linux_only
def test_a_real_ipv6_loopback_connection_is_our_own() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this host")
    with _pair("::1") as (_client, accepted):
        assert is_own_connection(accepted)


def test_the_same_connection_owned_by_another_uid_is_refused(tmp_path: Path) -> None:
    with _pair("127.0.0.1") as (_client, accepted):
        here, peer = accepted.getsockname(), accepted.getpeername()
        other = _table(tmp_path, "tcp", _row(kernel_address(*peer), kernel_address(*here),
                                             os.getuid() + 1))
        assert socket_owner(peer, here, [other]) == os.getuid() + 1
        assert not is_own_connection(accepted, [other])
        ours = _table(tmp_path, "tcp-ours", _row(kernel_address(*peer), kernel_address(*here),
                                                 os.getuid()))
        assert is_own_connection(accepted, [ours])
        assert not is_own_connection(accepted, [ours], uid=os.getuid() + 1)


def test_an_unlisted_connection_or_no_proc_is_refused(tmp_path: Path) -> None:
    with _pair("127.0.0.1") as (_client, accepted):
        empty = _table(tmp_path, "tcp")
        assert not is_own_connection(accepted, [empty])
        assert not is_own_connection(accepted, [tmp_path / "missing"])
        garbled = _table(tmp_path, "bad", "not a row\n", "   0: x y 01 a b c d notanumber\n")
        assert not is_own_connection(accepted, [garbled])
    closed = socket.socket()
    closed.close()
    assert not is_own_connection(closed)


def test_an_ipv4_mapped_client_socket_in_tcp6_is_found(tmp_path: Path) -> None:
    table = _table(tmp_path, "tcp6", _row(kernel_address("::ffff:127.0.0.1", 40000),
                                          kernel_address("::ffff:127.0.0.1", 5433), 1234))
    assert socket_owner(("127.0.0.1", 40000), ("127.0.0.1", 5433), [table]) == 1234
    assert socket_owner(("127.0.0.1", 40001), ("127.0.0.1", 5433), [table]) is None


def test_the_kernel_address_format() -> None:
    little = sys.byteorder == "little"
    assert kernel_address("127.0.0.1", 8080) == ("0100007F" if little else "7F000001") + ":1F90"
    assert kernel_address("::1", 1) == (
        "000000000000000000000000" + ("01000000" if little else "00000001") + ":0001")
    assert kernel_address("fe80::1%lo", 22).endswith(":0016")
