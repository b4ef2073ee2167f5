"""Auth presence (limen.auth.presence): heartbeats stored with an expiry, listed while live,
gone after three missed heartbeats; malformed heartbeats refused."""

from __future__ import annotations

from typing import Any

import pytest

from limen.auth import presence
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.config import ClusterSettings
from limen.errors import BadParameter, ValidationFailed
from limen.events.emitter import MemoryEmitter


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def _doc(name: str = "web1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
            "metadata": {"name": name, "labels": {"env": "dev"}},
            "spec": {"kind": "ssh", **spec}}


@pytest.fixture
async def auth_and_clock() -> tuple[AuthServer, Clock]:
    clock = Clock()
    server = AuthServer(MemoryBackend(clock=clock, sweep_interval=None),
                        ClusterSettings(name="unit"), MemoryEmitter(), clock=clock)
    await server.start()
    return server, clock


async def test_heartbeat_is_listed_until_it_expires(auth_and_clock: tuple[AuthServer, Clock]
                                                    ) -> None:
    auth, clock = auth_and_clock
    record = await presence.heartbeat(auth, _doc(address="10.0.0.5:3022"), "h-1", "proxy-1",
                                      "unit")
    assert record["expires"] == clock.now + presence.PRESENCE_TTL
    (listed,) = await presence.presence(auth)
    assert (listed["host_id"], listed["tunnel"], listed["cluster"]) == ("h-1", "proxy-1", "unit")
    assert listed["resource"]["spec"] == {"kind": "ssh", "address": "10.0.0.5:3022"}
    clock.now += 30  # a heartbeat refreshes the expiry
    await presence.heartbeat(auth, _doc(), "h-1", "proxy-1", "unit")
    clock.now += 30
    assert len(await presence.presence(auth)) == 1
    clock.now += presence.PRESENCE_TTL - 30
    assert await presence.presence(auth) == []


@pytest.mark.parametrize(("doc", "host_id", "cluster", "error"), [
    (_doc(), "h/1", "unit", BadParameter),                 # host id shape
    (_doc(), "h-1", "other", BadParameter),                # another cluster
    ({**_doc(), "spec": {"kind": "db", "protocol": "postgres", "address": "db:5432"}}, "h-1",
     "unit", BadParameter),                                # not an SSH node
    ({"kind": "Resource", "metadata": {"name": "Web 1"}, "spec": {"kind": "ssh"}}, "h-1",
     "unit", ValidationFailed),                            # invalid document
])
async def test_malformed_heartbeats_are_refused(
    auth_and_clock: tuple[AuthServer, Clock], doc: dict[str, Any], host_id: str, cluster: str,
    error: type[Exception],
) -> None:
    auth, _clock = auth_and_clock
    with pytest.raises(error):
        await presence.heartbeat(auth, doc, host_id, "proxy-1", cluster)
    assert await presence.presence(auth) == []
