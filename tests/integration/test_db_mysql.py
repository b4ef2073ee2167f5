"""MySQL/MariaDB through Limen, end to end: ``lmsh db login`` then the stock ``mariadb``
client (queries, server-side prepared statements, ``USE``), PyMySQL connections side by side
(a driver pool), each command in the audit log; and the refusals, each with an ERR packet and
an audit event: a database the roles do not allow (``USE``, ``COM_INIT_DB``, a USE hidden in a
multi-statement query), ``COM_CHANGE_USER``, ``LOAD DATA LOCAL INFILE`` on a database that
does not allow it, a plaintext client; and ``LOAD DATA LOCAL INFILE`` (an 8 MB file) where
the Resource allows it (``spec.mysql.allow_local_infile``), audited.

The path is the real one: mariadb ──TLS──▶ the proxy's MySQL front ──▶ tunnel ──▶ db agent
──TLS, client certificate CN=<db user>──▶ MariaDB 10.11 (``REQUIRE SUBJECT``, no password).
"""

from __future__ import annotations

import configparser
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pymysql.constants import COMMAND

from .cluster import run
from .db_env import DBEnv

GROUP = "-dbtest-maria-main"


@pytest.fixture(scope="module")
def alice_on_maria(db_env: DBEnv) -> DBEnv:
    db_env.alice.db_login("maria-main", "--db-user", "alice", "--db-name", "app")
    return db_env


def mysql(env: DBEnv, *args: str, check: bool = True) -> Any:
    return run(["mariadb", f"--defaults-group-suffix={GROUP}", "-N", "-B", *args],
               env=env.alice.env, check=check)


def connect(env: DBEnv, **overrides: Any) -> pymysql.Connection[Any]:
    """A PyMySQL connection from the option group lmsh wrote (host, port, user, TLS files)."""
    parser = configparser.ConfigParser(allow_no_value=True)
    parser.read(Path(env.alice.env["HOME"]) / ".my.cnf")
    group = {k: (v or "").strip('"') for k, v in parser[f"client{GROUP}"].items()}
    options: dict[str, Any] = {
        "host": group["host"], "port": int(group["port"]), "user": group["user"],
        "database": group.get("database"), "ssl_ca": group["ssl-ca"],
        "ssl_cert": group["ssl-cert"], "ssl_key": group["ssl-key"], "ssl_verify_cert": True,
        "ssl_verify_identity": True, "connect_timeout": 10}
    options.update(overrides)
    return pymysql.connect(**options)


def test_mariadb_client_reaches_the_server_and_commands_are_audited(
        alice_on_maria: DBEnv) -> None:
    env = alice_on_maria
    out = mysql(env, "-e", "select current_user(), database(), 'marker-my-1'").stdout
    assert out.split() == ["alice@%", "app", "marker-my-1"]
    started = env.wait_audit("db.session.start", "the session", user="alice",
                             db_service="maria-main")
    assert started[0]["db_protocol"] == "mysql"
    queries = env.wait_audit("db.session.query", "the query", db_service="maria-main")
    assert any("marker-my-1" in q.get("query", "") for q in queries)


def test_a_pool_of_driver_connections_and_prepared_statements(alice_on_maria: DBEnv) -> None:
    env = alice_on_maria

    def one(i: int) -> Any:
        with connect(env) as conn, conn.cursor() as cursor:
            cursor.execute("select %s, connection_id()", (f"marker-pool-{i}",))
            return cursor.fetchone()

    with ThreadPoolExecutor(max_workers=4) as pool:
        rows = list(pool.map(one, range(8)))
    assert [r[0] for r in rows] == [f"marker-pool-{i}" for i in range(8)]
    assert len({r[1] for r in rows}) == 8  # eight server sessions
    with connect(env) as conn:
        conn._execute_command(COMMAND.COM_STMT_PREPARE, "select ? + 1 as marker_prepared")
        packet = conn._read_packet()
        assert packet.is_ok_packet()  # COM_STMT_PREPARE_OK starts with 0x00
    queries = env.wait_audit("db.session.query", "the prepared statement",
                             command="COM_STMT_PREPARE")
    assert any("marker_prepared" in q.get("query", "") for q in queries)
    audited = " ".join(q.get("query", "") for q in env.audit("db.session.query"))
    assert all(f"marker-pool-{i}" in audited for i in range(8))


def test_a_database_the_roles_do_not_allow_is_refused_in_every_form(
        alice_on_maria: DBEnv) -> None:
    env = alice_on_maria
    for sql in ("use secret", "select 1; use `secret`", "/* x */ USE secret;"):
        refused = mysql(env, "-e", sql, check=False)
        assert refused.returncode != 0, sql
        assert "access to database 'secret' denied" in refused.stderr, sql
    with connect(env) as conn:
        with pytest.raises(pymysql.err.OperationalError, match="secret"):
            conn.select_db("secret")  # COM_INIT_DB
        with conn.cursor() as cursor:  # the session survives the refusal
            cursor.execute("select database()")
            assert cursor.fetchone() == ("app",)
    events = env.wait_audit("db.session.query", "the refusals", success=False,
                            db_service="maria-main")
    assert {e.get("command") for e in events} >= {"COM_QUERY", "COM_INIT_DB"}
    assert env.maria.sql("select count(*) from information_schema.processlist "
                         "where db = 'secret'") == "0"


def test_change_user_is_refused(alice_on_maria: DBEnv) -> None:
    env = alice_on_maria
    with connect(env) as conn:
        conn._execute_command(COMMAND.COM_CHANGE_USER, b"bob\x00\x00app\x00")
        with pytest.raises(pymysql.err.OperationalError, match="COM_CHANGE_USER"):
            conn._read_packet()
        with conn.cursor() as cursor:
            cursor.execute("select current_user()")
            assert cursor.fetchone() == ("alice@%",)
    events = env.wait_audit("db.session.query", "the refusal", command="COM_CHANGE_USER")
    assert events[0]["success"] is False


def test_load_data_local_is_refused(alice_on_maria: DBEnv, tmp_path: Path) -> None:
    env = alice_on_maria
    data = tmp_path / "rows.txt"
    data.write_text("1\n2\n")
    mysql(env, "-e", "create table if not exists loaded (n int); truncate loaded")
    refused = mysql(env, "--local-infile=1", "-e",
                    f"load data local infile '{data}' into table loaded", check=False)
    assert refused.returncode != 0
    assert "not allowed" in refused.stderr
    assert mysql(env, "-e", "select count(*) from loaded").stdout.strip() == "0"
    statement = env.wait_audit("db.session.query", "the statement", db_service="maria-main",
                               query=f"load data local infile '{data}' into table loaded")
    assert statement[0]["command"] == "COM_QUERY"
    assert not env.audit("db.session.query", db_service="maria-main",
                         command="LOCAL_INFILE_DATA")


def test_load_data_local_where_the_resource_allows_it(db_env: DBEnv, tmp_path: Path) -> None:
    env = db_env
    env.alice.db_login("maria-infile", "--db-user", "alice", "--db-name", "app")
    line = "x" * 1999 + "\n"
    data = tmp_path / "big.txt"
    data.write_text(line * 4000)  # 8 MB: many packets, their sequence numbers wrap past 255
    size = data.stat().st_size

    def infile(*args: str, check: bool = True) -> Any:
        return run(["mariadb", "--defaults-group-suffix=-dbtest-maria-infile", "-N", "-B",
                    *args], env=env.alice.env, check=check)

    infile("-e", "create table if not exists loaded_ok (t text); truncate loaded_ok")
    sql = f"load data local infile '{data}' into table loaded_ok"
    infile("--local-infile=1", "-e", sql)
    counted = infile("-e", "select count(*), sum(length(t)) from loaded_ok").stdout.split()
    assert counted == ["4000", str(4000 * 1999)]
    # the session goes on after the file: a command after it is read as a command again
    after = infile("--local-infile=1", "-e", f"{sql}; select 'marker-after-infile'")
    assert "marker-after-infile" in after.stdout
    env.wait_audit("db.session.query", "the statement", db_service="maria-infile", query=sql)
    sent = env.wait_audit("db.session.query", "the file's size", db_service="maria-infile",
                          command="LOCAL_INFILE_DATA")
    assert sent[0]["bytes"] == size
    env.wait_audit("db.session.query", "the command after the file",
                   db_service="maria-infile", query="select 'marker-after-infile'")


def test_a_plaintext_client_is_refused_and_audited(alice_on_maria: DBEnv) -> None:
    env = alice_on_maria
    host, port = env.cluster.listeners["mysql"].rsplit(":", 1)
    refused = run(["mariadb", "--no-defaults", "-h", host, "-P", port, "-u", "alice",
                   "--skip-ssl", "-e", "select 1"], env=env.alice.env, check=False)
    assert refused.returncode != 0
    assert "Limen requires TLS" in refused.stderr
    events = env.wait_audit("db.session.start", "the refusal", success=False,
                            db_protocol="mysql")
    assert any("requires TLS" in e.get("reason", "") for e in events)
