"""Root locks at a leaf, in process: what travels over the cluster link, how the leaf matches
it, staleness, the open-session guard, and the attacks on the channel.

Real parts on 127.0.0.1: the root proxy's ``TunnelServer`` and the leaf proxy's ``TunnelAgent``
cluster link of ``test_trust_security`` (the ``clusters`` fixture), the leaf's ``RootLocks`` fed
by the link, and the ``RootSessionGuard``. The end-to-end run with real processes is
``test_locks_leaf``.

* the root sends a leaf only locks on users, roles and logins (not node locks), to every link
  and to a link welcomed later;
* a root lock applies to the root's user of that name and to holders of the ROOT role, never to
  a leaf user with the same name nor to a mapped role name;
* stale (no push for the bound): ``lock: strict`` refused, ``best_effort`` keeps the last copy;
* attacks: a leaf sending ``locks`` (asking the root for another leaf's locks) is refused,
  audited and dropped; a link whose certificate the root does not trust is refused at hello,
  audited, and gets no locks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from limen.aio.changed import Changed
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.errors import AccessDenied
from limen.events.emitter import MemoryEmitter
from limen.proxy.trust_root_locks import for_leaves
from limen.services.locks import Locked
from limen.trust.root_locks import RootLocks, RootLocksUnknown
from limen.trust.root_session_locks import RootSessionGuard
from limen.tunnel import TunnelAgent, TunnelAgentSettings, TunnelServer
from limen.tunnel.protocol import Locks, encode

from .test_trust_security import DEADLINE, Clusters, _creds, _impostor, _never, _raw_link


@pytest.fixture
async def clusters() -> AsyncIterator[Clusters]:
    """A root proxy's real tunnel server admitting leaf "leaf" (as ``test_trust_security``)."""
    root_host = CertAuthority.generate("root", CertAuthorityType.HOST)
    leaf_host = CertAuthority.generate("leaf", CertAuthorityType.HOST)

    async def remote_trust(cluster: str) -> tuple[Any, ...]:
        if cluster != "leaf":
            raise AccessDenied(f"no trusted cluster named {cluster!r} was admitted here")
        return leaf_host.trusted_public_keys()

    emitter = MemoryEmitter()
    server = TunnelServer(_creds(root_host, "root-proxy", SystemRole.PROXY), emitter=emitter,
                          remote_trust=remote_trust, dial_timeout=2.0, hello_timeout=5.0)
    address = await server.start("127.0.0.1:0")
    world = Clusters(root_host, CertAuthority.generate("root", CertAuthorityType.USER),
                     leaf_host, CertAuthority.generate("leaf", CertAuthorityType.USER),
                     emitter, server, address)
    try:
        yield world
    finally:
        for agent in world.agents:
            await agent.stop()
        await server.stop()


class Inbox:
    """The ``locks`` messages a link received, and a wait for the next."""

    def __init__(self, locks: RootLocks | None = None) -> None:
        self.locks = locks
        self.messages: list[Locks] = []
        self.changed = Changed()

    def __call__(self, message: Locks) -> None:
        self.messages.append(message)
        if self.locks is not None:
            self.locks.update("root", message)
        self.changed.notify()

    async def first(self) -> Locks:
        async with asyncio.timeout(DEADLINE):
            while not self.messages:
                await self.changed.wait()
        return self.messages[0]


def _lock(name: str, **target: str) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Lock",
            "metadata": {"name": name, "labels": {"limen.dev/origin": "git"},
                         "annotations": {"limen.dev/commit": "0123abc"}},
            "spec": {"target": target, "message": f"{name} says no"}}


DOCS = [_lock("on-bob", user="bob"), _lock("on-dev", role="dev"),
        _lock("on-root-login", login="root"), _lock("on-web1", node="web1"),
        _lock("bob-on-web1", user="bob", node="web1")]


def _root_user(name: str, *roles: str, cluster: str = "root") -> Identity:
    return Identity(username=name, roles=tuple(roles), cluster=cluster)


async def _leaf_link(clusters: Clusters, on_locks: Inbox) -> TunnelAgent:
    """The leaf proxy's link as ``LeafLinks`` builds it: the root's pushes go to RootLocks."""
    agent = TunnelAgent(clusters.address, clusters.leaf_proxy(), None, lambda: {"nodes": []},
                        prepare=_never, settings=TunnelAgentSettings(
                            peer_trust={"root": clusters.root_host.trusted_public_keys()},
                            peer_cluster="root", heartbeat_interval=0.2, on_locks=on_locks))
    clusters.agents.append(agent)
    await agent.start()
    await clusters.server.clusters.wait_for(lambda r: "leaf" in r, DEADLINE)
    return agent


def _names(locks: RootLocks, root: str = "root") -> set[str]:
    return {lock.name for lock in locks.view(root).current()}


async def test_the_root_sends_a_leaf_its_locks_on_users_roles_and_logins_only(
        clusters: Clusters) -> None:
    locks = RootLocks()
    inbox = Inbox(locks)
    await _leaf_link(clusters, inbox)
    clusters.server.publish_locks(Locks(revision=7, items=for_leaves(DOCS)))
    sent = await inbox.first()
    assert _names(locks) == {"on-bob", "on-dev", "on-root-login"}
    assert sent.items[0] == {  # what the leaf enforces, nothing more (no origin, no commit)
        "apiVersion": "limen.dev/v1alpha1", "kind": "Lock", "metadata": {"name": "on-bob"},
        "spec": {"target": {"user": "bob"}, "message": "on-bob says no"}}
    assert locks.view("root").revision == 7
    assert not locks.view("root").stale

    # a link welcomed after the push gets the last one at once (its proxy restarted)
    later = RootLocks()
    await clusters.agents[0].stop()
    await clusters.server.clusters.wait_for(lambda r: "leaf" not in r, DEADLINE)
    late = Inbox(later)
    await _leaf_link(clusters, late)
    assert (await late.first()).revision == 7
    assert _names(later) == _names(locks)


def test_a_root_lock_binds_the_roots_user_and_root_role_never_a_leaf_namesake() -> None:
    locks = RootLocks()
    locks.update("root", Locks(revision=1, items=for_leaves(DOCS)))
    with pytest.raises(Locked) as refused:
        locks.check(_root_user("bob", "ops"), strict=False)
    assert str(refused.value) == "locked: on-bob says no"
    with pytest.raises(Locked):
        locks.check(_root_user("carl", "dev"), strict=True)  # dev in the ROOT certificate
    locks.check(_root_user("bob", "ops", cluster="leaf"), strict=False)  # the leaf's own bob
    locks.check(_root_user("bob", "ops", cluster="root2"), strict=False)  # another root's bob
    locks.check(_root_user("erin", "visitor"), strict=False)  # roles are matched unmapped
    # node locks never arrive; a lock naming a login needs the login (not known at the proxy)
    assert "on-web1" not in _names(locks)
    locks.check(_root_user("erin", "ops"), strict=False)
    # a node in the proxy's process knows the login: it checks the locks naming one, only
    with pytest.raises(Locked) as at_node:
        locks.check_login(_root_user("erin", "ops"), "root", False)
    assert at_node.value.lock.name == "on-root-login"
    locks.check_login(_root_user("erin", "ops"), "erin", False)
    locks.check_login(_root_user("bob", "ops"), "bob", True)  # the proxy enforces on-bob
    locks.check_login(_root_user("erin", "ops", cluster="leaf"), "root", True)


def test_stale_root_locks_refuse_strict_users_and_keep_the_last_copy_otherwise() -> None:
    now = [100.0]
    locks = RootLocks(max_staleness=30.0, clock=lambda: now[0])
    with pytest.raises(RootLocksUnknown) as unknown:  # nothing heard from the root yet
        locks.check(_root_user("erin", "ops"), strict=True)
    assert str(unknown.value) == "cannot verify locks: root cluster 'root' unreachable"
    locks.check(_root_user("erin", "ops"), strict=False)
    locks.update("root", Locks(revision=1, items=for_leaves(DOCS[:1])))
    locks.check(_root_user("erin", "ops"), strict=True)
    now[0] += 31.0
    with pytest.raises(RootLocksUnknown):
        locks.check(_root_user("erin", "ops"), strict=True)
    locks.check(_root_user("erin", "ops"), strict=False)
    with pytest.raises(Locked):  # best_effort: the last known locks are enforced
        locks.check(_root_user("bob", "ops"), strict=False)
    locks.update("root", Locks(revision=1, items=for_leaves(DOCS[:1])))  # a keepalive
    locks.check(_root_user("erin", "ops"), strict=True)


async def test_the_guard_ends_strict_sessions_at_once_and_best_effort_at_the_next_check(
        ) -> None:
    now = [0.0]
    locks = RootLocks(max_staleness=30.0, clock=lambda: now[0])
    locks.update("root", Locks(revision=1))
    guard = RootSessionGuard(locks, interval=3600.0)  # the periodic check only when called
    ended: dict[str, tuple[str, dict[str, Any]]] = {}
    done = Changed()

    def ender(name: str) -> Any:
        async def end(reason: str, fields: dict[str, Any]) -> None:
            ended[name] = (reason, fields)
            done.notify()
        return end

    guard.track(_root_user("bob", "ops"), "strict", ender("bob strict"))
    guard.track(_root_user("carl", "dev"), None, ender("carl best effort"))
    untrack = guard.track(_root_user("bob", "ops"), "strict", ender("bob closed"))
    guard.track(_root_user("bob", "ops", cluster="root2"), None, ender("root2's bob"))
    untrack()
    await guard.start()
    try:
        locks.update("root", Locks(revision=2, items=for_leaves(DOCS)))
        async with asyncio.timeout(DEADLINE):  # the guard runs on the change
            while "bob strict" not in ended:
                await done.wait()
        reason, fields = ended["bob strict"]
        assert reason == "locked: on-bob says no"
        assert fields == {"mode": "strict", "lock": "on-bob", "lock_target": "user=bob"}
        assert "carl best effort" not in ended
        assert await guard.recheck() == 1  # the next periodic check
        assert ended["carl best effort"][1]["mode"] == "best_effort"
        assert set(ended) == {"bob strict", "carl best effort"}
        assert guard.tracked == 1  # the bob of another root

        erin = ender("erin")
        guard.track(_root_user("erin", "ops"), "strict", erin)
        now[0] += 31.0  # no push from the root for longer than the bound
        assert await guard.recheck() == 1
        assert ended["erin"][0] == "cannot verify locks: root cluster 'root' unreachable"
    finally:
        await guard.stop()


async def test_a_leaf_asking_the_root_for_locks_is_refused_audited_and_dropped(
        clusters: Clusters) -> None:
    conn, writer, reader = await _raw_link(clusters.address, clusters.leaf_proxy())
    await clusters.server.clusters.wait_for(lambda r: "leaf" in r, DEADLINE)
    # another leaf's locks, or any locks at all: a cluster link may ask the root for nothing
    writer.write(encode(Locks(revision=0, items=({"cluster": "leaf2"},))))
    event = await clusters.refused(lambda e: e.type.value == "access.denied")
    assert event.fields["remote_cluster"] == "leaf"
    assert event.fields["request"] == "locks"
    assert "may not ask the root for anything" in event.fields["reason"]
    async with asyncio.timeout(DEADLINE):  # the link is dropped
        while await reader.read(65536):
            pass
    conn.close()
    await clusters.server.clusters.wait_for(lambda r: "leaf" not in r, DEADLINE)


@pytest.mark.parametrize(("signer", "claimed", "why"), [
    ("root", "leaf", "signed by an untrusted CA"),       # a forged leaf certificate
    ("leaf", "leaf2", "no trusted cluster named 'leaf2'"),  # a cluster never admitted
])
async def test_an_unauthenticated_link_gets_no_locks(clusters: Clusters, signer: str,
                                                     claimed: str, why: str) -> None:
    real = clusters.leaf_host if signer == "leaf" else clusters.root_host
    creds = _creds(_impostor(real, claimed), "intruder", SystemRole.PROXY)
    inbox = Inbox()
    agent = TunnelAgent(clusters.address, creds, None, lambda: {"nodes": []}, prepare=_never,
                        settings=TunnelAgentSettings(
                            peer_trust={"root": clusters.root_host.trusted_public_keys()},
                            peer_cluster="root", on_locks=inbox))
    clusters.agents.append(agent)
    await agent.start()
    event = await clusters.refused(lambda e: e.type.value == "auth"
                                   and why in str(e.fields.get("reason")))
    assert event.fields["listener"] == "tunnel"
    clusters.server.publish_locks(Locks(revision=3, items=for_leaves(DOCS)))
    assert claimed not in clusters.server.clusters
    assert inbox.messages == []
    assert not agent.connected.is_set()
