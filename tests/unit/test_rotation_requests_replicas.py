"""Declared CA rotations with two auth replicas on one backend (limen.auth.rotation_declared
with a lease): only the replica holding the lease applies a request (one ca.rotation event,
never two), and once it stops the other takes the lease over and applies the next commit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import yaml

from limen.api.loader import load_text
from limen.api.resources import Kind, Origin
from limen.api.validation import validate
from limen.auth.core import AuthServer
from limen.auth.rotation import Phase
from limen.auth.rotation_declared import ROTATION_LEASE_KEY, DeclaredRotation
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthorityType
from limen.config import ClusterSettings
from limen.events.emitter import MemoryEmitter
from limen.services.leadership import replica_leadership

HOST = CertAuthorityType.HOST


async def until(predicate: Callable[[], Awaitable[Any]], what: str,
                limit: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _moves(auth: AuthServer) -> list[tuple[str, str]]:
    emitter = auth.emitter
    assert isinstance(emitter, MemoryEmitter)
    return [(e.fields["from"], e.fields["to"]) for e in emitter.events
            if e.type.value == "ca.rotation"]


async def _declare(auth: AuthServer, phase: str) -> None:
    text = yaml.safe_dump({
        "apiVersion": "limen.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "ha"},
        "spec": {"public_address": "proxy.example.com:3080",
                 "rotation": [{"id": "h1", "type": "host", "mode": "manual",
                               "phase": phase}]}})
    await auth.apply(validate(load_text(text, "cluster.yaml")), Origin.API, actor="test",
                     kinds=[Kind.CLUSTER])


async def test_only_the_lease_holder_applies_and_the_other_takes_over() -> None:
    backend = MemoryBackend()
    replicas: list[DeclaredRotation] = []
    for holder in ("first", "second"):
        auth = AuthServer(backend, ClusterSettings(name="ha"), MemoryEmitter())
        await auth.start()
        leadership = replica_leadership(backend, ROTATION_LEASE_KEY, holder, name=holder,
                                        clock=auth.clock, ttl=0.6, renew_every=0.2,
                                        retry_every=0.05)
        replicas.append(DeclaredRotation(auth, leadership=leadership, interval=0.05))
        await replicas[-1].start()
    first, second = replicas
    try:
        assert first.leading
        assert not second.leading
        await _declare(first.auth, "init")

        async def started() -> bool:
            await second.auth.authorities.refresh()
            return second.auth.authorities.rotation(HOST).phase is Phase.INIT
        await until(started, "the leader to start the rotation")

        async def reported() -> bool:
            found = await first.auth.store.find(Kind.CLUSTER, "ha")
            return found is not None and bool(found.status.get("rotation"))
        await until(reported, "the leader's status")
        assert (_moves(first.auth), _moves(second.auth)) == ([("standby", "init")], [])

        await first.stop()  # gives the lease up

        async def second_leads() -> bool:
            return second.leading
        await until(second_leads, "the takeover")
        await _declare(second.auth, "update_clients")

        async def stepped() -> bool:
            return second.auth.authorities.rotation(HOST).phase is Phase.UPDATE_CLIENTS
        await until(stepped, "the new leader to apply the next step")
        assert _moves(first.auth) == [("standby", "init")]
        assert _moves(second.auth) == [("init", "update_clients")]
    finally:
        for replica in replicas:
            await replica.stop()
