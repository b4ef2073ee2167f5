"""The audit log in PostgreSQL (``limen.events.postgres_log``), as several auth replicas share
it: two writers at once make one chain that verifies (``limen.events.postgres_verify``), either
writer's search sees every event exactly once, a repeated delivery is written once, edited,
deleted and cut rows are found, days are sealed by whichever writer comes first, a restart
of the database costs no event; ``open_audit_log`` and ``lmctl audit verify --postgres``.

The database (one for the module, emptied before each test) lives on the session's PostgreSQL
(``tests/dbservers.py``), which one test restarts.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from pg_backend_db import backend_database

from dbservers import PostgresServer
from limen.ca.keys import jwk_thumbprint, public_key_to_pem
from limen.cli.lmctl import cli
from limen.errors import BadParameter, ConnectionProblem
from limen.events import FileLog, make_event, open_audit_log, search_log
from limen.events.chain import KeySigner, PublicKey
from limen.events.event import AuditEvent
from limen.events.filelog import day_file_name
from limen.events.postgres_log import PostgresLog
from limen.events.postgres_verify import verify_postgres

KEY = ec.generate_private_key(ec.SECP256R1())
KID = jwk_thumbprint(KEY.public_key())  # as lmctl names a --key file's key
SIGNER = KeySigner(KEY, KID)
KEYS: dict[str, PublicKey] = {KID: KEY.public_key()}


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:
    return backend_database(postgres_server, "limen_audit_log", icu=False)


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS limen_audit_lines, limen_audit_chains")
    return pg_dsn


@pytest.fixture
def logs(dsn: str) -> Iterator[Callable[..., PostgresLog]]:
    """Opens PostgresLogs ("replicas") on the module's database, signed by ``SIGNER``."""
    opened: list[PostgresLog] = []

    def make(**options: Any) -> PostgresLog:
        options.setdefault("signer", lambda: SIGNER)
        log = PostgresLog(dsn, **options)
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


def _sql(dsn: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def _event(n: int, user: str = "alice", when: datetime | None = None,
           kind: str = "exec") -> AuditEvent:
    return make_event(kind, cluster="main", user=user, time=when, command=f"cmd-{n}")


def _today() -> date:
    return datetime.now(UTC).date()


def _position(dsn: str, day: date, text: str) -> int:
    """The chain position (= line number) of ``day``'s only line holding ``text``."""
    [(seq,)] = _sql(dsn, "SELECT seq FROM limen_audit_lines WHERE day = %s"
                         " AND strpos(line::text, %s) > 0", day, text)
    return int(seq)


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 (state in the database; no event to await)
            await asyncio.sleep(0.05)


async def test_two_replicas_writing_at_once_make_one_chain_that_verifies(
        logs: Callable[..., PostgresLog], dsn: str) -> None:
    replica_a, replica_b = logs(checkpoint_every=40), logs(checkpoint_every=40)
    written = {"a": [_event(i) for i in range(300)], "b": [_event(i, "bob") for i in range(300)]}

    async def one_by_one(log: PostgresLog, events: list[AuditEvent]) -> None:
        await asyncio.gather(*(log.emit(event) for event in events))

    def from_a_thread(log: PostgresLog, events: list[AuditEvent]) -> None:
        for event in events:
            log.write(event)

    thread = threading.Thread(target=from_a_thread, args=(replica_b, written["b"][:100]))
    thread.start()
    await asyncio.gather(one_by_one(replica_a, written["a"]),
                         replica_b.emit_many(written["b"][100:]))
    await asyncio.to_thread(thread.join)

    uids = {event.uid for events in written.values() for event in events}
    for reader in (replica_a, replica_b):  # either replica sees every event, once
        found = await reader.search()
        assert len(found) == 600
        assert {event["uid"] for event in found} == uids
    positions = [row[0] for row in _sql(dsn, "SELECT seq FROM limen_audit_lines ORDER BY seq")]
    assert positions == list(range(1, len(positions) + 1))  # one chain, no fork, no gap
    counted = _sql(dsn, "SELECT count(*), count(DISTINCT uid) FROM limen_audit_lines"
                        " WHERE uid IS NOT NULL")
    assert counted == [(600, 600)]

    replica_a.close()
    replica_b.close()
    [report] = verify_postgres(logs(signer=None), KEYS)
    assert report.intact, report.problem
    assert (report.events, report.path.name) == (600, day_file_name(_today()))
    assert report.unsigned_tail == 0  # both closed: every line is signed
    reasons = {row[0] for row in _sql(
        dsn, "SELECT line->'checkpoint'->>'reason' FROM limen_audit_lines WHERE uid IS NULL")}
    assert reasons == {"periodic", "close"}  # 40 lines or more in a batch, then the closes


async def test_search_filters_and_order_as_the_file_search(
        logs: Callable[..., PostgresLog], tmp_path: Path) -> None:
    log = logs()
    files = FileLog(tmp_path / "events", fsync=False)
    start = datetime.now(UTC) - timedelta(minutes=10)
    events = [_event(0, "alice", start), _event(1, "bob", start + timedelta(minutes=1)),
              make_event("user.login", cluster="main", user="alice",
                         time=start + timedelta(minutes=2), method="password"),
              _event(3, "alice", start + timedelta(minutes=3))]
    for event in events:
        await log.emit(event)
        await files.emit(event)
    files.close()
    queries: list[dict[str, Any]] = [
        {}, {"types": "exec"}, {"types": ["user.*"]}, {"user": "alice"},
        {"since": start + timedelta(minutes=1)}, {"until": start + timedelta(minutes=2)},
        {"limit": 2}, {"limit": 2, "descending": True}, {"user": "alice", "descending": True},
    ]
    for query in queries:
        expected = await search_log(None, tmp_path / "events", **query)
        assert await search_log(log, tmp_path / "nothing", **query) == expected, query
        assert "chain" not in expected[0]
    [newest] = await log.search(limit=1, descending=True, chain=True)
    assert newest["uid"] == events[-1].uid
    assert newest["chain"]["seq"] >= 4
    with pytest.raises(BadParameter):
        await log.search(types="no.such.type")


async def test_a_repeated_delivery_is_written_once(logs: Callable[..., PostgresLog],
                                                   dsn: str) -> None:
    replica_a, replica_b = logs(), logs()
    event, other = _event(1), _event(2)
    await replica_a.emit(event)
    await replica_b.emit(event)  # an outbox drained again, an agent re-sending elsewhere
    await replica_b.emit_many([event, other, event])
    rows = _sql(dsn, "SELECT uid FROM limen_audit_lines WHERE uid IS NOT NULL ORDER BY seq")
    assert rows == [(event.uid,), (other.uid,)]
    assert [e["uid"] for e in await replica_a.search()] == [event.uid, other.uid]


async def _three_days(logs: Callable[..., PostgresLog]) -> tuple[PostgresLog, date]:
    """A closed log with 20 events yesterday-but-one and 5 today."""
    log = logs(checkpoint_every=8)
    old = datetime.now(UTC) - timedelta(days=2)
    await log.emit_many([_event(i, when=old + timedelta(seconds=i)) for i in range(20)])
    await log.emit_many([_event(i) for i in range(5)])
    log.close()
    return logs(signer=None), old.date()


async def test_an_edited_row_is_found(logs: Callable[..., PostgresLog], dsn: str) -> None:
    reader, day = await _three_days(logs)
    assert all(report.intact for report in verify_postgres(reader, KEYS))
    line = _position(dsn, day, '"cmd-7"')
    _sql(dsn, "UPDATE limen_audit_lines SET line = replace(line::text, 'alice', 'mallory')::json"
              " WHERE day = %s AND seq = %s", day, line)
    old, today = verify_postgres(reader, KEYS)
    assert old.problem is not None
    assert (old.problem.kind, old.problem.line) == ("edited", line)
    assert today.intact


async def test_deleted_rows_are_found(logs: Callable[..., PostgresLog], dsn: str) -> None:
    reader, day = await _three_days(logs)
    _sql(dsn, "DELETE FROM limen_audit_lines WHERE day = %s AND seq = 4", day)
    [old] = verify_postgres(reader, KEYS, [day])
    assert old.problem is not None
    assert (old.problem.kind, old.problem.line) == ("missing", 4)

    # today's chain is live (its tail need not be signed yet), but its head row knows the end
    _sql(dsn, "DELETE FROM limen_audit_lines WHERE day = %s AND seq > 3", _today())
    [today] = verify_postgres(reader, KEYS, [_today()])
    assert today.problem is not None
    assert today.problem.kind == "truncated", today.problem


async def test_a_late_event_seals_its_day_at_once(logs: Callable[..., PostgresLog]) -> None:
    log = logs()
    await log.emit(_event(1, when=datetime.now(UTC) - timedelta(days=3)))
    # nothing closed: the earlier day is already sealed by a rotate checkpoint
    [report] = verify_postgres(logs(signer=None), KEYS)
    assert report.intact, report.problem
    assert report.checkpoints == 1
    assert report.signed_through == 2


async def test_a_day_left_unsigned_is_sealed_by_another_replica(
        logs: Callable[..., PostgresLog], dsn: str) -> None:
    crashed = logs(signer=None)  # a writer that never signed (died before it could)
    earlier = datetime.now(UTC) - timedelta(days=2)
    await crashed.emit_many([_event(i, when=earlier) for i in range(3)])
    await crashed.emit(_event(9))
    reader = logs(signer=None)
    before = verify_postgres(reader, KEYS)
    assert [r.intact for r in before] == [False, True]  # earlier: unsigned; today: live

    logs(checkpoint_interval=0.2)  # another replica starts: it seals and signs what is due
    await eventually(lambda: all(r.intact and r.unsigned_tail == 0
                                 for r in verify_postgres(reader, KEYS)))
    reasons = [row[0] for row in _sql(
        dsn, "SELECT line->'checkpoint'->>'reason' FROM limen_audit_lines"
             " WHERE uid IS NULL ORDER BY day")]
    assert reasons == ["rotate", "periodic"]


async def test_a_database_restart_loses_no_event(logs: Callable[..., PostgresLog],
                                                  postgres_server: PostgresServer) -> None:
    log = logs()
    await log.emit(_event(1))
    assert len(await log.search()) == 1
    postgres_server.restart()  # the writer's and the reader's connections are now stale
    await log.emit(_event(2))
    assert len(await log.search()) == 2


async def test_an_unreachable_database_is_a_clean_error(dsn: str) -> None:
    broken = dsn.replace("dbname=", "dbname=no_such_") + " connect_timeout=2"
    with PostgresLog(broken) as log:
        with pytest.raises(ConnectionProblem) as caught:
            await log.emit(_event(1))
        assert "no_such_limen_audit_log" in str(caught.value)
    with pytest.raises(BadParameter):
        PostgresLog("host=x port=notaport =")


def test_open_audit_log_follows_the_backend(dsn: str, tmp_path: Path) -> None:
    with open_audit_log(tmp_path, kind="postgres", dsn=dsn) as shared:
        assert isinstance(shared, PostgresLog)
    with open_audit_log(tmp_path, kind="sqlite") as files:
        assert isinstance(files, FileLog)
        assert files.directory == tmp_path / "log" / "events"
    for bad in ({"kind": "postgres"}, {"kind": "etcd"}):
        with pytest.raises(BadParameter):
            open_audit_log(tmp_path, **bad)


async def test_lmctl_audit_verify_reads_the_postgres_log(
        logs: Callable[..., PostgresLog], dsn: str, tmp_path: Path) -> None:
    _, day = await _three_days(logs)
    (tmp_path / "dsn").write_text(dsn + "\n")
    (tmp_path / "key.pem").write_text(public_key_to_pem(KEY.public_key()))
    args = ["audit", "verify", "--postgres", str(tmp_path / "dsn"),
            "--key", str(tmp_path / "key.pem")]
    result = await asyncio.to_thread(CliRunner().invoke, cli, [*args, "-o", "json"])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.output)["items"]
    assert [r["intact"] for r in reports] == [True, True]
    assert sum(r["events"] for r in reports) == 25

    line = _position(dsn, day, '"cmd-3"')
    _sql(dsn, "UPDATE limen_audit_lines SET line = replace(line::text, 'cmd-3', 'cmd-4')::json"
              " WHERE day = %s AND seq = %s", day, line)
    result = await asyncio.to_thread(CliRunner().invoke, cli, [*args, day.isoformat()])
    assert result.exit_code == 1
    assert f"BROKEN  {day_file_name(day)} line {line} (edited)" in result.output
    result = await asyncio.to_thread(CliRunner().invoke, cli, [*args, "1999-01-01"])
    assert result.exit_code != 0
    assert "no audit log day" in result.output
