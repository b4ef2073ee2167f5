"""The operator's auth calls: deadlines, endpoint re-resolution, and the finalizer's rule for
giving up (injectable clock, no waiting)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.errors import ConnectionProblem
from limen.operator.auth import (
    Endpoint,
    LimenAuth,
    data_dir_endpoint,
    release_decision,
    static_endpoint,
)
from limen.operator.ca_secret import operator_identity

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("elapsed", "force", "release", "reason", "retry"), [
    (0, False, False, "WaitingForAuth", 10.0),
    (55, False, False, "WaitingForAuth", 5.0),
    (59.95, False, False, "WaitingForAuth", 0.1),
    (60, False, True, "DeadlinePassed", 0.0),
    (3600, False, True, "DeadlinePassed", 0.0),
    (0, True, True, "ForceDeleted", 0.0),
])
def test_release_decision(elapsed: float, force: bool, release: bool, reason: str,
                          retry: float) -> None:
    decision = release_decision(deletion_requested=T0, now=T0 + timedelta(seconds=elapsed),
                                deadline=60, retry=10, force=force)
    assert (decision.release, decision.reason) == (release, reason)
    assert decision.retry_after == pytest.approx(retry)


@pytest.fixture(scope="module")
def identity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("identity")
    tls = CertAuthority.generate("test", CertAuthorityType.TLS)
    operator_identity(tls, timedelta(hours=1)).save(path)
    return path


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """Accepts TCP connections and never answers (a hung auth)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_hung_auth_fails_within_the_call_deadline(silent_server: str,
                                                          identity_dir: Path) -> None:
    resolves: list[str] = []

    def resolve() -> Endpoint:
        resolves.append("x")
        return static_endpoint(silent_server, identity_dir)()

    auth = LimenAuth(resolve, call_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ConnectionProblem, match=r"did not answer within 0.3s|cannot reach"):
        await auth.get("roles", "dev")
    assert time.monotonic() - started < 3
    with pytest.raises(ConnectionProblem):
        await auth.apply({"kind": "Role"})
    assert len(resolves) == 2  # the failed client was dropped, the endpoint resolved again
    assert auth.calls == 2
    await auth.close()


async def test_refused_connection_is_a_connection_problem(identity_dir: Path) -> None:
    auth = LimenAuth(static_endpoint("127.0.0.1:1", identity_dir), call_timeout=2)
    with pytest.raises(ConnectionProblem):
        await auth.delete("roles", "dev")
    await auth.close()


async def test_data_dir_endpoint_follows_listeners_json(tmp_path: Path,
                                                        identity_dir: Path) -> None:
    resolve = data_dir_endpoint(tmp_path, identity_dir)
    with pytest.raises(ConnectionProblem, match="no Limen cluster is running"):
        resolve()
    (tmp_path / "listeners.json").write_text(json.dumps({"auth": "127.0.0.1:4000"}))
    assert resolve().address == "127.0.0.1:4000"
    (tmp_path / "listeners.json").write_text(json.dumps({"auth": "127.0.0.1:4001"}))
    assert resolve().address == "127.0.0.1:4001"


async def test_missing_identity_is_reported_as_unreachable(tmp_path: Path) -> None:
    auth = LimenAuth(static_endpoint("127.0.0.1:1", tmp_path / "none"), call_timeout=1)
    with pytest.raises(ConnectionProblem, match="cannot load the operator's identity"):
        await auth.ping()


async def test_after_shutdown_no_connection_is_opened(identity_dir: Path) -> None:
    resolves: list[int] = []

    def resolve() -> Endpoint:
        resolves.append(1)
        return static_endpoint("127.0.0.1:1", identity_dir)()

    auth = LimenAuth(resolve, call_timeout=1)
    await auth.shutdown()
    with pytest.raises(ConnectionProblem, match="stopping"):
        await auth.get("roles", "dev")
    assert resolves == []
