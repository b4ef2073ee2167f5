"""The operator's calls to the Limen auth API, each with a deadline, and the finalizer's
give-up rule.

::

    handler ──▶ LimenAuth.get/apply/delete ──(≤ call timeout)──▶ AuthClient ──mTLS──▶ auth
                  │ on ConnectionProblem / timeout: drop the client; the next call resolves
                  │ the endpoint again (a restarted ``limen start --random-ports`` moved)
                  └─ origin "kubernetes" on every write

The operator authenticates with its own identity directory (see docs/kubernetes.md, "The
operator's identity"). :func:`release_decision` says when a finalizer stops waiting for an
unreachable auth: past the deletion deadline, or at once with ``limen.dev/force-delete``.

Called by ``limen.operator.resource_handlers``, ``limen.operator.rotation_forward`` and
``limen.operator.main``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from limen.api.resources import Origin
from limen.auth.client import AuthClient
from limen.ca.host_credentials import HostCredentials
from limen.errors import ConnectionProblem, NotFound

__all__ = [
    "Endpoint",
    "LimenAuth",
    "Release",
    "data_dir_endpoint",
    "release_decision",
    "static_endpoint",
]

T = TypeVar("T")
ORIGIN = Origin.KUBERNETES.value


class Endpoint(NamedTuple):
    address: str
    credentials: HostCredentials


def static_endpoint(address: str, identity_dir: Path) -> Callable[[], Endpoint]:
    """A fixed auth address and the identity in ``identity_dir`` (re-read on every resolve, so
    a renewed Secret is picked up once the old certificate stops working)."""
    def resolve() -> Endpoint:
        return Endpoint(address, HostCredentials.load(identity_dir))
    return resolve


def data_dir_endpoint(data_dir: Path, identity_dir: Path | None = None) -> Callable[[], Endpoint]:
    """The auth listener in ``data_dir/listeners.json`` of a local ``limen start``, with the
    identity in ``identity_dir`` (default ``data_dir/admin``)."""
    def resolve() -> Endpoint:
        try:
            listeners = json.loads((data_dir / "listeners.json").read_text(encoding="utf-8"))
            address = str(listeners["auth"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ConnectionProblem(f"no Limen cluster is running from {data_dir} "
                                    "(no auth listener in listeners.json)") from None
        return Endpoint(address, HostCredentials.load(identity_dir or data_dir / "admin"))
    return resolve


class LimenAuth:
    """Typed, deadline-bound calls to auth; every failure to talk is a ConnectionProblem."""

    def __init__(self, resolve: Callable[[], Endpoint], *, call_timeout: float) -> None:
        self._resolve = resolve
        self.call_timeout = call_timeout
        self._client: AuthClient | None = None
        self._stopped = False
        self.calls = 0
        """Calls made (for tests and the benchmark)."""

    async def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def shutdown(self) -> None:
        """Close for good: a handler still running when the operator stops cannot reopen it."""
        self._stopped = True
        await self.close()

    def _connect(self) -> AuthClient:
        if self._stopped:
            raise ConnectionProblem("the operator is stopping")
        if self._client is None:
            try:
                endpoint = self._resolve()
            except NotFound as err:  # the identity directory is missing or unreadable
                raise ConnectionProblem(f"cannot load the operator's identity: {err}") from err
            self._client = AuthClient(endpoint.address, endpoint.credentials,
                                      timeout=self.call_timeout)
        return self._client

    async def _call(self, action: Callable[[AuthClient], Awaitable[T]]) -> T:
        self.calls += 1
        client = self._connect()
        try:
            async with asyncio.timeout(self.call_timeout):
                return await action(client)
        except TimeoutError:
            await self.close()
            raise ConnectionProblem(f"auth at {client.address} did not answer within "
                                    f"{self.call_timeout:g}s") from None
        except ConnectionProblem:
            await self.close()
            raise

    async def ping(self) -> dict[str, Any]:
        return await self._call(lambda c: c.ping())

    async def status(self) -> dict[str, Any]:
        """``GET /v1/status`` (what ``lmctl status`` shows): the cluster's name, its CAs'
        rotation phases and the rotation requests of its Cluster document."""
        result: dict[str, Any] = await self._call(lambda c: c.call("GET", "/v1/status"))
        return result

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        """The Limen object, or None when there is none."""
        try:
            return await self._call(lambda c: c.get(plural, name))
        except NotFound:
            return None

    async def apply(self, document: Mapping[str, Any]) -> str:
        """Apply one document with origin ``kubernetes``; returns the action (created,
        updated, unchanged)."""
        results = await self._call(lambda c: c.apply([dict(document)], origin=ORIGIN))
        return str(results[0]["action"]) if results else "unchanged"

    async def delete(self, plural: str, name: str) -> bool:
        """Delete with origin ``kubernetes``; False when it was already gone."""
        try:
            await self._call(lambda c: c.delete(plural, name, origin=ORIGIN))
        except NotFound:
            return False
        return True


@dataclass(frozen=True)
class Release:
    """The finalizer's decision while auth cannot be reached."""

    release: bool
    """Let the Kubernetes object go now (the Limen object may stay behind)."""
    reason: str
    """CamelCase reason for the Event: ForceDeleted, DeadlinePassed or WaitingForAuth."""
    retry_after: float
    """Seconds until the next attempt (when not released)."""


def release_decision(*, deletion_requested: datetime, now: datetime, deadline: float,
                     retry: float, force: bool) -> Release:
    """Whether a finalizer that cannot reach auth lets the object go: at once when forced,
    otherwise once ``deadline`` seconds have passed since the deletion was requested."""
    if force:
        return Release(True, "ForceDeleted", 0.0)
    remaining = (deletion_requested + timedelta(seconds=deadline) - now).total_seconds()
    if remaining <= 0:
        return Release(True, "DeadlinePassed", 0.0)
    return Release(False, "WaitingForAuth", max(0.1, min(retry, remaining)))
