"""Automatic database users (a Resource's ``admin_user``, a role's ``create_db_user`` and
``db_roles``) end to end, on the real PostgreSQL 15 and MariaDB 10.11 of the db tests.

carol's role ``db-auto`` turns provisioning on for the databases labelled ``auto-users: on``
and grants the database role ``auto_reader_a``: psql / mariadb as carol through Limen create
her database user, which reads the table of ``auto_reader_a`` and not the one of
``auto_reader_b``; when the session ends the user is disabled (a login is refused) and
stripped of its roles; the next session enables it again. erin's database user exists
already and is not Limen's: refused and audited, left as it was. carol asking for another
database user is refused. Crafted names (quotes, semicolons) reach the SQL only quoted.

hana's role ``db-auto-own`` sets ``create_db_user`` and names no ``db_users`` at all: she
connects as ``hana`` (``lmsh db login`` picks her own name), the user is created and her
queries audited; asking for another database user is refused at the proxy. ivo's roles deny
his own name (``deny.db_users``) once he holds a database certificate: refused and audited.

The db agent logs in upstream as ``limen-admin`` (certificate from Limen's DB CA). The
servers are the session's (``db_env``); everything here uses its own names.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from dbservers import MariaDBServer, PostgresServer
from limen.agents.db import provisioning_mysql, provisioning_postgres
from limen.agents.db.admin_mysql import MySQLAdmin
from limen.agents.db.admin_postgres import PostgresAdmin
from limen.agents.db.upstream_tls import UpstreamCerts, UpstreamTarget
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.x509_certs import sign_db_client_cert

from .cluster import run, wait_for
from .db_env import DBEnv, DBPerson

ROLES_AND_DATABASES = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: db-auto}}
spec:
  options: {{create_db_user: true}}
  allow:
    db_labels: {{auto-users: "on"}}
    db_users: [carol, erin]
    db_names: ["*"]
    db_roles: [auto_reader_a]
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: pg-auto, labels: {{auto-users: "on", served-by: cluster}}}}
spec: {{kind: db, protocol: postgres, address: "127.0.0.1:{pg_port}",
        admin_user: {{name: limen-admin}}}}
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: maria-auto, labels: {{auto-users: "on", served-by: cluster}}}}
spec: {{kind: db, protocol: mysql, address: "127.0.0.1:{maria_port}", database: auto,
        admin_user: {{name: limen-admin}}}}
"""
PG_SERVICE = "service=dbtest-pg-auto"
MARIA_GROUP = "-dbtest-maria-auto"


def _prepare_postgres(env: DBEnv) -> None:
    pg = env.pg
    pg.create_user("limen-admin")
    pg.create_user("erin")  # a database user that exists already, not Limen's
    pg.sql('ALTER ROLE "limen-admin" CREATEROLE')
    pg.create_database("auto")
    pg.sql("CREATE ROLE auto_reader_a NOLOGIN; CREATE ROLE auto_reader_b NOLOGIN")
    pg.sql("CREATE TABLE ta (v text); INSERT INTO ta VALUES ('row of a'); "
           "CREATE TABLE tb (v text); INSERT INTO tb VALUES ('row of b'); "
           "GRANT SELECT ON ta TO auto_reader_a; GRANT SELECT ON tb TO auto_reader_b", "auto")


def _prepare_mariadb(env: DBEnv) -> None:
    maria = env.maria
    maria.create_user("limen-admin", grant_all_on=None)
    maria.create_user("erin", grant_all_on=None)
    admin = "'limen-admin'@'%'"
    maria.sql(f"GRANT CREATE USER ON *.* TO {admin}")
    maria.sql(f"GRANT SELECT, UPDATE ON mysql.* TO {admin}")  # UPDATE: SET DEFAULT ROLE
    maria.sql(f"GRANT PROCESS ON *.* TO {admin}")  # to see another agent's connections
    maria.sql("CREATE ROLE auto_reader_a; CREATE ROLE auto_reader_b")
    maria.sql(f"GRANT auto_reader_a TO {admin} WITH ADMIN OPTION; "
              f"GRANT auto_reader_b TO {admin} WITH ADMIN OPTION")
    maria.create_database("auto")
    maria.sql("CREATE TABLE ta (v text); INSERT INTO ta VALUES ('row of a'); "
              "CREATE TABLE tb (v text); INSERT INTO tb VALUES ('row of b'); "
              "GRANT SELECT ON auto.ta TO auto_reader_a; GRANT SELECT ON auto.tb TO auto_reader_b",
              "auto")


class AutoEnv:
    def __init__(self, env: DBEnv, carol: DBPerson, erin: DBPerson) -> None:
        self.env, self.carol, self.erin = env, carol, erin

    def events(self, event_type: str, **match: Any) -> list[dict[str, Any]]:
        return self.env.audit(event_type, **match)

    def wait_events(self, event_type: str, count: int, **match: Any) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]]:
            found = self.events(event_type, **match)
            return found if len(found) >= count else []
        # each deactivation is an admin login to the server, up to SETTLE_SECONDS for the
        # session to leave its list, and the revokes
        return wait_for(enough, 30.0, f"{count} {event_type} event(s) matching {match}")


@pytest.fixture(scope="module")
def auto(db_env: DBEnv, tmp_path_factory: pytest.TempPathFactory) -> AutoEnv:
    _prepare_postgres(db_env)
    _prepare_mariadb(db_env)
    files = tmp_path_factory.mktemp("auto-users")
    (files / "auto.yaml").write_text(ROLES_AND_DATABASES.format(
        pg_port=db_env.pg.port, maria_port=db_env.maria.port))
    db_env.cluster.lmctl("apply", "-f", files / "auto.yaml")
    carol = DBPerson(db_env.cluster.signed_up_user("carol", roles=["db-auto"]))
    erin = DBPerson(db_env.cluster.signed_up_user("erin", roles=["db-auto"]))
    for person in (carol, erin):
        person.user.login()
    wait_for(lambda: {d["name"] for d in json.loads(
        carol.lmsh("db", "ls", "-o", "json").stdout)["items"]} >= {"pg-auto", "maria-auto"},
        30.0, "the db agent to heartbeat the databases with an admin user")
    carol.db_login("pg-auto", "--db-user", "carol", "--db-name", "auto")
    carol.db_login("maria-auto", "--db-user", "carol", "--db-name", "auto")
    erin.db_login("pg-auto", "--db-user", "erin", "--db-name", "auto")
    erin.db_login("maria-auto", "--db-user", "erin", "--db-name", "auto")
    return AutoEnv(db_env, carol, erin)


def _pg_login_as(env: DBEnv, user: str) -> Any:
    """A direct login to the test server as ``user`` over its Unix socket (trusted there)."""
    return run(["psql", "-X", "-h", str(env.pg.root), "-p", str(env.pg.port), "-U", user,
                "-d", "auto", "-At", "-c", "select 1"], env={"PATH": "/usr/bin:/bin"},
               check=False)


def _pg_memberships(env: DBEnv, user: str) -> str:
    """The roles ``user`` is a member of, comma-separated."""
    with psycopg.connect(env.pg.admin_dsn) as conn:
        row = conn.execute(
            "SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) FROM pg_auth_members a "
            "JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles u ON u.oid = a.member "
            "WHERE u.rolname = %s", (user,)).fetchone()
    return str(row[0] or "") if row else ""


def test_postgres_auto_user_gets_exactly_its_roles_and_is_disabled_after_the_session(
        auto: AutoEnv) -> None:
    env = auto.env
    readable = auto.carol.psql(PG_SERVICE, "-c", "select current_user, v from ta")
    assert readable.stdout.strip() == "carol|row of a"
    # psql exits before the agent has seen its session end: a next session that started
    # before that would join this one, and the user would be disabled once for both
    auto.wait_events("db.user.deactivated", 1, user="carol", db_service="pg-auto")
    refused = auto.carol.psql(PG_SERVICE, "-c", "select v from tb", check=False)
    assert refused.returncode != 0
    assert "permission denied" in refused.stderr
    provisioned = auto.wait_events("db.user.provisioned", 2, user="carol",
                                   db_service="pg-auto")
    assert provisioned[0]["success"] is True
    assert provisioned[0]["created"] is True
    assert provisioned[0]["granted"] == ["auto_reader_a"]
    assert provisioned[1]["created"] is False
    assert all(e["db_roles"] == ["auto_reader_a"] for e in provisioned)
    auto.wait_events("db.user.deactivated", 2, user="carol", db_service="pg-auto")
    # after the session: no login, no roles (the marker group only)
    assert env.pg.sql("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'carol'") == "f"
    assert _pg_memberships(env, "carol") == "limen-auto-users"
    assert "not permitted to log in" in _pg_login_as(env, "carol").stderr
    # a later session enables the user again, with its roles
    again = auto.carol.psql(PG_SERVICE, "-c", "select v from ta")
    assert again.stdout.strip() == "row of a"
    auto.wait_events("db.user.deactivated", 3, user="carol", db_service="pg-auto")
    assert env.pg.sql("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'carol'") == "f"


def test_the_user_stays_enabled_until_its_last_session_ends(auto: AutoEnv) -> None:
    env = auto.env
    service = auto.carol.pg_service("dbtest-pg-auto")
    conninfo = " ".join(f"{k}={v}" for k, v in service.items())
    ended = len(auto.events("db.user.deactivated", user="carol", db_service="pg-auto"))
    with psycopg.connect(conninfo, autocommit=True) as held:
        assert held.execute("select v from ta").fetchone() == ("row of a",)
        sessions = len(auto.events("db.session.end", user="carol", db_service="pg-auto"))
        assert auto.carol.psql(PG_SERVICE, "-c", "select 'second'").stdout.strip() == "second"
        auto.wait_events("db.session.end", sessions + 1, user="carol", db_service="pg-auto")
        # the second session has ended, the first is open: still enabled, still a reader
        assert len(auto.events("db.user.deactivated", user="carol",
                               db_service="pg-auto")) == ended
        assert env.pg.sql("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'carol'") == "t"
        assert held.execute("select v from ta").fetchone() == ("row of a",)
    auto.wait_events("db.user.deactivated", ended + 1, user="carol", db_service="pg-auto")
    assert env.pg.sql("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'carol'") == "f"


def test_mariadb_auto_user_gets_exactly_its_roles_and_is_locked_after_the_session(
        auto: AutoEnv) -> None:
    env = auto.env

    def mariadb(sql: str, check: bool = True) -> Any:
        return run(["mariadb", f"--defaults-group-suffix={MARIA_GROUP}", "-N", "-B", "-e", sql],
                   env=auto.carol.env, check=check)

    assert mariadb("select current_user(), v from ta").stdout.strip() == "carol@%\trow of a"
    auto.wait_events("db.user.deactivated", 1, user="carol", db_service="maria-auto")  # as pg
    refused = mariadb("select v from tb", check=False)
    assert refused.returncode != 0
    assert "denied" in refused.stderr
    provisioned = auto.wait_events("db.user.provisioned", 2, user="carol",
                                   db_service="maria-auto")
    assert provisioned[0]["created"] is True
    assert provisioned[0]["granted"] == ["auto_reader_a"]
    auto.wait_events("db.user.deactivated", 2, user="carol", db_service="maria-auto")
    assert "ACCOUNT LOCK" in env.maria.sql("SHOW CREATE USER 'carol'@'%'")
    bundle = provisioning_mysql.user_role("carol")  # hex: no quoting needed
    assert env.maria.sql("SELECT count(*) FROM mysql.roles_mapping WHERE User = "  # noqa: S608
                         f"'{bundle}'") == "0"
    assert mariadb("select v from ta").stdout.strip() == "row of a"
    auto.wait_events("db.user.deactivated", 3, user="carol", db_service="maria-auto")
    assert "ACCOUNT LOCK" in env.maria.sql("SHOW CREATE USER 'carol'@'%'")


def test_a_database_user_limen_does_not_manage_is_refused_and_left_alone(
        auto: AutoEnv) -> None:
    env = auto.env
    refused = auto.erin.psql("service=dbtest-pg-auto", "-c", "select 1", check=False)
    assert refused.returncode != 0
    assert "not managed by Limen" in refused.stderr
    maria = run(["mariadb", f"--defaults-group-suffix={MARIA_GROUP}", "-e", "select 1"],
                env=auto.erin.env, check=False)
    assert maria.returncode != 0
    assert "not managed by Limen" in maria.stderr
    for service in ("pg-auto", "maria-auto"):
        failed = auto.wait_events("db.user.provisioned", 1, user="erin", db_service=service)
        assert failed[0]["success"] is False
        assert "not managed by Limen" in failed[0]["reason"]
        start = auto.wait_events("db.session.start", 1, user="erin", db_service=service)
        assert start[-1]["success"] is False
    assert env.pg.sql("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'erin'") == "t"
    assert _pg_memberships(env, "erin") == ""
    assert "ACCOUNT LOCK" not in env.maria.sql("SHOW CREATE USER 'erin'@'%'")
    assert env.maria.sql("SELECT count(*) FROM mysql.roles_mapping WHERE User = 'erin'") == "0"


def test_another_database_user_than_ones_own_name_is_refused(auto: AutoEnv) -> None:
    as_erin = auto.carol.psql(f"{PG_SERVICE} user=erin", "-c", "select 1", check=False)
    assert as_erin.returncode != 0
    assert "connect as your own name" in as_erin.stderr
    refused = auto.wait_events("db.session.start", 1, user="carol", db_user="erin",
                               success=False)
    assert "own name" in refused[0]["reason"]


# -- create_db_user without db_users: the own name -----------------------------------------

OWN_NAME_ROLES = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: db-auto-own}
spec:
  options: {create_db_user: true}
  allow:
    db_labels: {auto-users: "on"}
    db_names: ["*"]
    db_roles: [auto_reader_a]
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: ivo-extra}
spec:
  deny:
    db_names: [never-used]
"""
IVO_DENIED = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: ivo-extra}
spec:
  deny:
    db_users: [ivo]
"""


@pytest.fixture(scope="module")
def own(auto: AutoEnv) -> tuple[DBPerson, DBPerson]:
    """hana (``db-auto-own``) and ivo (also ``ivo-extra``), each with database certificates
    for pg-auto and maria-auto, logged in with no ``--db-user``."""
    cluster = auto.env.cluster
    cluster.lmctl("apply", "-f", "-", input=OWN_NAME_ROLES)
    hana = DBPerson(cluster.signed_up_user("hana", roles=["db-auto-own"]))
    ivo = DBPerson(cluster.signed_up_user("ivo", roles=["db-auto-own", "ivo-extra"]))
    for person in (hana, ivo):
        person.user.login()
        person.db_login("pg-auto", "--db-name", "auto")
        person.db_login("maria-auto")
    return hana, ivo


def test_create_db_user_needs_no_db_users_the_user_connects_as_its_own_name(
        auto: AutoEnv, own: tuple[DBPerson, DBPerson]) -> None:
    hana = own[0]
    listed = json.loads(hana.lmsh("db", "ls", "-o", "json").stdout)["items"]
    assert {d["name"]: d["db_users"] for d in listed
            if d["name"] in ("pg-auto", "maria-auto")} == {"pg-auto": ["hana"],
                                                          "maria-auto": ["hana"]}
    assert hana.pg_service("dbtest-pg-auto")["user"] == "hana"
    out = hana.psql(PG_SERVICE, "-c", "select current_user, v from ta")
    assert out.stdout.strip() == "hana|row of a"
    created = auto.wait_events("db.user.provisioned", 1, user="hana", db_service="pg-auto")
    assert created[0]["success"] is True
    assert created[0]["created"] is True
    assert created[0]["granted"] == ["auto_reader_a"]
    start = auto.wait_events("db.session.start", 1, user="hana", db_service="pg-auto")
    assert start[0]["success"] is True
    assert start[0]["db_user"] == "hana"
    query = auto.wait_events("db.session.query", 1, user="hana", db_service="pg-auto")
    assert "select current_user, v from ta" in query[0]["query"]
    auto.wait_events("db.user.deactivated", 1, user="hana", db_service="pg-auto")
    assert _pg_memberships(auto.env, "hana") == "limen-auto-users"
    # MariaDB, with a USE the agent decides with the own name too
    maria = run(["mariadb", f"--defaults-group-suffix={MARIA_GROUP}", "-N", "-B", "-e",
                 "use auto; select current_user(), v from ta"], env=hana.env)
    assert maria.stdout.strip() == "hana@%\trow of a"
    used = auto.wait_events("db.session.query", 2, user="hana", db_service="maria-auto")
    assert any(str(e.get("query", "")).lower() in ("auto", "use auto") for e in used)


def test_create_db_user_without_db_users_refuses_another_database_user(
        auto: AutoEnv, own: tuple[DBPerson, DBPerson]) -> None:
    hana = own[0]
    as_carol = hana.psql(f"{PG_SERVICE} user=carol", "-c", "select 1", check=False)
    assert as_carol.returncode != 0
    assert "connect as your own name ('hana'), not 'carol'" in as_carol.stderr
    refused = auto.wait_events("db.session.start", 1, user="hana", db_user="carol",
                               success=False)
    assert "connect as your own name" in refused[0]["reason"]
    mysql = run(["mariadb", f"--defaults-group-suffix={MARIA_GROUP}", "--user=erin", "-e",
                 "select 1"], env=hana.env, check=False)
    assert mysql.returncode != 0
    assert "connect as your own name ('hana'), not 'erin'" in mysql.stderr
    auto.wait_events("db.session.start", 1, user="hana", db_user="erin", success=False)
    # nothing was created for the names asked for
    assert auto.events("db.user.provisioned", user="hana", db_user="carol") == []


def test_a_deny_rule_on_the_own_name_refuses(auto: AutoEnv,
                                             own: tuple[DBPerson, DBPerson]) -> None:
    ivo = own[1]
    cluster = auto.env.cluster
    cluster.lmctl("apply", "-f", "-", input=IVO_DENIED)

    def refused() -> Any:
        result = ivo.psql(PG_SERVICE, "-c", "select 1", check=False)
        return result if result.returncode != 0 else None

    result = wait_for(refused, 15.0, "the deny rule on ivo's own name to apply")
    assert "role 'ivo-extra' denies database user 'ivo'" in result.stderr
    event = auto.wait_events("db.session.start", 1, user="ivo", success=False)
    assert "denies database user 'ivo'" in event[-1]["reason"]
    maria = run(["mariadb", f"--defaults-group-suffix={MARIA_GROUP}", "-e", "select 1"],
                env=ivo.env, check=False)
    assert maria.returncode != 0
    assert "denies database user 'ivo'" in maria.stderr
    # the listing and lmsh db login follow: no database user is left for ivo
    listed = json.loads(ivo.lmsh("db", "ls", "-o", "json").stdout)["items"]
    assert "pg-auto" not in {d["name"] for d in listed}


# -- crafted names -------------------------------------------------------------------------

CRAFTED_PG = 'evil"; DROP TABLE ta; --'
CRAFTED_MARIA = "evil'; DROP TABLE auto.ta; --"
CRAFTED_ROLE = 'auto_reader_a"; GRANT auto_reader_b TO x; --'


def test_a_session_through_another_agent_keeps_the_user_enabled(auto: AutoEnv) -> None:
    """Each db agent counts only its own sessions: before disabling a user, the agent asks
    the server (pg_stat_activity) whether another one holds a session of it. Here the other
    agent's session is a direct login of carol over the server's socket."""
    env = auto.env
    service = auto.carol.pg_service("dbtest-pg-auto")
    conninfo = " ".join(f"{k}={v}" for k, v in service.items())
    kept = len(auto.events("db.user.deactivated", user="carol", db_service="pg-auto",
                           success=False))
    with psycopg.connect(conninfo, autocommit=True) as through_limen:
        assert through_limen.execute("select v from ta").fetchone() == ("row of a",)
        other = psycopg.connect(host=str(env.pg.root), port=env.pg.port, user="carol",
                                dbname="auto", autocommit=True)
    try:  # the Limen session has ended; the other one is open
        left = auto.wait_events("db.user.deactivated", kept + 1, user="carol",
                                db_service="pg-auto", success=False)
        assert left[-1]["in_use"] == 1
        assert "left enabled" in left[-1]["reason"]
        assert env.pg.sql("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'carol'") == "t"
        assert other.execute("select v from ta").fetchone() == ("row of a",)
    finally:
        other.close()
    done = len(auto.events("db.user.deactivated", user="carol", db_service="pg-auto",
                           success=True))
    assert auto.carol.psql(PG_SERVICE, "-c", "select 'last'").stdout.strip() == "last"
    auto.wait_events("db.user.deactivated", done + 1, user="carol", db_service="pg-auto",
                     success=True)
    assert env.pg.sql("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'carol'") == "f"


@pytest.fixture(scope="module")
def test_ca_trusted(auto: AutoEnv) -> Iterator[UpstreamCerts]:
    """Both servers also trust a CA of this test for client certificates (restored after):
    the provisioners run here with a crafted user name no Limen user could have."""
    env = auto.env
    ca = CertAuthority.generate("auto-users-test", CertAuthorityType.DB)
    ca_pem = ca.pem_bundle().encode()
    servers: tuple[PostgresServer | MariaDBServer, ...] = (env.pg, env.maria)
    saved = [server.tls_config for server in servers]
    limen_db_ca = Path(f"{env.server_files}.cas").read_bytes()

    async def issue(db_user: str, public_key_pem: str) -> tuple[bytes, bytes]:
        cert = sign_db_client_cert(ca, public_key_pem, db_user, timedelta(minutes=10),
                                   now=datetime.now(UTC))
        return cert.public_bytes(Encoding.PEM), limen_db_ca

    for server, config in zip(servers, saved, strict=True):
        assert config is not None
        server.configure_tls(config[0], config[1], [*config[2], ca_pem])
    try:
        yield UpstreamCerts(issue)
    finally:
        for server, config in zip(servers, saved, strict=True):
            assert config is not None
            server.configure_tls(*config[:2], list(config[2]))


def _target(port: int) -> UpstreamTarget:
    return UpstreamTarget("127.0.0.1", port, "verify-full", "", "127.0.0.1")


def test_a_crafted_user_name_reaches_postgres_only_quoted(
        auto: AutoEnv, test_ca_trusted: UpstreamCerts) -> None:
    env = auto.env

    def roles() -> set[str]:
        with psycopg.connect(env.pg.admin_dsn) as conn:
            return {row[0] for row in conn.execute("SELECT rolname FROM pg_roles")}

    before = roles()

    async def provision() -> None:
        target = _target(env.pg.port)
        context = await test_ca_trusted.context(target, "limen-admin")
        admin = await PostgresAdmin.connect(target, context, "limen-admin", "auto")
        async with admin:
            await provisioning_postgres.activate(admin, CRAFTED_PG, ["auto_reader_a"])
            with pytest.raises(Exception, match="does not exist"):
                await provisioning_postgres.activate(admin, CRAFTED_PG, [CRAFTED_ROLE])

    asyncio.run(provision())
    assert roles() - before - {"limen-auto-users"} == {CRAFTED_PG}
    assert env.pg.sql("SELECT count(*) FROM ta", "auto") == "1"
    with psycopg.connect(env.pg.admin_dsn) as conn:
        granted = conn.execute(
            "SELECT g.rolname FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid "
            "JOIN pg_roles u ON u.oid = a.member WHERE u.rolname = %s ORDER BY 1",
            (CRAFTED_PG,)).fetchall()
    assert [r[0] for r in granted] == ["auto_reader_a", "limen-auto-users"]


def test_mariadb_keeps_an_account_another_agent_has_a_connection_of(
        auto: AutoEnv, test_ca_trusted: UpstreamCerts) -> None:
    """The MariaDB provisioner leaves an account unlocked while the server lists another
    connection of it (information_schema.PROCESSLIST, seen with the PROCESS privilege), and
    locks it once that connection is gone."""
    env = auto.env
    target = _target(env.maria.port)
    user = "dana-two-agents"

    async def provisioner(step: str) -> Any:
        context = await test_ca_trusted.context(target, "limen-admin")
        admin = await MySQLAdmin.connect(target, context, "limen-admin", "")
        async with admin:
            if step == "activate":
                return await provisioning_mysql.activate(admin, user, ["auto_reader_a"])
            return await provisioning_mysql.deactivate(admin, user)

    asyncio.run(provisioner("activate"))
    other = pymysql.connect(  # another agent's connection: the user's certificate, TLS
        host="127.0.0.1", port=env.maria.port, user=user, database="auto",
        ssl=asyncio.run(test_ca_trusted.context(target, user)))
    try:
        change = asyncio.run(provisioner("deactivate"))
        assert change.in_use == 1
        assert change.revoked == ()
        assert "ACCOUNT LOCK" not in env.maria.sql(f"SHOW CREATE USER '{user}'@'%'")
    finally:
        other.close()
    change = asyncio.run(provisioner("deactivate"))
    assert change.in_use == 0
    assert change.revoked == ("auto_reader_a",)
    assert "ACCOUNT LOCK" in env.maria.sql(f"SHOW CREATE USER '{user}'@'%'")


def test_a_crafted_user_name_reaches_mariadb_only_quoted(
        auto: AutoEnv, test_ca_trusted: UpstreamCerts) -> None:
    env = auto.env

    def accounts() -> set[str]:
        conn = pymysql.connect(unix_socket=str(env.maria.socket), user="root")
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT User FROM mysql.user")
                return {str(row[0]) for row in cursor.fetchall()}
        finally:
            conn.close()

    before = accounts()

    async def provision() -> None:
        target = _target(env.maria.port)
        context = await test_ca_trusted.context(target, "limen-admin")
        admin = await MySQLAdmin.connect(target, context, "limen-admin", "")
        async with admin:
            await provisioning_mysql.activate(admin, CRAFTED_MARIA, ["auto_reader_a"])

    asyncio.run(provision())
    assert accounts() - before - {"limen-auto-users"} == {
        CRAFTED_MARIA, provisioning_mysql.user_role(CRAFTED_MARIA)}
    assert env.maria.sql("SELECT count(*) FROM ta", "auto") == "1"
