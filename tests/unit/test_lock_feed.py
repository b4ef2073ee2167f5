"""Locks through the auth API: ``GET /v1/locks`` (a long poll) as an agent apart from auth reads
it with ``AuthLockFeed``, who may read it, certificate issuance refusing a locked user, and a
feed that loses auth keeping its locks and turning stale.

A real ``AuthService`` on 127.0.0.1 (CAs, mutual-TLS API, memory backend, in-memory audit
log); callers hold certificates its CAs issued."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from limen.agents.lock_feed import AuthLockFeed
from limen.api.resources import Kind, Origin, Resource
from limen.auth.auth_service import AuthService
from limen.auth.client import AuthClient
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.x509_certs import sign_client_cert
from limen.config import ClusterSettings, Listeners, Settings
from limen.errors import AccessDenied
from limen.events.emitter import MemoryEmitter
from limen.services.locks import Locked, LocksUnknown, LockView

CLUSTER = "unit"


class Env:
    def __init__(self, auth: AuthService, emitter: MemoryEmitter) -> None:
        self.auth = auth
        self.emitter = emitter
        self.clients: list[AuthClient] = []

    def host(self, host_id: str, role: SystemRole = SystemRole.NODE) -> AuthClient:
        key = generate_private_key()
        certs = self.auth.server.issue_host_certs(
            host_id, host_id, role, public_key_to_openssh(key.public_key()), ["127.0.0.1"])
        creds = HostCredentials(
            cluster=CLUSTER, host_id=host_id, role=role.value, hostname=host_id,
            private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=certs.tls_cert,
            tls_ca_pem=certs.tls_cas.encode(), ssh_cert=certs.ssh_cert)
        client = AuthClient(self.auth.address, creds, timeout=10.0)
        self.clients.append(client)
        return client

    async def lock(self, name: str, **target: str) -> None:
        """Apply a lock and wait until auth's own view holds it (the backend watch)."""
        await self.auth.server.apply(
            [Resource(Kind.LOCK, name, spec={"target": target, "message": f"msg {name}"})],
            Origin.API, actor="admin")
        await _until(self.auth.server.locks, lambda v: name in {lock.name for lock in v.current()})


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    settings = Settings(data_dir=tmp_path / "data", cluster=ClusterSettings(name=CLUSTER),
                        listeners=Listeners(auth="127.0.0.1:0"))
    settings.data_dir.mkdir(mode=0o700)
    emitter = MemoryEmitter()
    auth = AuthService(settings, MemoryBackend(), emitter)
    await auth.start()
    env = Env(auth, emitter)
    try:
        yield env
    finally:
        for client in env.clients:
            await client.close()
        await auth.stop()


async def test_the_long_poll_answers_as_soon_as_a_lock_lands(env: Env) -> None:
    node = env.host("node-a")
    first = await node.call("GET", "/v1/locks")
    assert first["items"] == []
    waiting = asyncio.ensure_future(node.call(
        "GET", "/v1/locks", params={"after": str(first["revision"]), "wait": "10"}))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    started = time.monotonic()
    await env.lock("bob-out", user="bob")
    answer = await asyncio.wait_for(waiting, 5.0)
    assert time.monotonic() - started < 1.0
    assert [item["metadata"]["name"] for item in answer["items"]] == ["bob-out"]
    assert answer["items"][0]["spec"] == {"target": {"user": "bob"}, "message": "msg bob-out"}
    assert answer["revision"] > first["revision"]
    [created] = [e for e in env.emitter.events if e.type == "lock.created"]
    assert created.to_dict()["name"] == "bob-out"


async def test_only_agents_proxies_and_admins_read_the_locks(env: Env) -> None:
    for role in (SystemRole.DB, SystemRole.KUBE, SystemRole.PROXY):
        assert (await env.host(f"h-{role.value}", role).call("GET", "/v1/locks"))["items"] == []
    key = generate_private_key()
    tls_ca = env.auth.server.authorities.get(CertAuthorityType.TLS)
    cert = sign_client_cert(tls_ca, key.public_key(),
                            Identity(username="mallory", cluster=CLUSTER, roles=("dev",)),
                            timedelta(hours=1))
    user = AuthClient(env.auth.address, HostCredentials(
        cluster=CLUSTER, host_id="mallory", role="user",
        private_key_pem=private_key_to_pem(key).encode(),
        tls_cert_pem=cert.public_bytes(Encoding.PEM),
        tls_ca_pem=tls_ca.pem_bundle().encode()), timeout=10.0)
    env.clients.append(user)
    with pytest.raises(AccessDenied):
        await user.call("GET", "/v1/locks")


async def test_the_feed_follows_auth_and_keeps_its_locks_when_cut_off(env: Env) -> None:
    node = env.host("node-b")
    clock = [0.0]
    view = LockView(max_staleness=30.0, clock=lambda: clock[0])
    reachable = [True]

    async def client() -> AuthClient:
        if not reachable[0]:
            raise OSError("no route to auth")
        return node

    feed = AuthLockFeed(client, view, wait=5.0, retry=0.05)
    feed.start()
    try:
        changed = view.changed.event
        await env.lock("node-b-out", node="node-b")
        await asyncio.wait_for(changed.wait(), 5.0)
        bob = Identity(username="bob", cluster=CLUSTER, roles=("dev",))
        with pytest.raises(Locked, match="locked: msg node-b-out"):
            view.check(bob, node="node-b")
        reachable[0] = False
        await feed.stop()  # the request waiting at auth is dropped with the link
        feed.start()
        clock[0] += 31.0  # more than the bound without a successful refresh
        assert view.stale
        with pytest.raises(Locked):
            view.check(bob, node="node-b")  # the last known locks still hold
        with pytest.raises(LocksUnknown):
            view.check(bob, node="other", strict=True)
        view.check(bob, node="other")
        reachable[0] = True
        await env.lock("again", user="x")
        await _until(view, lambda v: "again" in {lock.name for lock in v.current()})
        assert not view.stale
    finally:
        await feed.stop()


async def _until(view: LockView, predicate: Callable[[LockView], bool]) -> None:
    """Wait (5 s at most) until ``predicate(view)`` holds, woken by the view's changes."""
    async with asyncio.timeout(5.0):
        while True:
            changed = view.changed.event
            if predicate(view):
                return
            await changed.wait()


async def test_certificates_are_refused_to_a_locked_user(env: Env) -> None:
    server = env.auth.server
    await server.apply([Resource(Kind.ROLE, "dev", spec={"allow": {"logins": ["x"]}}),
                        Resource(Kind.USER, "bob", spec={"roles": ["dev"]})],
                       Origin.API, actor="admin")
    await env.lock("dev-out", role="dev")
    user = await server.store.get(Kind.USER, "bob")
    key = public_key_to_openssh(generate_private_key().public_key())
    with pytest.raises(Locked, match=r"^locked: msg dev-out$"):
        await server.issue_for_user(user, key, None)
    [refused] = [e.to_dict() for e in env.emitter.events if e.type == "cert.create"]
    assert (refused["success"], refused["lock"], refused["lock_target"]) == (
        False, "dev-out", "role=dev")
    with pytest.raises(Locked):
        await server.role_set(Identity(username="bob", cluster=CLUSTER, roles=("dev",)))
    await server.remove(Kind.LOCK, "dev-out", Origin.API, actor="admin")
    await _until(server.locks, lambda v: not v.current())
    assert (await server.issue_for_user(user, key, None)).identity.username == "bob"
