"""Two auth replicas, active-active, on one PostgreSQL database (issue #17): two
``limen start --roles auth --gitops ...`` processes with the same ``limen.yaml`` (backend
postgres, the same ``ca_key_file``), each with its own data directory and ports, a proxy joined
to the second, and ``lmctl`` against each::

    lmctl ─▶ auth A ─┐                         ┌─ /secrets/ca/... sealed (AES-256-GCM)
                     ├─ PostgreSQL (one DB) ───┼─ users, roles, sign-up links, lockouts
    lmctl ─▶ auth B ─┘        ▲                └─ /leases/gitops-sync: one Git sync at a time
               ▲              │
     lmsh ─▶ proxy ───────────┘ (joined at B with the static proxy token)

A user added through A signs up and logs in through the proxy, which asks B; both replicas
report the same CA fingerprints; only one replica syncs (one ``gitops.sync`` per commit across
both audit logs), and when it is killed with SIGKILL the other applies the next commit within
10 seconds.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbservers import PostgresServer
from gitops_git import WorkTree, bare, role

from .cluster import LimenCluster, LimenUser, wait_for

TAKEOVER_DEADLINE = 10.0
"""The issue's promise: the next commit is applied this soon after the leader dies."""
DB_ROLE = "limen_ha_e2e"
CA_ROWS = ("SELECT count(*), count(*) FILTER (WHERE position('PRIVATE KEY'::bytea IN value) > 0)"
           " FROM {table} WHERE key LIKE '/secrets/ca/%'")
"""CA records in a backend table (current or historical), and those holding a PEM key."""


def _private(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def _database(server: PostgresServer) -> str:
    """A fresh database owned by an ordinary role; its DSN."""
    server.create_user(DB_ROLE)
    server.sql(f"DROP DATABASE IF EXISTS {DB_ROLE} WITH (FORCE)")
    server.sql(f"CREATE DATABASE {DB_ROLE} OWNER {DB_ROLE}")
    return f"host={server.root} port={server.port} user={DB_ROLE} dbname={DB_ROLE}"


def applied_by(auth: LimenCluster, sha: str) -> int:
    """How often ``auth``'s Git sync logged applying commit ``sha``."""
    return auth.output().count(f"gitops: applied {sha[:12]} ")


@dataclass
class HA:
    a: LimenCluster
    b: LimenCluster
    proxy: LimenCluster
    work: WorkTree
    first_commit: str
    database: PostgresServer

    @property
    def auths(self) -> tuple[LimenCluster, LimenCluster]:
        return self.a, self.b

    def leader(self) -> LimenCluster:
        """The replica named in the Git sync's status (the lease holder that wrote it)."""
        holder = str(self.a.lmctl_json("gitops", "status").get("leader", ""))
        for auth in self.auths:
            if holder.startswith((auth.data_dir / "host_uuid").read_text().strip() + "/"):
                return auth
        raise AssertionError(f"no replica holds the Git sync's lease (leader {holder!r})")

    def syncs(self, *auths: LimenCluster) -> dict[str, int]:
        """Successful gitops.sync events per commit across the audit of ``auths`` (an event
        both report, from a shared audit store, is counted once)."""
        events: dict[str, dict[str, Any]] = {}
        for auth in auths:
            for event in auth.audit("gitops.sync"):
                if event.get("success") is not False:
                    events[event["uid"]] = event
        counts: dict[str, int] = {}
        for event in events.values():
            counts[event["sha"]] = counts.get(event["sha"], 0) + 1
        return counts


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
       ) -> Iterator[HA]:
    root = tmp_path_factory.mktemp("ha")
    proxy_token = secrets.token_hex(24)
    config = root / "limen.yaml"
    config.write_text(yaml.safe_dump({
        "backend": {"type": "postgres",
                    "dsn_file": str(_private(root / "backend.dsn", _database(postgres_server))),
                    "ca_key_file": str(_private(root / "ca.key", secrets.token_hex(32)))},
        "auth": {"proxy_token_file": str(_private(root / "proxy-token", proxy_token))},
    }), encoding="utf-8")
    remote = bare(root / "access.git")
    work = WorkTree(root / "work", remote)
    work.write("roles/dev.yaml", role("dev", "ana"))
    first = work.commit("dev role")
    args = ["--roles", "auth", "-c", str(config), "--gitops", f"file://{remote}",
            "--gitops-interval", "1s"]
    a, b = LimenCluster(root / "a", "ha", args), LimenCluster(root / "b", "ha", args)
    started: list[LimenCluster] = []
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: [c.kill() for c in reversed(started)])
        started.append(a.start())
        started.append(b.start())
        pin = a.status()["ca_fingerprints"]["tls"]
        listeners = {name: "127.0.0.1:0"  # every listener a proxy opens, on a free port
                     for name in ("web", "ssh_proxy", "tunnel", "postgres", "mysql", "kube")}
        proxy_config = root / "proxy.yaml"
        proxy_config.write_text(yaml.safe_dump({"listeners": listeners}), encoding="utf-8")
        proxy = LimenCluster(root / "proxy", "ha", [
            "--roles", "proxy", "-c", str(proxy_config), "--auth-server", b.auth,
            "--token", proxy_token, "--ca-pin", pin], random_ports=False)
        started.append(proxy.start())
        yield HA(a, b, proxy, work, first, postgres_server)
        for cluster in reversed(started):
            if cluster.running:
                cluster.stop()


def test_both_replicas_serve_one_cluster_with_the_same_cas(ha: HA) -> None:
    a, b = ha.a.status(), ha.b.status()
    assert a["cluster"] == b["cluster"] == "ha"
    assert a["ca_fingerprints"] == b["ca_fingerprints"]
    assert sorted(a["ca_fingerprints"]) == ["db", "host", "jwt", "tls", "user"]
    stored = {table: ha.database.sql(CA_ROWS.format(table=table), DB_ROLE)
              for table in ("limen_backend_items", "limen_backend_events")}
    assert stored == {"limen_backend_items": "5|0", "limen_backend_events": "5|0"}, stored


def test_a_user_added_through_one_replica_logs_in_through_the_other(ha: HA) -> None:
    user = LimenUser("ana", ha.a.root / "users" / "ana", ha.proxy.web)
    user.signup(ha.a.add_user("ana", ["dev"], ["ana"])["url"])  # added at A
    user.login()  # the proxy asks B
    assert user.status()["user"] == "ana"
    logins = [e for e in ha.b.audit("user.login", user="ana") if e["success"]]
    assert logins, "B, behind the proxy, logged the login"
    assert ha.a.lmctl_json("get", "user/ana")["metadata"]["name"] == "ana"


def test_one_replica_syncs_and_the_other_takes_over_when_it_is_killed(ha: HA) -> None:
    ha.work.write("roles/ops.yaml", role("ops", "olga"))
    second = ha.work.commit("ops role")
    wait_for(lambda: (ha.b.lmctl_json("gitops", "status")["live"] or {}).get("sha") == second,
             15.0, "the second commit to be live")
    leader = ha.leader()
    survivor = ha.b if leader is ha.a else ha.a
    counts = ha.syncs(*ha.auths)
    assert counts.get(ha.first_commit) == 1, counts  # applied once, by one replica
    assert counts.get(second) == 1, counts
    assert applied_by(leader, second) == 1
    assert applied_by(survivor, second) == 0, "the standby replica synced too"

    leader.kill()  # SIGKILL: no clean stop, the lease is not given back
    killed = time.monotonic()
    ha.work.write("roles/qa.yaml", role("qa", "quinn"))
    third = ha.work.commit("qa role")

    def applied() -> bool:
        status = survivor.lmctl_json("gitops", "status")
        return (status["live"] or {}).get("sha") == third

    wait_for(applied, TAKEOVER_DEADLINE, "the surviving replica to apply the next commit",
             interval=0.2)
    assert time.monotonic() - killed <= TAKEOVER_DEADLINE
    assert survivor.lmctl_json("get", "role/qa")["spec"]["allow"]["logins"] == ["quinn"]
    assert ha.syncs(survivor).get(third) == 1
    assert applied_by(survivor, third) == 1
    status = json.dumps(survivor.lmctl_json("gitops", "status"))
    assert (survivor.data_dir / "host_uuid").read_text().strip() in status
