"""A db agent run apart from auth (``limen start --roles db --token T --ca-pin P --proxy
WEB``), reached only through its reverse tunnel: it joins, heartbeats the databases its
selectors match, serves psql sessions; killed with SIGKILL in the middle of a query, the
client gets a clean error at once and, once the agent is back, connects again; a restart of
the database itself ends the session with PostgreSQL's own error and the next connection
works.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import LimenCluster, wait_for
from .db_env import DBEnv

SERVICE = "service=dbtest-pg-apart"
RESOURCE = """
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: pg-apart, labels: {{env: dev, served-by: apart}}}}
spec: {{kind: db, protocol: postgres, address: "127.0.0.1:{port}", database: app}}
"""


@pytest.fixture
def agent(db_env: DBEnv, tmp_path: Path) -> Iterator[LimenCluster]:
    resource = tmp_path / "pg-apart.yaml"
    resource.write_text(RESOURCE.format(port=db_env.pg.port))
    db_env.cluster.lmctl("apply", "-f", resource)
    token = db_env.cluster.lmctl_json("tokens", "add", "--type", "db", "--ttl", "5m")
    config = tmp_path / "agent.yaml"
    config.write_text('db: {resources: [{labels: {served-by: apart}}]}\n')
    process = LimenCluster(tmp_path / "agent", "dbtest", [
        "--roles", "db", "-c", str(config), "--proxy", db_env.cluster.web,
        "--token", token["token"], "--ca-pin", token["ca_pin"]])
    try:
        yield process.start()
    finally:
        try:
            process.stop()
        finally:
            process.kill()
            db_env.cluster.lmctl("rm", "resource/pg-apart")


def _listed(env: DBEnv) -> set[str]:
    return {d["name"] for d in json.loads(env.alice.lmsh("db", "ls", "-o", "json").stdout)
            ["items"]}


def test_an_agent_apart_serves_survives_sigkill_and_a_database_restart(
        db_env: DBEnv, agent: LimenCluster) -> None:
    env = db_env
    wait_for(lambda: "pg-apart" in _listed(env), 30.0, "the agent's heartbeat of pg-apart")
    env.alice.db_login("pg-apart", "--db-user", "alice")
    assert env.alice.psql(SERVICE, "-c", "select current_database()").stdout.strip() == "app"
    served = env.wait_audit("db.session.start", "the session", db_service="pg-apart")
    assert not served[0]["server_id"].endswith("-db")  # the agent apart, not the cluster's

    running = subprocess.Popen(["psql", "-X", SERVICE, "-c", "select pg_sleep(60)"],
                               env=env.alice.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: env.pg.sql("select count(*) from pg_stat_activity where query = "
                                    "'select pg_sleep(60)'") == "1", 15.0, "the query")
        assert agent.process is not None
        agent.process.send_signal(signal.SIGKILL)
        _, err = running.communicate(timeout=15)
    finally:
        running.kill()
    assert running.returncode != 0
    assert re.search(r"closed (the connection|unexpectedly)|terminat", err), err
    agent.kill()

    agent.start()
    wait_for(lambda: env.alice.psql(SERVICE, "-c", "select 1", check=False).returncode == 0,
             30.0, "the restarted agent to serve pg-apart again")

    cut = subprocess.Popen(["psql", "-X", SERVICE, "-c", "select pg_sleep(61)"],
                           env=env.alice.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        wait_for(lambda: env.pg.sql("select count(*) from pg_stat_activity where query = "
                                    "'select pg_sleep(61)'") == "1", 15.0, "the query")
        env.pg.restart()
        _, err = cut.communicate(timeout=30)
    finally:
        cut.kill()
    assert cut.returncode != 0
    assert re.search(r"closed (the connection|unexpectedly)|terminat", err), err
    assert env.alice.psql(SERVICE, "-c", "select 'back'").stdout.strip() == "back"
