"""Two auth replicas on one PostgreSQL database share their audit log and their recordings,
through the auth API as ``lmctl audit search``, ``lmsh play`` and agents reach it: events
handed to one replica (``POST /v1/events``) and the replicas' own events are found by a search
on the other (``GET /v1/events``), a recording uploaded through one is listed and read through
the other, and the other refuses an upload of that session from another host.

Each replica is a real ``AuthService`` (own data directory, own ``PostgresBackend`` and
``PostgresLog`` as ``limen start`` opens them, checkpoints signed by the cluster's JWT CA);
callers are ``AuthClient``s with certificates of the cluster's CAs (a node, the admin).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_backend_db import backend_database, reset_backend

from dbservers import PostgresServer
from limen.auth.audit_signer import audit_keys, audit_signer_source
from limen.auth.auth_service import AuthService
from limen.auth.client import AuthClient
from limen.auth.http.agents import RECORDING_META_HEADER
from limen.backend.postgres import PostgresBackend
from limen.ca.authority import CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.config import ClusterSettings, Listeners, Settings
from limen.errors import AccessDenied
from limen.events import make_event, open_audit_log
from limen.events.postgres_log import PostgresLog
from limen.events.postgres_verify import verify_postgres

CLUSTER = "ha"


@dataclass
class Replica:
    auth: AuthService
    backend: PostgresBackend
    log: PostgresLog

    def client(self, creds: HostCredentials) -> AuthClient:
        return AuthClient(self.auth.address, creds, timeout=10.0)

    def admin(self) -> AuthClient:
        return self.client(HostCredentials.load(self.auth.settings.data_dir / "admin"))

    def node(self, host_id: str) -> AuthClient:
        key = generate_private_key()
        certs = self.auth.server.issue_host_certs(
            host_id, host_id, SystemRole.NODE, public_key_to_openssh(key.public_key()),
            ["127.0.0.1"])
        return self.client(HostCredentials(
            cluster=CLUSTER, host_id=host_id, role="node", hostname=host_id,
            private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=certs.tls_cert,
            tls_ca_pem=certs.tls_cas.encode(), ssh_cert=certs.ssh_cert))


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:
    return backend_database(postgres_server, "limen_auth_replicas", icu=False)


@pytest.fixture
async def replicas(pg_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[Replica, Replica]]:
    reset_backend(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS limen_audit_lines, limen_audit_chains,"
                     " limen_recordings, limen_recording_chunks")
    started: list[Replica] = []
    try:
        for name in ("a", "b"):  # one after the other, as a rollout starts them
            data_dir = tmp_path / name
            data_dir.mkdir(mode=0o700)
            settings = Settings(data_dir=data_dir, cluster=ClusterSettings(name=CLUSTER),
                                listeners=Listeners(auth="127.0.0.1:0"))
            backend = PostgresBackend(pg_dsn, sweep_interval=None, compact_interval=None)
            log = open_audit_log(data_dir, kind="postgres", dsn=pg_dsn)
            assert isinstance(log, PostgresLog)
            auth = AuthService(settings, backend, log)
            log.set_signer(audit_signer_source(auth.server))
            started.append(Replica(auth, backend, log))
            await auth.start()
        yield started[0], started[1]
    finally:
        for replica in started:
            await replica.auth.stop()
            await replica.log.aclose()
            await replica.backend.close()


CAST_TIMESTAMP = 1_796_576_357
"""A fixed start time: a test compares a recording with the one it uploaded."""


def _cast(session_id: str) -> bytes:
    header = {"version": 2, "width": 80, "height": 24, "timestamp": CAST_TIMESTAMP,
              "limen": {"session_id": session_id}}
    return (json.dumps(header) + "\n" + '[0.1, "o", "hello\\r\\n"]\n').encode()


async def _upload(client: AuthClient, session_id: str, meta: dict[str, Any]) -> Any:
    return await client.http.call(
        "POST", f"/v1/recordings/{session_id}", data=_cast(session_id),
        headers={RECORDING_META_HEADER: base64.b64encode(json.dumps(meta).encode()).decode(),
                 "Content-Type": "application/octet-stream"})


async def _events(client: AuthClient, **query: str) -> list[dict[str, Any]]:
    answer = await client.call("GET", "/v1/events", None, {**query, "order": "newest"})
    return list(answer["events"])


async def test_a_search_on_either_replica_sees_the_events_of_both(
        replicas: tuple[Replica, Replica], pg_dsn: str) -> None:
    replica_a, replica_b = replicas
    node_a, admin_b = replica_a.node("node-1"), replica_b.admin()
    try:
        sent = [make_event("exec", cluster=CLUSTER, user="alice", login="root",
                           command=f"cmd-{i}").to_dict() for i in range(5)]
        assert await node_a.call("POST", "/v1/events", {"events": sent}) == {"accepted": 5}
        await replica_b.auth.server.emit("user.login", user="bob", method="password")

        found = await _events(admin_b, type="exec")
        assert [e["uid"] for e in found] == [e["uid"] for e in reversed(sent)]
        assert {e["server_id"] for e in found} == {"node-1"}
        assert [e["user"] for e in await _events(admin_b, type="user.login")] == ["bob"]
        admin_a = replica_a.admin()
        try:  # and the same from the other side
            assert len(await _events(admin_a, type="exec")) == 5
            assert [e["user"] for e in await _events(admin_a, user="bob")] == ["bob"]
        finally:
            await admin_a.close()
    finally:
        await node_a.close()
        await admin_b.close()

    ca = replica_a.auth.server.authorities.get(CertAuthorityType.JWT)
    keys = audit_keys(ca.to_dict())
    replica_a.log.close()
    replica_b.log.close()  # both closed: every line signed by the cluster's key
    with PostgresLog(pg_dsn) as reader:
        reports = verify_postgres(reader, keys)
    assert reports
    assert all(report.intact and report.unsigned_tail == 0 for report in reports), reports


async def test_a_recording_uploaded_through_one_replica_is_read_through_the_other(
        replicas: tuple[Replica, Replica]) -> None:
    replica_a, replica_b = replicas
    node_a, admin_b = replica_a.node("node-1"), replica_b.admin()
    intruder = replica_b.node("node-2")
    try:
        meta = {"user": "alice", "login": "root", "server_hostname": "node-1",
                "start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T00:01:00+00:00"}
        assert await _upload(node_a, "sess-1", meta) == {"stored": "sess-1"}

        [row] = (await admin_b.call("GET", "/v1/recordings"))["items"]
        assert (row["session_id"], row["user"], row["node"], row["duration_seconds"]) == \
            ("sess-1", "alice", "node-1", 60.0)
        played = await admin_b.call("GET", "/v1/recordings/sess-1")
        assert played["cast"].encode() == _cast("sess-1")
        assert played["meta"]["server_id"] == "node-1"  # set by auth from the uploader

        with pytest.raises(AccessDenied):  # the other replica knows whose session it is
            await _upload(intruder, "sess-1", meta)
        assert (await admin_b.call("GET", "/v1/recordings/sess-1"))["cast"] == played["cast"]
        uploads = await _events(admin_b, type="session.upload")
        assert [(e["session_id"], e["server_id"]) for e in uploads] == [("sess-1", "node-1")]
    finally:
        for client in (node_a, admin_b, intruder):
            await client.close()
