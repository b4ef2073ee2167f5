"""The ``Lock`` kind read as typed data: what it targets, its message, when it lifts.

A lock is declared like every public kind (Git, ``lmctl apply``, ``lmctl lock``, a Kubernetes
CR); its schema is ``crds/limen.dev_locks.yaml``. :meth:`Lock.from_resource` reads a validated
resource, :func:`lock_problems` adds what the schema cannot say (``expires`` parses as RFC 3339
with a time zone). Every target field given must match for the lock to apply: a lock on user
``bob`` and node ``web1`` locks bob on web1 only. Called by ``limen.api.validation``, the lock
view (``limen.services.locks``) and ``lmctl``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from limen.api.resources import Kind, Resource
from limen.errors import BadParameter

if TYPE_CHECKING:
    from limen.api.loader import FieldPath

__all__ = ["TARGET_FIELDS", "Lock", "lock_problems", "parse_expires"]

TARGET_FIELDS = ("user", "role", "node", "login", "mfa_device")
"""The fields of ``spec.target``, in the order they are shown."""


def parse_expires(text: str) -> datetime:
    """An RFC 3339 time with a zone (``Z`` or an offset), as an aware UTC datetime."""
    try:
        when = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise BadParameter(f"{text!r} is not an RFC 3339 time "
                           "(e.g. 2026-01-02T15:04:05Z)") from None
    if when.tzinfo is None:
        raise BadParameter(f"{text!r} has no time zone (end it with Z or +HH:MM)")
    return when.astimezone(UTC)


@dataclass(frozen=True)
class Lock:
    """One lock: its name, target fields, message and expiry (None: until deleted)."""

    name: str
    target: Mapping[str, str]
    message: str = ""
    expires: datetime | None = None

    @classmethod
    def from_resource(cls, resource: Resource) -> Lock:
        if resource.kind is not Kind.LOCK:
            raise BadParameter(f"{resource.key} is not a Lock")
        raw = resource.spec.get("target")
        target = {k: str(v) for k, v in (raw or {}).items()
                  if k in TARGET_FIELDS and v} if isinstance(raw, Mapping) else {}
        if not target:
            raise BadParameter(f"lock {resource.name}: spec.target names nothing to lock")
        expires = resource.spec.get("expires")
        return cls(resource.name, target, str(resource.spec.get("message") or ""),
                   parse_expires(expires) if isinstance(expires, str) and expires else None)

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def describe_target(self) -> str:
        """``user=bob,node=web1``: the target as one word, for tables and audit events."""
        return ",".join(f"{k}={self.target[k]}" for k in TARGET_FIELDS if k in self.target)

    def refusal(self) -> str:
        """What a refused client reads: ``locked: <message>``."""
        return f"locked: {self.message or f'lock {self.name} on {self.describe_target()}'}"

    def to_resource(self) -> Resource:
        spec: dict[str, Any] = {"target": dict(self.target), "message": self.message}
        if self.expires is not None:
            spec["expires"] = self.expires.isoformat().replace("+00:00", "Z")
        return Resource(Kind.LOCK, self.name, spec=spec)

    def to_fields(self) -> dict[str, Any]:
        """Audit fields naming the lock."""
        return {"lock": self.name, "lock_target": self.describe_target()}


def lock_problems(spec: Mapping[str, Any]) -> Iterator[tuple[FieldPath, str]]:
    """What the schema cannot check: ``expires`` is a real RFC 3339 time with a zone, and the
    target names something."""
    expires = spec.get("expires")
    if isinstance(expires, str):
        try:
            parse_expires(expires)
        except BadParameter as err:
            yield ("spec", "expires"), str(err)
    target = spec.get("target")
    if isinstance(target, Mapping) and not any(target.get(k) for k in TARGET_FIELDS):
        yield ("spec", "target"), f"name at least one of {', '.join(TARGET_FIELDS)}"
