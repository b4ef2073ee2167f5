"""The leaf's TrustedCluster reconciler (limen.trust.reconciler) against an in-process root:
a real root AuthServer behind a small TLS web app serving the proxy's ping and validate routes.

Covers the state machine (join → Ready; disabled → CAs kept but untrusted; re-enabled without a
token; deleted → CAs removed), the failures (wrong pin, missing token, used token) as Stalled
with a reason and a refused ``join`` event, retry with backoff, the role mapping handed to the
node's access policy, and that a mapped root admin gets no ``rules`` on the leaf. Token files
live in the leaf's secrets directory and are named by NAME; a stored reference outside it
(bypassing the loader) is refused before any connection, and audited."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from limen.agents.node.policy import StoreAccessPolicy
from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Origin, Resource
from limen.api.validation import validate
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.root_handshake import validate_trusted_cluster
from limen.auth.trusted_clusters.wire import ValidateRequest
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.config import ClusterSettings
from limen.errors import ConnectionProblem
from limen.events.emitter import MemoryEmitter
from limen.net.http import error_middleware, json_body
from limen.services.leadership import replica_leadership
from limen.trust.cache import trusted_role_map
from limen.trust.handshake import handshake
from limen.trust.reconciler import REFUSED_REF, TRUST_LEASE_KEY, TrustedClusterReconciler
from limen.trust.secrets import SecretSource

ROLE_MAP = [{"remote": "ops", "local": ["visitor"]},
            {"remote": "^admin-(.*)$", "local": ["ops-$1"]},
            {"remote": "admin", "local": ["visitor"]}]


async def until(predicate: Callable[[], Any], what: str = "it", limit: float = 5.0) -> Any:
    """Poll an async predicate until truthy, or fail after ``limit`` seconds."""
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _server(name: str) -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name=name), MemoryEmitter())
    await server.start()
    return server


class Root:
    """A root cluster's auth server behind a TLS app with the proxy's two public routes."""

    def __init__(self, auth: AuthServer, address: str, runner: web.AppRunner) -> None:
        self.auth, self.address, self.runner = auth, address, runner
        self.pings = 0

    async def token(self) -> str:
        secret, _ = await self.auth.create_token("trusted_cluster", timedelta(hours=1),
                                                 actor="admin")
        return secret


@pytest.fixture
async def root() -> AsyncIterator[Root]:
    auth = await _server("root")
    key = generate_private_key()
    certs = auth.issue_host_certs("proxy-1", "localhost", SystemRole.PROXY,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    creds = HostCredentials(cluster="root", host_id="proxy-1", role="proxy",
                            hostname="localhost", private_key_pem=private_key_to_pem(key).encode(),
                            tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())

    async def ping(_request: web.Request) -> web.Response:
        holder[0].pings += 1
        return web.json_response({"cluster": "root", "tls_ca": certs.tls_cas})

    async def validate_route(request: web.Request) -> web.Response:
        answer = await validate_trusted_cluster(auth, ValidateRequest.from_json(
            await json_body(request)))
        return web.json_response(answer.to_json())

    holder: list[Root] = []
    app = web.Application(middlewares=[error_middleware])
    app.add_routes([web.get("/v1/webapi/ping", ping),
                    web.post("/v1/webapi/trustedclusters/validate", validate_route)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock, ssl_context=creds.server_ssl()).start()
    holder.append(Root(auth, f"127.0.0.1:{sock.getsockname()[1]}", runner))
    yield holder[0]
    await runner.cleanup()


class Leaf:
    def __init__(self, auth: AuthServer, reconciler: TrustedClusterReconciler,
                 tmp: Path) -> None:
        self.auth, self.reconciler, self.tmp = auth, reconciler, tmp

    @property
    def events(self) -> list[Any]:
        emitter = self.auth.emitter
        assert isinstance(emitter, MemoryEmitter)
        return [e for e in emitter.events if e.type.value == "join"]

    async def apply(self, name: str, spec: dict[str, Any]) -> None:
        doc = {"apiVersion": "limen.dev/v1alpha1", "kind": "TrustedCluster",
               "metadata": {"name": name}, "spec": spec}
        await self.auth.apply(validate([SourceDocument("t", 0, 1, doc)]), Origin.API,
                              actor="admin")

    async def tc(self, name: str = "org-a") -> Resource | None:
        return await self.auth.store.find(Kind.TRUSTED_CLUSTER, name)

    async def condition(self, kind: str, name: str = "org-a") -> dict[str, Any]:
        found = await self.tc(name)
        for item in (found.status.get("conditions") or []) if found else []:
            if item["type"] == kind:
                return dict(item)
        return {}

    async def ca(self, ca_type: str = "user") -> Resource | None:
        return await self.auth.store.find(Kind.CERT_AUTHORITY, f"{ca_type}.root")


async def _leaf(tmp_path: Path, name: str = "leaf") -> AsyncIterator[Leaf]:
    auth = await _server(name)
    secrets = SecretSource(tmp_path / "secrets", {})
    reconciler = TrustedClusterReconciler(auth, secrets=secrets, backoff_base=0.05,
                                          backoff_cap=0.2)
    await reconciler.start()
    yield Leaf(auth, reconciler, secrets.directory)
    await reconciler.stop()


@pytest.fixture
async def leaf(tmp_path: Path) -> AsyncIterator[Leaf]:
    async for value in _leaf(tmp_path):
        yield value


def _token_file(secrets: Path, token: str, name: str = "org-a.token") -> str:
    """Write the token in the leaf's secrets directory; its NAME is the reference."""
    path = secrets / name
    path.write_text(token + "\n")
    path.chmod(0o600)
    return name


def _spec(root: Root, token_file: str, **extra: Any) -> dict[str, Any]:
    return {"proxy_address": root.address, "token_secret_ref": {"file": token_file},
            "ca_pin": root.auth.tls_ca_pin(), "role_map": ROLE_MAP, **extra}


async def test_join_then_disable_enable_delete(root: Root, leaf: Leaf) -> None:
    token_file = _token_file(leaf.tmp, await root.token())
    await leaf.apply("org-a", _spec(root, token_file))
    ready = await until(lambda: _status_is(leaf, "Ready", "True"), what="Ready")
    assert ready["reason"] == "Trusted"
    tc = await leaf.tc()
    assert tc is not None
    assert tc.status["rootCluster"] == "root"
    assert tc.status["observedRevision"] > 0
    user_ca = await leaf.ca("user")
    assert user_ca is not None
    assert user_ca.labels == {"limen.dev/cluster": "root", "limen.dev/trust": "trusted-cluster",
                              "limen.dev/trusted-cluster": "org-a"}
    assert {n for n in ("host", "tls") if await leaf.ca(n)} == {"host", "tls"}
    assert "private_key" not in str(user_ca.spec)
    assert "root" in await leaf.auth.authorities.trusted(CertAuthorityType.USER)
    assert await root.auth.store.find(Kind.REMOTE_CLUSTER, "leaf") is not None
    assert await root.auth.store.find(Kind.CERT_AUTHORITY, "host.leaf") is not None
    assert leaf.events[-1].success is True
    assert leaf.events[-1].fields["root_cluster"] == "root"
    # the node's view: root identities mapped by the role_map; others get nothing
    roles = trusted_role_map(leaf.reconciler.cache)
    alice = Identity(username="alice", cluster="root", roles=("ops", "admin-db", "dev"))
    assert roles(alice) == ["ops-db", "visitor"]
    assert roles(Identity(username="eve", cluster="elsewhere", roles=("ops",))) == []
    assert [ca.cluster for ca in leaf.reconciler.cache.user_cas()] == ["root"]

    # the token is only needed once: remove it, then disable and re-enable
    await asyncio.to_thread((leaf.tmp / token_file).unlink)
    await leaf.apply("org-a", _spec(root, token_file, enabled=False))
    await until(lambda: _status_is(leaf, "Ready", "False"), what="disabled")
    disabled = await leaf.ca("user")
    assert disabled is not None
    assert disabled.spec["disabled"] is True
    assert "root" not in await leaf.auth.authorities.trusted(CertAuthorityType.USER)
    assert roles(alice) == []
    assert leaf.reconciler.cache.user_cas() == []
    assert (await leaf.condition("Ready"))["reason"] == "Disabled"

    await leaf.apply("org-a", _spec(root, token_file, enabled=True))
    await until(lambda: _status_is(leaf, "Ready", "True"), what="re-enabled")
    enabled = await leaf.ca("user")
    assert enabled is not None
    assert "disabled" not in enabled.spec
    assert "root" in await leaf.auth.authorities.trusted(CertAuthorityType.USER)
    assert roles(alice) == ["ops-db", "visitor"]

    # a role_map change applies to the next connection (the node asks per connection)
    await leaf.apply("org-a", _spec(root, token_file, role_map=[
        {"remote": "dev", "local": ["visitor"]}]))

    async def remapped() -> bool:
        return roles(alice) == ["visitor"] and not roles(
            Identity(username="bob", cluster="root", roles=("ops",)))
    await until(remapped, what="the new role_map")

    await leaf.auth.remove(Kind.TRUSTED_CLUSTER, "org-a", Origin.API, actor="admin")

    async def removed() -> bool:
        return all([await leaf.ca(n) is None for n in ("user", "host", "tls")])
    await until(removed, what="the root CAs removed")
    assert "root" not in await leaf.auth.authorities.trusted(CertAuthorityType.USER)
    assert roles(alice) == []


async def _status_is(leaf: Leaf, kind: str, value: str,
                     name: str = "org-a") -> dict[str, Any] | None:
    found = await leaf.condition(kind, name)
    return found if found.get("status") == value else None


async def test_wrong_pin_stalls_without_spending_the_token(root: Root, leaf: Leaf) -> None:
    token = await root.token()
    spec = _spec(root, _token_file(leaf.tmp, token), ca_pin="sha256:" + "0" * 64)
    await leaf.apply("org-a", spec)
    stalled = await until(lambda: _status_is(leaf, "Stalled", "True"), what="Stalled")
    assert stalled["reason"] == "PinMismatch"
    assert "does not match the pin" in stalled["message"]
    assert (await leaf.condition("Ready"))["status"] == "False"
    assert await leaf.ca("user") is None
    assert leaf.events[-1].success is False
    assert "does not match the pin" in leaf.events[-1].fields["reason"]
    # retried with backoff, but the failure is audited once per distinct reason
    tc = await leaf.tc()
    assert tc is not None

    async def retried() -> bool:
        return root.pings >= 3
    await until(retried, what="retries")
    after = await leaf.tc()
    assert after is not None
    assert after.revision == tc.revision  # the same failure does not rewrite the status
    assert len([e for e in leaf.events if not e.success]) == 1
    # the root never saw the token: it still admits a leaf
    record = await root.auth.tokens.consume(token, ("trusted_cluster",), now=root.auth.now())
    assert record.spec["type"] == "trusted_cluster"


async def test_missing_token_file_is_retried_until_it_appears(root: Root, leaf: Leaf) -> None:
    await leaf.apply("org-a", _spec(root, "later.token"))
    stalled = await until(lambda: _status_is(leaf, "Stalled", "True"), what="Stalled")
    assert stalled["reason"] == "TokenUnavailable"
    assert "'later.token'" in stalled["message"]
    assert str(leaf.tmp) in stalled["message"]
    _token_file(leaf.tmp, await root.token(), "later.token")
    await until(lambda: _status_is(leaf, "Ready", "True"), what="Ready after the retry")
    assert (await leaf.condition("Stalled"))["status"] == "False"


async def test_secret_ref_is_refused_outside_kubernetes(root: Root, leaf: Leaf) -> None:
    spec = {**_spec(root, "x"), "token_secret_ref": {"secret": "org-a", "key": "token"}}
    await leaf.apply("org-a", spec)
    stalled = await until(lambda: _status_is(leaf, "Stalled", "True"), what="Stalled")
    assert "auth cannot read Kubernetes Secrets" in stalled["message"]


@pytest.mark.parametrize("ref", [
    {"file": "/etc/passwd"}, {"file": "../admin/key.pem"}, {"env": "HOME"},
])
async def test_a_stored_ref_outside_the_configured_places_is_refused_before_any_call(
        root: Root, leaf: Leaf, ref: dict[str, str]) -> None:
    """Stored without the loader (an old object, a direct store write): the use-time check
    refuses it, audits ``access.denied`` once, and never contacts the proxy it names."""
    spec = {**_spec(root, "x"), "token_secret_ref": ref}
    await leaf.auth.apply([Resource(Kind.TRUSTED_CLUSTER, "org-a", spec=spec)], Origin.API,
                          actor="admin")
    stalled = await until(lambda: _status_is(leaf, "Stalled", "True"), what="Stalled")
    assert stalled["reason"] == REFUSED_REF
    assert "auth reads no other" in stalled["message"]
    emitter = leaf.auth.emitter
    assert isinstance(emitter, MemoryEmitter)

    async def retried() -> bool:
        return len([e for e in emitter.events if e.type.value == "join"]) >= 1
    await until(retried, what="the refused join event")
    denied = [e for e in emitter.events if e.type.value == "access.denied"]
    assert len(denied) == 1
    assert denied[0].fields["trusted_cluster"] == "org-a"
    assert denied[0].fields["token_secret_ref"] == ref
    assert root.pings == 0


async def test_a_used_token_cannot_join_again(root: Root, leaf: Leaf, tmp_path: Path) -> None:
    token = await root.token()
    await leaf.apply("org-a", _spec(root, _token_file(leaf.tmp, token)))
    await until(lambda: _status_is(leaf, "Ready", "True"), what="first leaf Ready")
    async for other in _leaf(tmp_path / "other", "leaf2"):
        await other.apply("org-a", _spec(root, _token_file(other.tmp, token)))
        stalled = await until(lambda o=other: _status_is(o, "Stalled", "True"), what="refused")
        assert stalled["reason"] == "Refused"
        assert "join token" in stalled["message"]
        assert await other.ca("user") is None
    assert await root.auth.store.find(Kind.REMOTE_CLUSTER, "leaf2") is None
    # and a second TrustedCluster for an already trusted root is refused before the call
    await leaf.apply("org-b", _spec(root, _token_file(leaf.tmp, token, "b.token")))
    conflict = await until(lambda: _status_is(leaf, "Stalled", "True", "org-b"), what="clash")
    assert conflict["reason"] == "NameConflict"
    assert "through TrustedCluster 'org-a'" in conflict["message"]


async def test_mapped_root_admin_gets_no_rules_on_the_leaf(root: Root, leaf: Leaf) -> None:
    roles = [
        {"metadata": {"name": "visitor"}, "spec": {"allow": {"logins": ["guest"],
                                                             "node_labels": {"*": "*"}}}},
        {"metadata": {"name": "admin"}, "spec": {"allow": {
            "rules": [{"resources": ["*"], "verbs": ["*"]}]}}},
    ]
    docs = [SourceDocument("r", i, 1, {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", **d})
            for i, d in enumerate(roles)]
    await leaf.auth.apply(validate(docs), Origin.API, actor="admin")
    await leaf.apply("org-a", _spec(root, _token_file(leaf.tmp, await root.token())))
    await until(lambda: _status_is(leaf, "Ready", "True"), what="Ready")
    policy = StoreAccessPolicy(leaf.auth.store, {"env": "dev"}, cluster="leaf",
                               map_roles=trusted_role_map(leaf.reconciler.cache))
    root_admin = Identity(username="boss", cluster="root", roles=("admin",))
    role_set = await policy.role_set(root_admin)
    assert role_set is not None
    assert not role_set.check_rule(Kind.ROLE, "list").allowed
    assert (await policy.check_ssh(root_admin, "guest")).allowed
    # the same role name held by a local identity does grant the rules
    local = await policy.role_set(Identity(username="me", cluster="leaf", roles=("admin",)))
    assert local is not None
    assert local.check_rule(Kind.ROLE, "list").allowed
    # a root user whose roles map to nothing gets nothing
    nobody = Identity(username="dev", cluster="root", roles=("dev",))
    assert not (await policy.check_ssh(nobody, "guest")).allowed


async def test_only_the_replica_holding_the_lease_joins_and_the_other_takes_over(
        root: Root, tmp_path: Path) -> None:
    """Two auth replicas of one leaf on one backend: the lease holder joins (one handshake),
    the other follows (its cache sees the root's CAs); once the holder stops, the other
    takes the lease and reconciles the next change."""
    backend = MemoryBackend()
    secrets = SecretSource(tmp_path / "secrets", {})
    calls: dict[str, int] = {"first": 0, "second": 0}
    replicas: list[TrustedClusterReconciler] = []
    for holder in calls:
        auth = AuthServer(backend, ClusterSettings(name="leaf"), MemoryEmitter())
        await auth.start()

        async def counted(proxy: str, pin: str | None, request: ValidateRequest,
                          check_root: Callable[[str], Any], holder: str = holder) -> Any:
            calls[holder] += 1
            return await handshake(proxy, pin, request, check_root=check_root)

        leadership = replica_leadership(backend, TRUST_LEASE_KEY, holder, name=holder,
                                        clock=auth.clock, ttl=0.6, renew_every=0.2,
                                        retry_every=0.05)
        replicas.append(TrustedClusterReconciler(
            auth, secrets=secrets, handshake_fn=counted, backoff_base=0.05, backoff_cap=0.2,
            leadership=leadership))
        await replicas[-1].start()
    first, second = replicas
    try:
        assert first.leading
        assert not second.leading
        leaf = Leaf(first.auth, first, secrets.directory)
        await leaf.apply("org-a", _spec(root, _token_file(secrets.directory,
                                                          await root.token())))
        await until(lambda: _status_is(leaf, "Ready", "True"), what="Ready")

        async def follower_trusts_root() -> bool:
            return [ca.cluster for ca in second.cache.user_cas()] == ["root"]
        await until(follower_trusts_root, what="the follower's cache")
        assert calls == {"first": 1, "second": 0}

        await first.stop()  # gives the lease up

        async def second_leads() -> bool:
            return second.leading
        await until(second_leads, what="the takeover")
        await leaf.apply("org-a", _spec(root, "org-a.token", role_map=[
            {"remote": "dev", "local": ["visitor"]}]))
        changed = await leaf.tc()
        assert changed is not None

        async def reconciled_again() -> bool:
            found = await leaf.tc()
            return found is not None and found.status.get("observedRevision") == \
                changed.revision
        await until(reconciled_again, what="the new leader's reconcile")
        assert calls == {"first": 1, "second": 0}  # joined once: no second handshake
    finally:
        for replica in replicas:
            await replica.stop()


async def test_a_backend_error_as_the_lease_is_taken_is_retried_not_fatal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease is often retaken just as PostgreSQL comes back, when listing the trusted
    clusters can still fail: the replica lists again later, and stopping raises nothing."""
    backend = MemoryBackend()
    auth = AuthServer(backend, ClusterSettings(name="leaf"), MemoryEmitter())
    await auth.start()
    leadership = replica_leadership(backend, TRUST_LEASE_KEY, "only", name="only",
                                    clock=auth.clock, ttl=0.6, renew_every=0.2,
                                    retry_every=0.05)
    reconciler = TrustedClusterReconciler(auth, secrets=SecretSource(tmp_path / "s", {}),
                                          backoff_base=0.05, backoff_cap=0.2,
                                          leadership=leadership)
    listed = reconciler._known_names
    calls: list[str] = []

    async def flaky() -> set[str]:
        calls.append("list")
        if len(calls) <= 3:
            raise ConnectionProblem("PostgreSQL database 'limen' is unreachable or failed")
        return await listed()
    monkeypatch.setattr(reconciler, "_known_names", flaky)
    await reconciler.start()
    try:
        await until(lambda: _async(len(calls) >= 5), what="listing again after failures")
        assert reconciler.leading
    finally:
        await reconciler.stop()  # raised the listing's ConnectionProblem before the fix


async def _async(value: bool) -> bool:
    return value
