"""A rotation of the database CA through real PostgreSQL 15 and MariaDB servers.

At each phase the servers trust exactly what ``lmctl auth export --type db-client`` prints
(PostgreSQL's ``ssl_ca_file``, MariaDB's ``ssl-ca``; reloaded), as a DBA following the
rotation would: ``psql`` and ``mariadb`` through Limen work in every phase (init,
update_clients, update_servers with server certificates signed again, standby), a ``psql``
session opened before the rotation keeps working through all of it, after standby the export
no longer holds the old CA; a rollback makes the old key sign again (the db agent re-issues its
cached upstream certificates: the servers then trusting the old CA only still take it). The
TLS CA's rotation is refused with the reason, and every change (and that refusal) is audited.

The cluster, its db agent and the servers are this module's own (the shared ``db_env`` must
not see its DB CA change).
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from dbservers import start_mariadb, start_postgres

from .cluster import LimenCluster, run, wait_for
from .db_env import DBEnv, start_db_env

SERVICE = "service=dbtest-pg-main"
APART_SERVICE = "service=dbtest-pg-apart"
MARIA_GROUP = "-dbtest-maria-main"
ANSWER_TIMEOUT = 15.0
FOLLOW_TIMEOUT = 15.0
"""An agent apart from auth hears of a phase change when its proxy pushes auth's trust
answer (about a second and a half; docs/ca-rotation.md)."""
APART_RESOURCE = """
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: pg-apart, labels: {{env: dev, served-by: apart}}}}
spec: {{kind: db, protocol: postgres, address: "127.0.0.1:{port}", database: app}}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DBEnv]:
    root = tmp_path_factory.mktemp("rotation-db")
    with start_postgres(root / "pg") as pg, start_mariadb(root / "maria") as maria:
        (root / "env").mkdir()
        for db_env in start_db_env(root / "env", pg, maria):
            with _agent_apart(db_env, root / "apart"):
                for name in ("pg-main", "maria-main", "pg-apart"):
                    db_env.alice.db_login(name, "--db-user", "alice", "--db-name", "app")
                yield db_env


@contextlib.contextmanager
def _agent_apart(env: DBEnv, root: Path) -> Iterator[LimenCluster]:
    """A db agent apart from auth serving ``pg-apart`` (the same PostgreSQL server): it hears
    of the rotation through auth's trust answer, not from auth's memory."""
    root.mkdir()
    (root / "pg-apart.yaml").write_text(APART_RESOURCE.format(port=env.pg.port))
    env.cluster.lmctl("apply", "-f", root / "pg-apart.yaml")
    token = env.cluster.lmctl_json("tokens", "add", "--type", "db", "--ttl", "5m")
    (root / "agent.yaml").write_text('db: {resources: [{labels: {served-by: apart}}]}\n')
    agent = LimenCluster(root / "agent", "dbtest", [
        "--roles", "db", "-c", str(root / "agent.yaml"), "--proxy", env.cluster.web,
        "--token", token["token"], "--ca-pin", token["ca_pin"]])
    try:
        agent.start()
        wait_for(lambda: "pg-apart" in {d["name"] for d in json.loads(env.alice.lmsh(
            "db", "ls", "-o", "json").stdout)["items"]}, 30.0, "the agent apart's heartbeat")
        yield agent
    finally:
        try:
            agent.stop()
        finally:
            agent.kill()


class OpenPsql:
    """A ``psql`` session kept open: queries written to its stdin, answers read by a thread."""

    def __init__(self, env: DBEnv) -> None:
        self.process = subprocess.Popen(
            ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", SERVICE],
            env=env.alice.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def ask(self, marker: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(f"select 'open-' || '{marker}';\n")
        self.process.stdin.flush()
        return self.lines.get(timeout=ANSWER_TIMEOUT)

    def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(timeout=ANSWER_TIMEOUT)
        self._reader.join(ANSWER_TIMEOUT)
        self.process.stdout.close()


def export(env: DBEnv) -> tuple[bytes, list[x509.Certificate], str]:
    """What ``lmctl auth export --type db-client`` prints (stdout), its certificates, and what
    it says on stderr."""
    result = env.cluster.lmctl("auth", "export", "--type", "db-client")
    return (result.stdout.encode(), x509.load_pem_x509_certificates(result.stdout.encode()),
            result.stderr)


def rotate(env: DBEnv, *args: str) -> str:
    return env.cluster.lmctl("auth", "rotate", "--type", "db", *args).stdout


def trust(env: DBEnv, client_cas: bytes, server: Path | None = None) -> None:
    """The servers trust ``client_cas`` for client certificates (and present the server
    certificate under the prefix ``server``, default the current one); waits until
    PostgreSQL has reloaded (MariaDB's FLUSH SSL is synchronous)."""
    pg_cert, pg_key, _ = env.pg.tls_config or (b"", b"", ())
    if server is not None:
        pg_cert, pg_key = (Path(f"{server}.{ext}").read_bytes() for ext in ("crt", "key"))
    loaded = env.pg.sql("select pg_conf_load_time()")
    env.pg.configure_tls(pg_cert, pg_key, [client_cas])
    wait_for(lambda: env.pg.sql("select pg_conf_load_time()") != loaded, 10.0,
             "PostgreSQL to reload its configuration")
    env.maria.configure_tls(pg_cert, pg_key, [client_cas])


def through_limen(env: DBEnv, marker: str) -> None:
    """A new ``psql`` and a new ``mariadb`` connection through Limen answer (through the db
    agent in the cluster's process), and a new ``psql`` through the agent apart once it has
    followed the phase."""
    result = env.alice.psql(SERVICE, "-c", f"select 'pg-' || '{marker}'")
    assert result.stdout.strip() == f"pg-{marker}"
    result = run(["mariadb", f"--defaults-group-suffix={MARIA_GROUP}", "-N", "-B", "-e",
                  f"select concat('maria-', '{marker}')"], env=env.alice.env)
    assert result.stdout.strip() == f"maria-{marker}"
    wait_for(lambda: env.alice.psql(APART_SERVICE, "-c", f"select 'apart-' || '{marker}'",
                                    check=False).stdout.strip() == f"apart-{marker}",
             FOLLOW_TIMEOUT, f"psql through the agent apart ({marker})")


def db_rotations(env: DBEnv) -> list[dict[str, Any]]:
    return [e for e in env.cluster.audit("ca.rotation") if e.get("ca_type") == "db"]


def test_a_full_db_ca_rotation_keeps_every_connection_working(env: DBEnv) -> None:
    before, (old_ca,), _ = export(env)
    trust(env, before)
    through_limen(env, "standby")
    session = OpenPsql(env)
    try:
        assert session.ask("before") == "open-before"

        said = rotate(env, "--manual")
        assert "phase init" in said
        assert "ssl_ca_file" in said  # the DBA is told to trust both now
        bundle, cas, warning = export(env)
        assert len(cas) == 2
        assert old_ca in cas
        assert "ssl_ca_file" in warning
        (new_ca,) = [c for c in cas if c != old_ca]
        trust(env, bundle)
        through_limen(env, "init")
        assert session.ask("init") == "open-init"

        assert "phase update_clients" in rotate(env, "--phase", "update_clients")
        bundle, cas, _ = export(env)
        assert cas == [new_ca, old_ca]
        trust(env, bundle)
        through_limen(env, "update-clients")
        assert session.ask("update-clients") == "open-update-clients"

        said = rotate(env, "--phase", "update_servers")
        assert "lmctl auth sign --format db" in said
        server = env.server_files.with_name("server-rotated")
        env.cluster.lmctl("auth", "sign", "--format", "db", "--host", "localhost,127.0.0.1",
                          "--out", server)
        signed = x509.load_pem_x509_certificate(Path(f"{server}.crt").read_bytes())
        signed.verify_directly_issued_by(new_ca)
        bundle, cas, _ = export(env)
        trust(env, bundle, server)
        through_limen(env, "update-servers")
        assert session.ask("update-servers") == "open-update-servers"

        assert "phase standby" in rotate(env, "--phase", "standby")
        bundle, cas, warning = export(env)
        assert cas == [new_ca]  # the old CA left the export
        assert warning == ""
        trust(env, bundle)
        through_limen(env, "standby-new")  # the agent's certificates: the new key's
        assert session.ask("after") == "open-after"  # opened before the rotation
    finally:
        session.close()
    assert "CA db rotation: standby" in env.cluster.lmctl("status").stdout
    moves = [(e["from"], e["to"]) for e in db_rotations(env) if e.get("success", True)]
    assert moves[-4:] == [("standby", "init"), ("init", "update_clients"),
                          ("update_clients", "update_servers"), ("update_servers", "standby")]


def test_rollback_makes_the_old_key_sign_again(env: DBEnv) -> None:
    before, (old_ca,), _ = export(env)
    rotate(env, "--manual")
    bundle, _, _ = export(env)
    trust(env, bundle)
    rotate(env, "--phase", "update_clients")
    through_limen(env, "rollback-new")  # the agent caches a certificate of the new key
    assert "CA db rotation: update_clients" in env.cluster.lmctl("status").stdout

    assert "phase rollback" in rotate(env, "--rollback")
    assert len(export(env)[1]) == 2  # the new CA stays trusted until standby
    trust(env, before)  # the servers trust the old CA only: the agent must use its key again
    through_limen(env, "rollback-old")

    rotate(env, "--phase", "standby")
    after, cas, _ = export(env)
    assert cas == [old_ca]
    assert after == before
    through_limen(env, "rollback-standby")
    assert [(e["from"], e["to"]) for e in db_rotations(env)][-2:] == [
        ("update_clients", "rollback"), ("rollback", "standby")]


def test_the_tls_ca_is_refused_with_the_reason(env: DBEnv) -> None:
    result = env.cluster.lmctl("auth", "rotate", "--type", "tls", "--manual", check=False)
    assert result.returncode != 0
    assert "tls CA is not rotated by phases" in result.stderr
    assert "joining the processes again" in result.stderr
    refused = wait_for(lambda: [e for e in env.cluster.audit("ca.rotation")
                                if e.get("ca_type") == "tls" and e.get("success") is False],
                       10.0, "the refusal's audit event")
    assert "not rotated by phases" in refused[-1]["reason"]
