"""Database sessions in the metrics of the cluster process (auth, proxy and the db agent in
one ``limen start --diag-addr``, the shared ``db_env``): a psql session through the proxy's
PostgreSQL front counts as a started session of protocol ``postgres`` and an allowed ``db``
decision, its end leaves no session active and adds its bytes both ways; a database the roles
do not grant counts as a denied ``db`` decision."""

from __future__ import annotations

from .cluster import wait_for
from .db_env import DBEnv
from .diag_scrape import Samples, scrape, value

SERVICE = "service=dbtest-pg-main"


def _moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def _quiet(diag: str) -> Samples:
    """The metrics once no PostgreSQL session is open (the cluster is shared with other
    modules' tests: a session of theirs may still be ending)."""
    def no_session() -> Samples | None:
        now = scrape(diag)
        return now if value(now, "limen_sessions_active", protocol="postgres") == 0 else None
    return wait_for(no_session, 15.0, "no database session to be open")


def test_a_psql_session_moves_the_session_byte_and_decision_metrics(db_env: DBEnv) -> None:
    diag = db_env.cluster.listeners["diag"]
    db_env.alice.db_login("pg-main", "--db-user", "alice", "--db-name", "app")
    before = _quiet(diag)
    result = db_env.alice.psql(SERVICE, "-c", "select 'metrics-marker'")
    assert result.stdout.strip() == "metrics-marker"

    def ended() -> Samples | None:
        now = scrape(diag)
        return now if _moved(before, now, "limen_relayed_bytes_total", protocol="postgres",
                             direction="out") > 0 else None

    after = wait_for(ended, 15.0, "the db session's end in the metrics")
    assert _moved(before, after, "limen_sessions_total", protocol="postgres") == 1
    assert value(after, "limen_sessions_active", protocol="postgres") == 0
    assert _moved(before, after, "limen_relayed_bytes_total", protocol="postgres",
                  direction="in") > 0
    assert _moved(before, after, "limen_rbac_decisions_total", kind="db",
                  decision="allowed") >= 1
    assert _moved(before, after, "limen_audit_events_written_total", event="db.session.query",
                  outcome="success") >= 1


def test_a_refused_database_login_counts_as_a_denied_decision(db_env: DBEnv) -> None:
    diag = db_env.cluster.listeners["diag"]
    before = scrape(diag)
    refused = db_env.bob.lmsh("db", "login", "pg-main", "--db-user", "alice", check=False)
    assert refused.returncode != 0
    wait_for(lambda: _moved(before, scrape(diag), "limen_rbac_decisions_total", kind="db",
                            decision="denied") >= 1, 15.0, "the denied decision")
