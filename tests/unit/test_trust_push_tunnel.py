"""Auth's trust answer pushed to a node over its tunnel (issue #17), with real parts: the leaf's
``AuthService`` (mutual TLS, ``GET /v1/trust/roots/signed``), a proxy's ``TunnelServer`` and
``TrustPusher`` calling it with the proxy's certificate, and a node's ``TunnelAgentPool``
handing the ``trust`` messages to its ``RemoteTrustCache`` (``limen.cli.compose_remote``'s
wiring), whose refusals are audited through ``PushRefusalAudit``.

A TrustedCluster disabled and enabled again reaches the node within 2 s through the push and
the node asks auth nothing meanwhile (``limen_trust_answers_total``). The proxy turned hostile
(it holds the tunnel the node trusts) pushes an answer adding a root it signed itself, auth's
answer with a root added, and an older answer of auth replayed: each is refused and audited,
the node keeps the last good answer, and a user of the forged root is refused.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from leaf_trust_env import Leaf, leaf_auth

from limen.auth.client import AuthClient
from limen.auth.trust_signature import SIGNED_TRUST_PATH, sign_trust
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, load_private_key
from limen.ca.ssh_certs import sign_user_cert, verify_ssh_user_cert
from limen.diag.metrics import Metrics
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter
from limen.proxy.trust_push import TrustPusher
from limen.trust.push_audit import PUSH_REFUSED, PushRefusalAudit
from limen.trust.roots_poller import RemoteTrustCache
from limen.tunnel.agent_pool import TunnelAgentPool
from limen.tunnel.agent_settings import TunnelAgentSettings
from limen.tunnel.protocol import (
    Decoder,
    DialRequest,
    Hello,
    TrustPush,
    decode_message,
    encode,
)
from limen.tunnel.server import TunnelServer

PROPAGATION = 2.0
"""Seconds a change at auth may take to reach the node (the proxy asks auth every 0.2 s)."""


@dataclass
class Setup:
    leaf: Leaf
    tunnel: TunnelServer
    proxy_client: AuthClient
    trust: RemoteTrustCache
    metrics: Metrics
    audit: MemoryEmitter

    def count(self, source: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "limen_trust_answers_total", {"source": source, "outcome": outcome})
        return value or 0.0

    async def signed(self) -> dict[str, Any]:
        """Auth's signed answer, as the proxy gets it."""
        doc = await self.proxy_client.call("GET", SIGNED_TRUST_PATH)
        assert isinstance(doc, dict)
        return doc

    async def refused(self, before: int) -> list[dict[str, Any]]:
        """Wait for the node's audit event of a refusal after the first ``before``."""
        await self.audit.wait_for(lambda _e: len(self._refusals()) > before, timeout=5)
        return self._refusals()

    def _refusals(self) -> list[dict[str, Any]]:
        return [dict(e.fields) for e in self.audit.events
                if e.type.value == "access.denied" and e.fields.get("request") == PUSH_REFUSED]


async def _until(predicate: Callable[[], bool], what: str, within: float = 5.0) -> float:
    """Seconds until ``predicate`` held; fails after ``within``."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 (the cache's state; no event to await)
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {within} s") from None
    return time.monotonic() - start


async def _no_dial(sock: socket.socket, request: DialRequest) -> None:
    sock.close()  # no dial is made in these tests


@asynccontextmanager
async def _setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with leaf_auth(tmp_path / "auth", []) as leaf, AsyncExitStack() as stack:
        service = leaf.service
        proxy = service.issue_local_credentials(SystemRole.PROXY, ["127.0.0.1"],
                                                host_id="proxy-1")
        node = service.issue_local_credentials(SystemRole.NODE, ["127.0.0.1"],
                                               host_id="node-1")
        tunnel = TunnelServer(proxy)
        stack.push_async_callback(tunnel.stop)
        await tunnel.start("127.0.0.1:0")
        proxy_client = AuthClient(service.address, proxy)
        stack.push_async_callback(proxy_client.close)
        node_client = AuthClient(service.address, node)
        stack.push_async_callback(node_client.close)
        metrics, audit = Metrics(), MemoryEmitter()
        refusals = PushRefusalAudit(audit, "leaf", "node-1")
        stack.push_async_callback(refusals.close)

        async def give() -> AuthClient:
            return node_client

        trust = RemoteTrustCache(give, "leaf", node.user_ca_keys, node.host_ca_keys,
                                 tls_ca_pem=node.tls_ca_pem, on_refused=refusals,
                                 metrics=metrics)
        stack.push_async_callback(trust.stop)
        await trust.start()
        pusher = TrustPusher(proxy_client, tunnel, "leaf", interval=0.2)
        stack.push_async_callback(pusher.stop)
        await pusher.start()
        pool = TunnelAgentPool(tunnel.address, node, _no_dial, dict)
        pool.use_settings(TunnelAgentSettings(
            on_trust=lambda message, proxy_id: trust.pushed(message.doc, proxy_id)))
        stack.push_async_callback(pool.stop)
        await pool.start()
        await _until(trust.push_current, "the first pushed answer")
        assert "root" in trust.roots
        yield Setup(leaf, tunnel, proxy_client, trust, metrics, audit)


async def test_a_trusted_cluster_change_reaches_the_node_by_push_without_a_poll(
        tmp_path: Path) -> None:
    async with _setup(tmp_path) as setup:
        polls = setup.count("poll", "answered") + setup.count("poll", "failed")
        await setup.leaf.trust_root(enabled=False)
        took = await _until(lambda: "root" not in setup.trust.roots, "the root disabled")
        assert took < PROPAGATION
        assert setup.trust.role_names(Identity("alice", "root", roles=("ops",))) == []
        await setup.leaf.trust_root(enabled=True)
        took = await _until(lambda: "root" in setup.trust.roots, "the root enabled again")
        assert took < PROPAGATION
        assert setup.trust.role_names(Identity("alice", "root", roles=("ops",))) == [
            "leaf-dev"]
        assert setup.count("poll", "answered") + setup.count("poll", "failed") == polls
        assert setup.count("push", "accepted") >= 3  # the first, the disable, the enable
        assert setup.count("push", "refused") == 0


async def test_a_hostile_proxy_cannot_add_a_root_or_replay_an_old_answer(
        tmp_path: Path) -> None:
    async with _setup(tmp_path) as setup:
        evil_user_ca = CertAuthority.generate("evil", CertAuthorityType.USER)
        evil_root = {"trusted_cluster": "evil", "root_cluster": "evil",
                     "proxy_address": "evil:3080", "tunnel_address": "",
                     "role_map": [{"remote": "ops", "local": ["leaf-dev"]}],
                     "cas": {"user": evil_user_ca.public_only().to_dict()}}
        old = await setup.signed()  # auth's answer with the root enabled, kept by the proxy
        proxy_creds = setup.tunnel.credentials

        # 1. an answer adding "evil", signed by the proxy itself (its TLS key and certificate)
        answer = json.loads(old["answer"])
        answer["roots"].append(evil_root)
        forged = sign_trust(load_private_key(proxy_creds.private_key_pem),
                            proxy_creds.tls_cert_pem.decode(), "leaf", answer["revision"],
                            int(time.time() * 1000), answer)
        await setup.tunnel.publish_trust(TrustPush(doc=forged))
        events = await setup.refused(0)
        assert "proxy" in events[-1]["reason"]
        assert events[-1]["proxy"] == "proxy-1"

        # 2. auth's own answer with "evil" added
        tampered = await setup.signed()
        tampered["answer"] = json.dumps(answer)
        await setup.tunnel.publish_trust(TrustPush(doc=tampered))
        events = await setup.refused(1)
        assert "signature does not verify" in events[-1]["reason"]

        # 3. the root disabled at auth, then the older answer (root enabled) replayed
        await setup.leaf.trust_root(enabled=False)
        await _until(lambda: "root" not in setup.trust.roots, "the root disabled")
        await setup.tunnel.publish_trust(TrustPush(doc=old))
        events = await setup.refused(2)
        assert "replay" in events[-1]["reason"]

        assert setup.count("push", "refused") == 3
        assert set(setup.trust.roots) == set()  # the last good answer stands
        assert set(setup.trust.ssh_user_trust()) == {"leaf"}
        key = generate_private_key()
        cert = sign_user_cert(evil_user_ca, key.public_key(),
                              Identity("mallory", "evil", roles=("ops",), logins=("root",)),
                              timedelta(minutes=5))
        with pytest.raises(AccessDenied):
            verify_ssh_user_cert(cert, setup.trust.ssh_user_trust(), principal="root")
        assert setup.trust.role_names(Identity("mallory", "evil", roles=("ops",))) == []


def test_the_trust_message_and_the_hello_flag_on_the_wire() -> None:
    hello = Hello(cert="ssh-ed25519-cert-v01@openssh.com AAAA", trust=True)
    push = TrustPush(doc={"cluster": "leaf", "revision": "r1"})
    assert Decoder().feed(encode(hello) + encode(push)) == [hello, push]
    older = json.dumps({"type": "hello", "cert": "c", "version": 1}).encode()
    assert decode_message(older) == Hello(cert="c")  # an older agent asks for nothing
    for bad in ({"type": "hello", "cert": "c", "version": 1, "trust": "yes"},
                {"type": "trust", "doc": []}, {"type": "trust"}):
        with pytest.raises(BadParameter):
            decode_message(json.dumps(bad).encode())
