"""Reconnect backoff: exponential ceiling (0.5 s doubling to 30 s), full jitter, reset; and the
agent's reconnect loop sleeping those delays (injected random source and sleep)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from limen.aio.backoff import Backoff
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem
from limen.ca.ssh_certs import sign_host_cert
from limen.tunnel.agent import TunnelAgent, TunnelAgentSettings


def test_ceiling_doubles_from_base_to_cap() -> None:
    backoff = Backoff(rng=lambda: 1.0)
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_full_jitter_scales_the_ceiling() -> None:
    values = iter([0.0, 0.5, 0.25, 0.999])
    backoff = Backoff(rng=lambda: next(values))
    assert [backoff.next_delay() for _ in range(4)] == [0.0, 0.5, 0.5, pytest.approx(3.996)]


def test_reset_starts_over_and_huge_attempts_do_not_overflow() -> None:
    backoff = Backoff(rng=lambda: 1.0)
    for _ in range(10_000):
        backoff.next_delay()
    assert backoff.next_delay() == 30.0
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(base=0)
    with pytest.raises(ValueError, match="base"):
        Backoff(base=2, cap=1)


async def test_agent_sleeps_the_backoff_schedule_between_failed_attempts() -> None:
    ca = CertAuthority.generate("root", CertAuthorityType.HOST)
    key = generate_private_key()
    creds = HostCredentials(
        cluster="root", host_id="n1", role="node", hostname="n1",
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=b"", tls_ca_pem=b"",
        ssh_cert=sign_host_cert(ca, key.public_key(), "n1", "n1", [], timedelta(hours=1),
                                SystemRole.NODE),
        host_ca_keys=tuple(ca.ssh_public_keys()))
    slept: list[float] = []
    enough = asyncio.Event()

    async def sleep(delay: float) -> None:
        slept.append(delay)
        if len(slept) == 6:
            enough.set()
        await asyncio.sleep(0)

    async def handler(*_args: object) -> None:
        raise AssertionError("never dialled")

    # nothing listens on port 1: every attempt fails at once
    agent = TunnelAgent("127.0.0.1:1", creds, handler, dict, settings=TunnelAgentSettings(
        backoff=lambda: Backoff(rng=lambda: 1.0), sleep=sleep))
    await agent.start()
    try:
        async with asyncio.timeout(10):
            await enough.wait()
    finally:
        await agent.stop()
    assert slept[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert not agent.connected.is_set()
    assert agent.last_error
