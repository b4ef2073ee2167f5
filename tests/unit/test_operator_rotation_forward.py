"""Which auth the operator forwards a Cluster CR's ``spec.rotation`` to, and what it reports
when it cannot (``limen.operator.rotation_forward``); with no auth configured, the Cluster's
own (``DeployedClusters.endpoint_of``). The forwarding against a real auth:
tests/integration/test_operator_rotation.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.errors import ConnectionProblem
from limen.operator.context import OperatorContext
from limen.operator.deployed_auth import DeployedCluster, DeployedClusters
from limen.operator.main import build_context
from limen.operator.rotation_forward import RotationForwarder
from limen.operator.settings import OperatorConfig

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOST_INIT = {"id": "host-1", "type": "host", "mode": "manual", "phase": "init"}


def cr(uid: str = "u1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "main", "namespace": "limen", "uid": uid, "generation": 1},
            "spec": {"public_address": "limen.example.com:443", **spec}}


def _ctx(config: OperatorConfig) -> tuple[OperatorContext, list[tuple[str, str]]]:
    events: list[tuple[str, str]] = []
    ctx = build_context(config)
    ctx.post_event = lambda body, type_, reason, message: events.append((type_, reason))
    return ctx, events


def test_endpoint_of_one_deployed_cluster() -> None:
    clusters = DeployedClusters(clock=lambda: T0)
    tls = CertAuthority.generate("main", CertAuthorityType.TLS, now=T0)
    for uid, name in (("u1", "limen/main"), ("u2", "other/main")):
        clusters.record(uid, DeployedCluster(name, f"main-auth.{name.split('/')[0]}.svc:3025",
                                             tls))
    assert clusters.endpoint_of("u2").address == "main-auth.other.svc:3025"  # not ambiguous
    with pytest.raises(ConnectionProblem, match="not deployed"):
        clusters.endpoint_of("u3")


async def test_no_rotation_calls_no_auth() -> None:
    ctx, events = _ctx(OperatorConfig())
    forwarder = RotationForwarder(ctx)
    result = await forwarder.forward(cr())
    assert (result.fields, result.check) == ({}, None)
    assert ctx.auth is None
    assert events == []


async def test_a_cluster_not_deployed_is_unreachable_and_retried() -> None:
    ctx, events = _ctx(OperatorConfig(call_timeout_seconds=1.0))
    forwarder = RotationForwarder(ctx)
    try:
        result = await forwarder.forward(cr(rotation=[HOST_INIT]))
        assert result.check is not None
        assert (result.check.status, result.check.reason) == (False, "AuthUnreachable")
        assert "not deployed" in result.check.message
        assert events == [("Warning", "RotationAuthUnreachable")]
    finally:
        await forwarder.shutdown()


async def test_mixed_with_ca_rotation_is_refused_before_auth(tmp_path: Path) -> None:
    ctx, _events = _ctx(OperatorConfig(data_dir=tmp_path))  # no cluster there: never called
    forwarder = RotationForwarder(ctx)
    result = await forwarder.forward(cr(rotation=[HOST_INIT],
                                        ca_rotation={"type": "all", "nonce": "n"}))
    assert result.check is not None
    assert (result.check.status, result.check.reason) == (False, "MixedRotation")
    assert ctx.auth is not None
    assert ctx.auth.calls == 0


async def test_the_configured_auth_is_used_when_set(tmp_path: Path) -> None:
    ctx, _events = _ctx(OperatorConfig(data_dir=tmp_path))  # nothing runs there
    forwarder = RotationForwarder(ctx)
    result = await forwarder.forward(cr(rotation=[HOST_INIT]))
    assert result.check is not None
    assert result.check.reason == "AuthUnreachable"
    assert "no Limen cluster is running" in result.check.message
    assert ctx.auth is not None
    assert ctx.auth.calls == 1
