"""What every handler of one running operator shares: its settings, the auth API, the
Kubernetes API (Cluster children), a clock, per-object locks and counters.

One ``OperatorContext`` per operator; ``limen.operator.main`` builds it and the handler
modules close over it when they register into a registry. The clock and the Event poster are
injectable so handlers are tested without waiting and without an API server.
Called by ``limen.operator.main``, ``limen.operator.resources`` and ``limen.operator.cluster``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import kopf

from limen.operator.auth import LimenAuth
from limen.operator.settings import OperatorConfig

if TYPE_CHECKING:
    from limen.operator.kube import KubeApi

__all__ = ["EventPoster", "OperatorContext", "kopf_event", "utc_now"]

EventPoster = Callable[[Mapping[str, Any], str, str, str], None]
"""(object, type Normal|Warning, reason, message) → a Kubernetes Event."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def kopf_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Post through kopf (inside a handler: component limen-operator, retried in background)."""
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message)


@dataclass
class OperatorContext:
    config: OperatorConfig
    auth: LimenAuth | None = None
    """None when no auth API is configured: the Limen kinds then report AuthNotConfigured."""
    kube: KubeApi | None = None
    """The Kubernetes API for the objects a Cluster owns (created at startup)."""
    clock: Callable[[], datetime] = utc_now
    post_event: EventPoster = kopf_event
    reconciles: Counter[str] = field(default_factory=Counter)
    """Reconciles run, by object uid (tests and the benchmark read it)."""
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, uid: str) -> asyncio.Lock:
        """Serialises the handlers and the resync timer of one object."""
        return self._locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)
