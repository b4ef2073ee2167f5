"""A Limen cluster with a db agent in front of the real PostgreSQL and MariaDB test servers,
shared by the database end-to-end tests of one module (``db_env`` fixture).

::

    psql / mysql / psycopg / PyMySQL ──▶ proxy fronts (5433/3036 on random ports)
        ──▶ reverse tunnel ──▶ db agent (in the cluster process, --roles ...,db)
        ──▶ PostgreSQL 15 / MariaDB 10.11 (tests/dbservers.py), trusting only the cluster's
            database CA, with server certificates from ``lmctl auth sign --format db``

The databases are declared as Resources with ``lmctl apply`` (dynamic registration: the
cluster's own db agent serves those labelled ``served-by: cluster``). People: ``alice``
(role ``db-dev``: db users alice, db names app and postgres, on ``env: dev``) and ``bob``
(role ``db-bob``: db user bob only). A person's client configuration
(``~/.pg_service.conf``, ``~/.my.cnf``) lives in the HOME the tests give their commands:
:meth:`DBPerson.env`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbservers import MariaDBServer, PostgresServer

from .cluster import LimenCluster, LimenUser, command, run, wait_for

ROLES = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: db-dev}
spec:
  allow:
    db_labels: {env: dev}
    db_users: [alice]
    db_names: [app, postgres]
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: db-bob}
spec:
  allow:
    db_labels: {env: dev}
    db_users: [bob]
    db_names: ["*"]
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: no-prod}
spec:
  deny:
    db_labels: {tier: prod}
"""


CLUSTER_CONFIG = """
db:
  resources: [{labels: {served-by: cluster}}]   # the db agent inside the cluster process
"""


def databases(pg: PostgresServer, maria: MariaDBServer) -> str:
    return f"""
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: pg-main, labels: {{env: dev, engine: postgres, served-by: cluster}}}}
spec: {{kind: db, protocol: postgres, address: "127.0.0.1:{pg.port}",
        description: PostgreSQL 15 of the tests}}
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: pg-prod, labels: {{env: dev, tier: prod, served-by: cluster}}}}
spec: {{kind: db, protocol: postgres, address: "127.0.0.1:{pg.port}"}}
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: maria-main, labels: {{env: dev, engine: mariadb, served-by: cluster}}}}
spec: {{kind: db, protocol: mysql, address: "127.0.0.1:{maria.port}", database: app}}
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: maria-infile, labels: {{env: dev, engine: mariadb, served-by: cluster}}}}
spec: {{kind: db, protocol: mysql, address: "127.0.0.1:{maria.port}", database: app,
        mysql: {{allow_local_infile: true}}}}
"""


@dataclass
class DBPerson:
    user: LimenUser

    @property
    def env(self) -> dict[str, str]:
        return {**self.user.env, "HOME": str(self.user.home),
                "PGSERVICEFILE": str(self.user.home / ".pg_service.conf")}

    def lmsh(self, *args: str, check: bool = True, input: str | None = None) -> Any:
        return run([command("lmsh"), *args], env=self.env, check=check, input=input)

    def db_login(self, name: str, *args: str) -> None:
        self.lmsh("db", "login", name, *args)

    def psql(self, conninfo: str, *args: str, check: bool = True,
             input: str | None = None) -> Any:
        """``psql -X -At CONNINFO ARGS`` (``service=NAME`` and any libpq keywords)."""
        return run(["psql", "-X", "-v", "ON_ERROR_STOP=1", conninfo, "-At", *args],
                   env=self.env, check=check, input=input)

    def pg_service(self, service: str) -> dict[str, str]:
        """The libpq parameters of ``service`` from the file lmsh wrote."""
        out: dict[str, str] = {}
        section = None
        for line in (self.user.home / ".pg_service.conf").read_text().splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line.strip("[]")
            elif section == service and "=" in line:
                key, _, value = line.partition("=")
                out[key.strip()] = value.strip()
        return out


@dataclass
class DBEnv:
    cluster: LimenCluster
    pg: PostgresServer
    maria: MariaDBServer
    alice: DBPerson
    bob: DBPerson
    server_files: Path

    def audit(self, event_type: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.cluster.audit(event_type)
                if all(e.get(k) == v for k, v in match.items())]

    def wait_audit(self, event_type: str, what: str, **match: Any) -> list[dict[str, Any]]:
        return wait_for(lambda: self.audit(event_type, **match), 10.0, what)


def start_db_env(root: Path, pg: PostgresServer, maria: MariaDBServer) -> Iterator[DBEnv]:
    config = root / "limen.yaml"
    config.write_text(CLUSTER_CONFIG)
    cluster = LimenCluster(root / "cluster", "dbtest",
                           ["--roles", "auth,proxy,node,db", "-c", str(config),
                            "--diag-addr", "127.0.0.1:0"])  # test_db_metrics reads it
    files = root / "resources"
    files.mkdir()
    (files / "roles.yaml").write_text(ROLES)
    (files / "dbs.yaml").write_text(databases(pg, maria))
    # applied offline before the first start, so that the db agent's first heartbeat already
    # carries the databases (applied after, it waits for the next one, ~10 s)
    cluster.lmctl("apply", "-f", files)
    cluster.start()
    try:
        server = root / "server"
        cluster.lmctl("auth", "sign", "--format", "db", "--host", "localhost,127.0.0.1",
                      "--out", server)
        cert, key, cas = (Path(f"{server}.{ext}").read_bytes() for ext in ("crt", "key", "cas"))
        pg.configure_tls(cert, key, [cas])
        maria.configure_tls(cert, key, [cas])
        for name in ("alice", "bob"):
            pg.create_user(name)
            maria.create_user(name, grant_all_on="app")
        pg.create_database("app", owner="alice")
        maria.create_database("app")
        maria.create_database("secret")
        alice = DBPerson(cluster.signed_up_user("alice", roles=["db-dev", "no-prod"]))
        bob = DBPerson(cluster.signed_up_user("bob", roles=["db-bob"]))
        for person in (alice, bob):
            person.user.login()
        wait_for(lambda: {d["name"] for d in json.loads(
            alice.lmsh("db", "ls", "-o", "json").stdout)["items"]} >= {"pg-main", "maria-main"},
            30.0, "the db agent to heartbeat the declared databases")
        yield DBEnv(cluster, pg, maria, alice, bob, server)
    finally:
        try:
            cluster.stop()
        finally:
            cluster.kill()


