"""The db agent's reading of a MySQL client's packets (``limen.agents.db.mysql_engine``):
commands (sequence 0) are audited and checked; with LOAD DATA LOCAL allowed, the file that
follows a query (sequence 2, 3, ... wrapping past 255, ended by an empty packet) passes as
data, counted, never read as commands — not even a file packet of sequence 0 that looks like
``COM_CHANGE_USER``; without it, such a packet is a command and is refused.

The inspector is driven directly with packets, beside a stand-in for the session (what it
records, what the roles allow) and for the relay (what it answers the client)."""

from __future__ import annotations

from typing import Any

from limen.agents.db.mysql_engine import _Commands
from limen.dbproto import mysql as my


class Session:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def record(self, event_type: str, **fields: Any) -> bool:
        self.events.append({"event": event_type, **fields})
        return True

    def check_db_name(self, name: str) -> str | None:
        return None if name == "app" else "not in db_names"


class Relay:
    def __init__(self) -> None:
        self.session = Session()
        self.replies: list[bytes] = []

    def reply(self, side: int, data: bytes) -> None:
        self.replies.append(data)


def query(sql: str) -> bytes:
    return my.encode_packet(0, bytes([my.COM_QUERY]) + sql.encode())


def file_packets(count: int, chunk: bytes) -> bytes:
    """``count`` file packets from sequence 2 on (wrapping), then the empty one."""
    packets = [my.encode_packet((2 + i) % 256, chunk) for i in range(count)]
    return b"".join(packets) + my.encode_packet((2 + count) % 256, b"")


def test_a_file_passes_as_data_even_where_its_sequence_wraps_to_zero() -> None:
    relay = Relay()
    inspect = _Commands(local_infile=True)
    change_user = bytes([my.COM_CHANGE_USER]) + b"bob\x00"  # file bytes that look like one
    data = query("load data local infile 'f' into table t") + file_packets(300, change_user) \
        + query("select 'after'")
    forwarded, room = inspect(data, relay)  # type: ignore[arg-type]
    assert room
    assert forwarded == data  # everything goes on, nothing refused
    assert relay.replies == []
    assert [(e.get("command"), e.get("query"), e.get("bytes")) for e in relay.session.events] \
        == [("COM_QUERY", "load data local infile 'f' into table t", None),
            ("LOCAL_INFILE_DATA", None, 300 * len(change_user)),
            ("COM_QUERY", "select 'after'", None)]


def test_without_local_infile_a_sequence_zero_packet_is_a_command() -> None:
    relay = Relay()
    inspect = _Commands(local_infile=False)
    change_user = bytes([my.COM_CHANGE_USER]) + b"bob\x00"
    data = query("load data local infile 'f' into table t") + file_packets(300, change_user)
    forwarded, _ = inspect(data, relay)  # type: ignore[arg-type]
    assert len(relay.replies) == 1  # the sequence-0 packet among them is refused
    assert b"COM_CHANGE_USER is not allowed" in relay.replies[0]
    assert len(forwarded) < len(data)
    refused = [e for e in relay.session.events if e.get("success") is False]
    assert [e["command"] for e in refused] == ["COM_CHANGE_USER"]


def test_a_command_after_a_refused_file_request_is_still_checked() -> None:
    # the server refused the LOAD (no file asked): the client's next packet is a command
    relay = Relay()
    inspect = _Commands(local_infile=True)
    inspect(query("load data local infile 'f' into table missing"), relay)  # type: ignore[arg-type]
    _, _ = inspect(query("use secret"), relay)  # type: ignore[arg-type]
    assert len(relay.replies) == 1
    assert b"access to database 'secret' denied" in relay.replies[0]


def test_packets_split_across_reads_are_classified_the_same() -> None:
    relay = Relay()
    inspect = _Commands(local_infile=True)
    data = query("load data local infile 'f' into table t") + file_packets(3, b"1\n2\n") \
        + query("select 1")
    out = b""
    for i in range(0, len(data), 5):
        forwarded, _ = inspect(data[i:i + 5], relay)  # type: ignore[arg-type]
        out += forwarded
    assert out == data
    assert [e.get("command") for e in relay.session.events] == [
        "COM_QUERY", "LOCAL_INFILE_DATA", "COM_QUERY"]
