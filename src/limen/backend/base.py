"""The ``Backend`` protocol every storage implementation satisfies, and its value types.

Semantics (shared by all implementations, tested by ``tests/unit/test_backend_contract.py``):

- One cluster-wide revision counter, strictly increasing; every write (put or delete) takes
  the next revision, and an item's ``revision`` is the revision of its last write. An empty
  backend is at revision 0, so the first write gets revision 1.
- ``atomic(conditions, ops)`` checks every condition and applies every op in one transaction
  with ONE new revision, or raises ``CompareFailed`` and changes nothing. A condition with
  ``revision=0`` means "the key must not exist"; ``revision=None`` means "must exist".
  A key may appear in at most one op (``BadParameter`` otherwise); a ``Delete`` of an absent
  key is skipped (no event); with no ops, only the conditions are checked and the current
  revision is returned.
- Expired items (``expires`` is a UNIX time at or before now) are invisible to reads, count
  as absent for ``create``, ``compare_and_swap`` and conditions, and are reported to watchers
  as deletes when they are swept. Every successful write first sweeps them (the sweep's
  deletes share one revision of their own, before the write's); a periodic sweep catches the
  rest. A write that fails its check changes nothing, not even by sweeping.
- ``watch(prefix, after)`` yields every event with revision > ``after`` for keys under
  ``prefix``, in revision order (the events of one ``atomic`` share its revision, in op
  order), then follows new ones until the iterator is closed or the backend closes (the
  iterator then ends). ``after=None`` means "from now on". History is compacted (at least the
  newest 10,000 events and the last hour are kept); when events after ``after`` are gone the
  iterator raises ``BadParameter("revision N has been compacted; re-list")``: read
  ``current_revision()``, list again, and watch ``after`` that revision (events already
  reflected in the list may be replayed; applying them again is harmless).
- After ``close()`` every call raises ``ConnectionProblem``.

Called by ``limen.services``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

__all__ = ["Backend", "Condition", "Delete", "Event", "EventType", "Item", "Put"]


@dataclass(frozen=True)
class Item:
    key: str
    value: bytes
    revision: int
    expires: float | None = None


class EventType(StrEnum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class Event:
    type: EventType
    key: str
    revision: int
    value: bytes = b""
    """The new value for ``PUT``; empty for ``DELETE``."""


@dataclass(frozen=True)
class Condition:
    key: str
    revision: int | None
    """Expected revision of ``key``: an int must equal it, 0 = absent, None = present."""


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    expires: float | None = None


@dataclass(frozen=True)
class Delete:
    key: str


@runtime_checkable
class Backend(Protocol):
    async def get(self, key: str) -> Item | None: ...

    async def list(self, prefix: str) -> list[Item]:
        """Every live item whose key starts with ``prefix``, sorted by key."""
        ...

    async def put(self, key: str, value: bytes, *, expires: float | None = None) -> Item: ...

    async def create(self, key: str, value: bytes, *, expires: float | None = None) -> Item:
        """Put only if absent; ``AlreadyExists`` otherwise."""
        ...

    async def compare_and_swap(
        self, key: str, expected_revision: int, value: bytes, *, expires: float | None = None
    ) -> Item:
        """Put only if the current revision equals ``expected_revision`` (0 = absent);
        ``CompareFailed`` otherwise."""
        ...

    async def delete(self, key: str, *, expected_revision: int | None = None) -> None:
        """``NotFound`` if absent; ``CompareFailed`` if ``expected_revision`` is given and
        differs. The delete takes a new revision."""
        ...

    async def atomic(
        self, conditions: Sequence[Condition], ops: Sequence[Put | Delete]
    ) -> int:
        """All conditions hold and all ops apply under one new revision (returned), or nothing."""
        ...

    async def current_revision(self) -> int: ...

    def watch(self, prefix: str, *, after: int | None = None) -> AsyncIterator[Event]: ...

    async def close(self) -> None: ...
