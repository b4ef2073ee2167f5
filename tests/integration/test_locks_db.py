"""Locks on a database session, end to end (the shared ``db_env``: the real PostgreSQL behind
the cluster's db agent): ``lmctl lock --user`` ends a running ``psql`` of a ``lock: strict``
user within 2 s, with the reason, audited with the lock's name; a new session is refused with
``locked: <message>``; a lock on a role refuses its users' new sessions; removing the lock
restores access. Other users' sessions are untouched (the shared env's alice and bob)."""

from __future__ import annotations

import subprocess
import time

from .cluster import describe, wait_for
from .db_env import DBEnv, DBPerson

SERVICE = "service=dbtest-pg-main"
ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: db-lock-strict}
spec:
  options: {lock: strict}
  allow:
    db_labels: {env: dev}
    db_users: [alice]
    db_names: [app]
"""


def _person(env: DBEnv, name: str) -> DBPerson:
    env.cluster.lmctl("apply", "-f", "-", input=ROLE)
    person = DBPerson(env.cluster.signed_up_user(name, roles=["db-lock-strict"]))
    person.user.login()
    person.db_login("pg-main", "--db-user", "alice", "--db-name", "app")
    return person


def test_a_lock_ends_a_running_psql_and_refuses_new_sessions(db_env: DBEnv) -> None:
    dora = _person(db_env, "dora")
    running = subprocess.Popen(
        ["psql", "-X", SERVICE, "-At", "-c", "select 'running'", "-c", "select pg_sleep(20)"],
        env=dora.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True)
    try:
        assert running.stdout is not None
        assert running.stdout.readline() == "running\n"
        name = db_env.cluster.lmctl("lock", "--user", "dora", "--message", "audit 12").stdout
        locked_at = time.monotonic()
        wait_for(lambda: running.poll() is not None, 2.0, "psql to be ended")
        assert time.monotonic() - locked_at <= 2.0
        _, err = running.communicate()
        assert "Limen ended the session: locked: audit 12" in err
        [ended] = db_env.wait_audit("access.denied", "the ending", user="dora",
                                    lock=name.strip())
        assert ended["db_service"] == "pg-main"
        assert ended["mode"] == "strict"
        refused = dora.psql(SERVICE, "-c", "select 1", check=False)
        assert refused.returncode != 0, describe(refused)
        assert "locked: audit 12" in refused.stderr
        db_env.wait_audit("db.session.start", "the refused start", user="dora")
        db_env.alice.db_login("pg-main", "--db-user", "alice", "--db-name", "app")
        assert db_env.alice.psql(SERVICE, "-c", "select 'alice still'").stdout.strip() == \
            "alice still"
        db_env.cluster.lmctl("rm", f"lock/{name.strip()}")
        assert dora.psql(SERVICE, "-c", "select 'back'").stdout.strip() == "back"
    finally:
        running.kill()
        running.communicate()


def test_a_role_lock_refuses_the_roles_users(db_env: DBEnv) -> None:
    erik = _person(db_env, "erik")
    name = db_env.cluster.lmctl("lock", "--role", "db-lock-strict").stdout.strip()
    try:
        refused = erik.psql(SERVICE, "-c", "select 1", check=False)
        assert refused.returncode != 0
        assert f"locked: lock {name} on role=db-lock-strict" in refused.stderr
    finally:
        db_env.cluster.lmctl("rm", f"lock/{name}")
