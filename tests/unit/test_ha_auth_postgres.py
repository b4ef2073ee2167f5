"""Several auth replicas on one PostgreSQL database (issue #17), in one process: two
``AuthServer``s started at once on an empty database agree on one set of CAs (the first
creates, the other loads), whose private keys are nowhere in the database in plain text; a
replica with another key file refuses to start; a user added through one signs up and logs in
through the other; an unknown name is locked after five failures whichever replica answers;
and two Git syncs take turns through the lease: only one applies, and when it loses the
database the other takes over within the lease's TTL plus a renewal.

The database lives on the session's PostgreSQL (``tests/dbservers.py``), emptied before each
test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from pg_backend_db import backend_database, reset_backend

from dbservers import PostgresServer
from gitops_git import WorkTree, bare, role
from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Origin
from limen.api.validation import validate
from limen.auth.auth_service import AuthService
from limen.auth.ca_sealing import CASealer, is_sealed
from limen.auth.core import AuthServer
from limen.auth.store_keys import GITOPS_STATUS_KEY
from limen.backend.postgres import PostgresBackend
from limen.ca.authority import CertAuthorityType, ssh_trust_map
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.ca.ssh_certs import verify_ssh_user_cert
from limen.cli.admin_local import token_of
from limen.config import ClusterSettings, GitOpsSettings, Settings
from limen.errors import AccessDenied, BadParameter, LimitExceeded
from limen.events.emitter import MemoryEmitter
from limen.gitops.sync_service import GitOpsService

KEY = bytes(range(32))
CLUSTER = ClusterSettings(name="ha", second_factor="off")
PASSWORD = "correct horse battery staple"

TTL, RENEW, RETRY = 1.5, 0.4, 0.1
"""The Git sync lease's timings here (the daemon's: 6 s, 2 s, 1 s)."""


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:
    return backend_database(postgres_server, "limen_ha_auth")


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    reset_backend(pg_dsn)
    return pg_dsn


@pytest.fixture
async def backends(dsn: str) -> AsyncIterator[Callable[[], PostgresBackend]]:
    """Opens one backend per replica on the test's database; all closed afterwards."""
    opened: list[PostgresBackend] = []

    def make() -> PostgresBackend:
        backend = PostgresBackend(dsn, sweep_interval=None, compact_interval=None,
                                  poll_interval=0.2)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        await backend.close()


def replica(backend: PostgresBackend, key: bytes = KEY,
            emitter: MemoryEmitter | None = None) -> AuthServer:
    return AuthServer(backend, CLUSTER, emitter or MemoryEmitter(), ca_sealer=CASealer(key))


def raw_values(dsn: str) -> Iterator[tuple[str, bytes]]:
    """Every stored value, current and historical (the events table keeps old values)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("limen_backend_items", "limen_backend_events"):
            rows = conn.execute(f"SELECT key, value FROM {table}").fetchall()  # noqa: S608
            for key, value in rows:
                yield key, bytes(value)


async def test_two_replicas_started_at_once_share_one_set_of_sealed_cas(
        dsn: str, backends: Callable[[], PostgresBackend]) -> None:
    first, second = replica(backends()), replica(backends())
    await asyncio.gather(first.start(), second.start())
    assert first.status()["ca_fingerprints"] == second.status()["ca_fingerprints"]
    assert len(set(first.status()["ca_fingerprints"].values())) == len(CertAuthorityType)

    values = list(raw_values(dsn))
    records = {key: value for key, value in values if key.startswith("/secrets/ca/ha/")}
    assert sorted(records) == sorted(f"/secrets/ca/ha/{t.value}" for t in CertAuthorityType)
    assert all(is_sealed(value) for value in records.values())
    leaked = [key for key, value in values if b"PRIVATE KEY" in value]
    assert leaked == [], f"private keys in plain text under {leaked}"

    third = replica(backends())  # a later replica loads them (and writes no CA)
    before = [k for k, _ in raw_values(dsn) if k.startswith("/secrets/ca/")]
    await third.start()
    assert third.status()["ca_fingerprints"] == first.status()["ca_fingerprints"]
    assert [k for k, _ in raw_values(dsn) if k.startswith("/secrets/ca/")] == before


async def test_a_replica_with_another_key_file_refuses_to_start(
        backends: Callable[[], PostgresBackend]) -> None:
    await replica(backends()).start()
    stranger = replica(backends(), key=bytes(32))
    with pytest.raises(BadParameter, match=r"encrypted with another key .* every auth replica "
                                           r"needs the same backend\.ca_key_file"):
        await stranger.start()


async def test_a_user_added_through_one_replica_logs_in_through_the_other(
        backends: Callable[[], PostgresBackend]) -> None:
    one, other = replica(backends()), replica(backends())
    await one.start()
    await other.start()
    await other.set_proxy_address("proxy.example.com:3080")  # a proxy registered at `other`
    await one.apply(validate([SourceDocument("<test>", 0, 1, {
        "apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "dev"},
        "spec": {"allow": {"logins": ["ana"]}}})]), Origin.API, actor="test")
    _user, url = await one.add_user("ana", ["dev"], ["ana"], actor="admin")
    await other.signup(token_of(url), PASSWORD)
    key = generate_private_key()
    result = await other.login("ana", PASSWORD, None, public_key_to_openssh(key.public_key()),
                               None)
    trust = ssh_trust_map([one.authorities.get(CertAuthorityType.USER)],
                          CertAuthorityType.USER)
    identity = verify_ssh_user_cert(result.certs.ssh_cert, trust)  # signed by the shared CA
    assert (identity.username, identity.logins) == ("ana", ("ana",))


async def test_an_unknown_name_is_locked_whichever_replica_answers(
        backends: Callable[[], PostgresBackend]) -> None:
    one, other = replica(backends()), replica(backends())
    await one.start()
    await other.start()
    key = public_key_to_openssh(generate_private_key().public_key())
    for attempt in range(5):  # alternately, as a load balancer would send them
        with pytest.raises(AccessDenied):
            await (one, other)[attempt % 2].login("ghost", "wrong password!!", None, key, None)
    for server in (one, other):
        with pytest.raises(LimitExceeded, match="ghost is locked until"):
            await server.login("ghost", "wrong password!!", None, key, None)


# -- one Git sync at a time ------------------------------------------------------------------


@dataclass
class Replica:
    auth: AuthServer
    backend: PostgresBackend
    emitter: MemoryEmitter
    gitops: GitOpsService

    def synced(self) -> list[str]:
        """The commits this replica's Git sync applied (its gitops.sync events)."""
        return [e.fields["sha"] for e in self.emitter.events
                if e.type == "gitops.sync" and e.success is not False]


async def eventually(predicate: Callable[[], Awaitable[bool]], within: float,
                     what: str) -> float:
    """Poll ``predicate`` until true; the seconds it took (fails after ``within``)."""
    started = time.monotonic()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while not await predicate():  # noqa: ASYNC110 (state in the database and Git)
                await asyncio.sleep(0.05)
            return time.monotonic() - started
    raise AssertionError(f"timed out after {within:g}s waiting for {what}")


async def applied(sha: str, by: Replica) -> bool:
    return sha in by.synced()


async def takes_over(standby: Replica, within: float) -> float:
    """Seconds until ``standby`` holds the lease (fails after ``within``)."""
    started = time.monotonic()
    await asyncio.wait_for(standby.gitops.leadership.wait_until(True), within)
    return time.monotonic() - started


@pytest.fixture
async def syncs(tmp_path: Path, backends: Callable[[], PostgresBackend]
                ) -> AsyncIterator[tuple[WorkTree, list[Replica]]]:
    remote = bare(tmp_path / "access.git")
    work = WorkTree(tmp_path / "work", remote)
    work.write("roles/first.yaml", role("first", "alice"))
    work.commit("first")
    replicas = []
    for name in ("a", "b"):
        backend, emitter = backends(), MemoryEmitter()
        settings = Settings(data_dir=tmp_path / name, cluster=CLUSTER, gitops=GitOpsSettings(
            source=str(remote), interval_seconds=0.2))
        settings.data_dir.mkdir(mode=0o700)
        auth = AuthService(settings, backend, emitter, ca_sealer=CASealer(KEY))
        await auth.server.start()
        service = GitOpsService(settings, auth, lease_ttl=TTL, renew_every=RENEW,
                                retry_every=RETRY)
        replicas.append(Replica(auth.server, backend, emitter, service))
    await asyncio.gather(*(r.gitops.start() for r in replicas))
    yield work, replicas
    for r in replicas:
        await r.gitops.stop()


async def test_only_one_replica_syncs_and_the_other_takes_over_when_it_dies(
        syncs: tuple[WorkTree, list[Replica]]) -> None:
    work, replicas = syncs
    leaders = [r for r in replicas if r.gitops.leading]
    assert len(leaders) == 1
    leader, standby = leaders[0], next(r for r in replicas if r is not leaders[0])

    work.write("roles/second.yaml", role("second", "bo"))
    second = work.commit("second")

    await eventually(lambda: applied(second, leader), 10, "the leader to apply the commit")
    assert standby.synced() == []
    assert await standby.auth.store.find(Kind.ROLE, "second") is not None  # shared store

    await leader.backend.close()  # the leader loses its database: it can renew nothing
    took = await takes_over(standby, TTL + RENEW + 5)
    assert took <= TTL + RENEW + 1.5, took

    work.write("roles/third.yaml", role("third", "cy"))
    third = work.commit("third")
    await eventually(lambda: applied(third, standby), 10, "the new leader to apply it")
    assert third not in leader.synced()

    async def recorded_by_new_leader() -> bool:  # the status is written after the apply
        status = await standby.backend.get(GITOPS_STATUS_KEY)
        return status is not None and json.loads(status.value).get("leader") == \
            standby.gitops.holder and json.loads(status.value)["live"]["sha"] == third

    await eventually(recorded_by_new_leader, 10, "the new leader's status")
    assert [sha for sha in standby.synced() if sha == third] == [third]


async def test_a_leader_that_stops_hands_over_at_once(
        syncs: tuple[WorkTree, list[Replica]]) -> None:
    work, replicas = syncs
    leader = next(r for r in replicas if r.gitops.leading)
    standby = next(r for r in replicas if r is not leader)
    await leader.gitops.stop()
    took = await takes_over(standby, 5)
    assert took < TTL  # released: no need to wait for the lease to expire
    work.write("roles/fourth.yaml", role("fourth", "di"))
    fourth = work.commit("fourth")
    await eventually(lambda: applied(fourth, standby), 10, "the new leader's sync")
