"""PostgreSQL through Limen, end to end: ``lmsh db login`` then the stock ``psql`` (simple
and extended protocol, ``\\copy`` both ways, a cancelled query), psycopg 3 (parameters,
LISTEN/NOTIFY, a pool of connections), each query in the audit log; and the refusals, each
audited with its reason: a database user or name the roles do not allow, a deny rule on the
database's labels, a plaintext client, a certificate of another CA, crafted names, a cancel
key of another session.

The path is the real one: psql ──TLS──▶ the proxy's PostgreSQL front ──▶ tunnel ──▶ db agent
──TLS, client certificate CN=<db user>──▶ PostgreSQL 15 trusting only the cluster's DB CA.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from limen.dbproto import postgres as pg

from .cluster import run, wait_for
from .db_env import ROLES, DBEnv

SERVICE = "service=dbtest-pg-main"
BOB_DENIED = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: db-bob}
spec:
  allow:
    db_labels: {env: dev}
    db_users: [bob]
    db_names: ["*"]
  deny:
    db_labels: {engine: postgres}
"""


@pytest.fixture(scope="module")
def alice_logged_in(db_env: DBEnv) -> DBEnv:
    db_env.alice.db_login("pg-main", "--db-user", "alice", "--db-name", "app")
    return db_env


def test_psql_reaches_postgres_through_the_proxy_and_every_query_is_audited(
        alice_logged_in: DBEnv) -> None:
    env = alice_logged_in
    service = env.alice.pg_service("dbtest-pg-main")
    assert service["port"] == env.cluster.listeners["postgres"].rpartition(":")[2]
    assert service["sslmode"] == "verify-full"
    result = env.alice.psql(SERVICE, "-c", "select current_user, current_database(), "
                            "'marker-simple-1'")
    assert result.stdout.strip() == "alice|app|marker-simple-1"
    started = env.wait_audit("db.session.start", "the session start", user="alice",
                             db_service="pg-main")
    assert started[0]["db_user"] == "alice"
    assert started[0]["db_name"] == "app"
    queries = env.wait_audit("db.session.query", "the query", user="alice")
    assert any("marker-simple-1" in q.get("query", "") for q in queries)
    env.wait_audit("db.session.end", "the session end", user="alice")


def test_extended_protocol_parameters_and_notify_through_psycopg(alice_logged_in: DBEnv) -> None:
    env = alice_logged_in
    service = env.alice.pg_service("dbtest-pg-main")
    conninfo = " ".join(f"{k}={v}" for k, v in service.items())
    with psycopg.connect(conninfo, autocommit=True) as listener, \
            psycopg.connect(conninfo, autocommit=True) as talker:
        listener.execute("LISTEN limen_channel")
        row = talker.execute("select %s::text || %s::text", ("marker-", "bind-2")).fetchone()
        assert row == ("marker-bind-2",)
        talker.execute("select pg_notify('limen_channel', 'hello through limen')")
        notices = listener.notifies(timeout=10, stop_after=1)
        assert [n.payload for n in notices] == ["hello through limen"]
    queries = env.wait_audit("db.session.query", "the Bind parameters", user="alice")
    bound = [q for q in queries if q.get("parameters") == ["marker-", "bind-2"]]
    assert bound, queries
    assert "select $1::text || $2::text" in bound[0]["query"]


def test_copy_both_ways_with_psql(alice_logged_in: DBEnv, tmp_path: Path) -> None:
    env = alice_logged_in
    source = tmp_path / "rows.csv"
    source.write_text("".join(f"{i},row {i}\n" for i in range(20000)))
    env.alice.psql(SERVICE, "-c", "create table if not exists copied (id int, name text); "
                   "truncate copied")
    env.alice.psql(SERVICE, "-c", f"\\copy copied from '{source}' csv")
    assert env.alice.psql(SERVICE, "-c", "select count(*), sum(id) from copied").stdout \
        .strip() == f"20000|{sum(range(20000))}"
    target = tmp_path / "out.csv"
    env.alice.psql(SERVICE, "-c", "\\copy (select * from copied order by id) to "  # noqa: S608
                   f"'{target}' csv")
    assert target.read_text() == source.read_text()


def test_ctrl_c_cancels_a_running_query(alice_logged_in: DBEnv) -> None:
    env = alice_logged_in
    proc = subprocess.Popen(
        ["psql", "-X", SERVICE, "-c", "select pg_sleep(60)"], env=env.alice.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: env.pg.sql("select count(*) from pg_stat_activity where query = "
                                    "'select pg_sleep(60)' and state = 'active'") == "1",
                 15.0, "the query to run")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert "canceling statement due to user request" in err
    assert time.monotonic() - started < 10
    env.wait_audit("db.session.cancel", "the cancel", success=True)


def test_a_db_user_or_name_the_roles_do_not_allow_is_refused_and_audited(
        alice_logged_in: DBEnv) -> None:
    env = alice_logged_in
    as_bob = env.alice.psql(f"{SERVICE} user=bob", "-c", "select 1", check=False)
    assert as_bob.returncode != 0
    assert "denied" in as_bob.stderr
    assert "bob" in as_bob.stderr
    other_db = env.alice.psql(f"{SERVICE} dbname=template1", "-c", "select 1", check=False)
    assert other_db.returncode != 0
    assert "template1" in other_db.stderr
    refused = env.wait_audit("db.session.start", "the refusals", user="alice", success=False)
    reasons = " ".join(e.get("reason", "") for e in refused)
    assert "'bob'" in reasons
    assert "'template1'" in reasons


def test_a_deny_rule_on_the_database_labels_wins(db_env: DBEnv, tmp_path: Path) -> None:
    listed = {d["name"] for d in json.loads(
        db_env.alice.lmsh("db", "ls", "-o", "json").stdout)["items"]}
    assert "pg-prod" not in listed
    assert "pg-main" in listed
    refused = db_env.alice.lmsh("db", "login", "pg-prod", "--db-user", "alice", check=False)
    assert refused.returncode == 1
    # A deny added while a certificate is out: the next connection is refused.
    bob = db_env.bob
    bob.db_login("pg-main", "--db-user", "bob", "--db-name", "app")
    assert bob.psql(SERVICE, "-c", "select current_user").stdout.strip() == "bob"
    role = tmp_path / "deny.yaml"
    role.write_text(BOB_DENIED)
    db_env.cluster.lmctl("apply", "-f", role)
    try:
        denied = wait_for(lambda: (r := bob.psql(SERVICE, "-c", "select 1", check=False))
                          .returncode != 0 and r, 15.0, "the new deny rule to apply")
    finally:
        role.write_text(ROLES)  # the environment is shared by the session's db tests
        db_env.cluster.lmctl("apply", "-f", role)
    assert "denies databases labelled" in denied.stderr
    events = db_env.wait_audit("db.session.start", "the denial", user="bob", success=False)
    assert any("denies databases labelled" in e.get("reason", "") for e in events)


def test_crafted_names_never_reach_a_connection_string(alice_logged_in: DBEnv) -> None:
    env = alice_logged_in
    for user in ("alice dbname=postgres", "alice'--", "al\tice"):
        conninfo = f"{SERVICE} user='{user.replace(chr(39), chr(92) + chr(39))}'"
        result = env.alice.psql(conninfo, "-c", "select current_user", check=False)
        assert result.returncode != 0, user
    assert env.pg.sql("select count(*) from pg_stat_activity where usename <> 'alice' and "
                      "usename like 'alice%'") == "0"


def test_plaintext_and_foreign_certificates_are_refused_and_audited(
        alice_logged_in: DBEnv) -> None:
    env = alice_logged_in
    host, port = env.cluster.listeners["postgres"].rsplit(":", 1)
    plain = subprocess.run(["psql", "-X", f"host={host} port={port} user=alice dbname=app "
                            "sslmode=disable", "-c", "select 1"], env=env.alice.env,
                           capture_output=True, text=True, timeout=30)
    assert plain.returncode != 0
    assert "Limen requires TLS" in plain.stderr
    events = env.wait_audit("db.session.start", "the plaintext refusal", success=False)
    assert any("requires TLS" in e.get("reason", "") for e in events)


def test_the_client_is_told_a_cancel_key_of_the_proxy_not_the_databases(
        alice_logged_in: DBEnv) -> None:
    """The db agent of the cluster process serves the client's own connection; the
    BackendKeyData the client reads is still one the proxy issued (a cancel must come back
    through the proxy, which checks whose session it is)."""
    env = alice_logged_in
    service = env.alice.pg_service("dbtest-pg-main")
    conninfo = " ".join(f"{k}={v}" for k, v in service.items())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        assert conn.info.backend_pid != row[0]


def test_a_cancel_key_the_proxy_did_not_issue_cancels_nothing(alice_logged_in: DBEnv) -> None:
    env = alice_logged_in
    host, port = env.cluster.listeners["postgres"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(pg.encode_cancel(12345, 67890))
        assert sock.recv(1) == b""
    events = env.wait_audit("db.session.cancel", "the refused cancel", success=False)
    assert any(e.get("reason") == "unknown cancel key" for e in events)


def test_a_gigabyte_copy_streams_through_the_proxy(alice_logged_in: DBEnv) -> None:
    env = alice_logged_in
    rows, width = 1 << 20, 1023  # 1 GiB of COPY text: 1023 characters and a newline a row
    query = (f"\\copy (select repeat('x', {width}) from generate_series(1, {rows})) "  # noqa: S608
             "to stdout")
    received = 0
    with subprocess.Popen(["psql", "-X", SERVICE, "-c", query], env=env.alice.env,
                          stdout=subprocess.PIPE) as psql:
        assert psql.stdout is not None
        while chunk := psql.stdout.read(1 << 20):
            received += len(chunk)
        assert psql.wait(timeout=120) == 0
    assert received == rows * (width + 1) == 1 << 30
    ended = env.wait_audit("db.session.end", "the session end with its byte count",
                           user="alice")
    assert max(e.get("bytes_from_db", 0) for e in ended) > 1 << 30


def test_pgbench_runs_through_the_proxy(alice_logged_in: DBEnv) -> None:
    env = alice_logged_in
    run(["pgbench", "-i", "-s", "1", "-q", SERVICE], env=env.alice.env)
    result = run(["pgbench", "-S", "-c", "4", "-j", "2", "-t", "200", "--no-vacuum", SERVICE],
                 env=env.alice.env)
    assert "number of transactions actually processed: 800/800" in result.stdout
    assert "number of failed transactions: 0" in result.stdout
