"""The PostgreSQL agent's inspector (``limen.agents.db.postgres_engine._inspector``): every
simple query is recorded once, in order, however the client's bytes are cut into reads (one
whole query per read takes a shortcut past the splitter; queries cut across reads, several
in one read and a read that starts inside a message take the splitter), and a malformed
query is refused before it is recorded or forwarded."""

from __future__ import annotations

from typing import Any

import pytest

from limen.agents.db.postgres_engine import _inspector
from limen.dbproto import postgres as pg
from limen.errors import BadParameter


class Session:
    def __init__(self) -> None:
        self.recorded: list[dict[str, Any]] = []

    def record(self, event_type: str, **fields: Any) -> bool:
        assert event_type == "db.session.query"
        self.recorded.append(fields)
        return True


class Relay:
    def __init__(self) -> None:
        self.session = Session()


def q(text: str) -> bytes:
    return pg.encode_message(b"Q", text.encode() + b"\0")


def queries(reads: list[bytes]) -> list[str]:
    inspect, _ = _inspector()
    relay = Relay()
    for data in reads:
        forwarded, room = inspect(data, relay)  # type: ignore[arg-type]
        assert forwarded == data
        assert room
    return [fields["query"] for fields in relay.session.recorded]


def test_one_whole_query_per_read() -> None:
    assert queries([q("select 1"), q("select 2")]) == ["select 1", "select 2"]


def test_queries_cut_across_reads_and_several_in_one_read() -> None:
    stream = q("select 1") + q("select 2") + pg.encode_message(b"S", b"") + q("select 3")
    for cut in range(1, len(stream)):
        assert queries([stream[:cut], stream[cut:]]) == ["select 1", "select 2", "select 3"]


def test_a_read_that_looks_like_a_whole_query_inside_a_message_is_not_one() -> None:
    inner = q("select 2")  # whole on its own: a query only where a message begins
    parse = pg.encode_message(b"P", b"\0" + b"x" * 3 + b"\0\0\0")
    head, tail = parse + q("select 1")[:3], q("select 1")[3:]
    assert queries([head, tail, inner]) == ["select 1", "select 2"]
    padded = pg.encode_message(b"D", b"\0" * len(inner))  # a message whose body is a "Q"
    assert queries([padded[:5], inner, q("select 3")]) == ["select 3"]


@pytest.mark.parametrize("payload", [b"select 1", b"select \xff\0", b"select 1\0tail\0"])
def test_a_malformed_query_is_refused_before_it_is_recorded(payload: bytes) -> None:
    inspect, _ = _inspector()
    relay = Relay()
    with pytest.raises(BadParameter):
        inspect(pg.encode_message(b"Q", payload), relay)  # type: ignore[arg-type]
    assert relay.session.recorded == []
