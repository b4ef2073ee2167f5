"""Pieces shared by the backend implementations: input validation, write checks and their
errors, prefix ranges, and the history retention rule.

Pure code with no I/O, called by ``limen.backend.memory`` and ``limen.backend.sqlite`` so both
give the same answers (and the same error sentences) for the same calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from limen.backend.base import Condition, Delete, Item, Put
from limen.errors import (
    AlreadyExists,
    BadParameter,
    CompareFailed,
    ConnectionProblem,
    LimenError,
    NotFound,
)

__all__ = [
    "DEFAULT_HISTORY_MIN_AGE",
    "DEFAULT_HISTORY_MIN_EVENTS",
    "DEFAULT_SWEEP_INTERVAL",
    "Check",
    "WriteVerbs",
    "cas_checks",
    "closed_error",
    "compacted_error",
    "create_checks",
    "delete_checks",
    "evaluate",
    "prefix_upper_bound",
    "validate_after",
    "validate_atomic",
    "validate_key",
    "validate_put",
]

DEFAULT_HISTORY_MIN_EVENTS = 10_000
"""Keep at least this many of the newest events for ``watch(after=...)`` replay."""

DEFAULT_HISTORY_MIN_AGE = 3600.0
"""Keep at least every event younger than this many seconds."""

DEFAULT_SWEEP_INTERVAL = 1.0
"""Seconds between two periodic sweeps of expired items."""


@dataclass(frozen=True)
class Check:
    """One precondition of a write, and the error category raised when it does not hold.

    ``revision``: an int must equal the key's current revision, 0 = absent, None = present.
    """

    key: str
    revision: int | None
    error: type[LimenError] = CompareFailed


def _describe(revision: int | None) -> str:
    if revision is None:
        return "absent"
    return f"revision {revision}"


def _holds(expected: int | None, current: int | None) -> bool:
    if expected is None:
        return current is not None
    if expected == 0:
        return current is None
    return current == expected


def evaluate(checks: Sequence[Check], current_revision: Callable[[str], int | None]) -> None:
    """Raise the first failing check's error; ``current_revision(key)`` is None when absent."""
    for check in checks:
        current = current_revision(check.key)
        if _holds(check.revision, current):
            continue
        if check.error is AlreadyExists:
            raise AlreadyExists(f"key {check.key!r} already exists")
        if check.error is NotFound:
            raise NotFound(f"key {check.key!r} not found")
        wanted = "present" if check.revision is None else _describe(check.revision or None)
        raise check.error(
            f"key {check.key!r} is {_describe(current)}, expected {wanted}"
        )


def create_checks(key: str) -> list[Check]:
    return [Check(key, 0, AlreadyExists)]


def cas_checks(key: str, expected_revision: int) -> list[Check]:
    if isinstance(expected_revision, bool) or not isinstance(expected_revision, int):
        raise BadParameter(f"expected_revision must be an int, not {expected_revision!r}")
    if expected_revision < 0:
        raise BadParameter(f"expected_revision must be >= 0, not {expected_revision}")
    return [Check(key, expected_revision, CompareFailed)]


def delete_checks(key: str, expected_revision: int | None) -> list[Check]:
    checks = [Check(key, None, NotFound)]
    if expected_revision is not None:
        checks += cas_checks(key, expected_revision)
    return checks


def validate_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise BadParameter(f"a backend key must be a non-empty string, not {key!r}")
    return key


def _validate_expires(expires: object) -> float | None:
    if expires is None:
        return None
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        raise BadParameter(f"expires must be a UNIX time or None, not {expires!r}")
    if not math.isfinite(expires):
        raise BadParameter(f"expires must be finite, not {expires!r}")
    return float(expires)


def validate_put(key: object, value: object, expires: object) -> Put:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise BadParameter(f"a backend value must be bytes, not {type(value).__name__}")
    return Put(validate_key(key), bytes(value), _validate_expires(expires))


def validate_atomic(
    conditions: Sequence[Condition], ops: Sequence[Put | Delete]
) -> tuple[list[Check], list[Put | Delete]]:
    """Normalise an ``atomic`` call; ``BadParameter`` for bad types or a key used by two ops."""
    checks: list[Check] = []
    for cond in conditions:
        if not isinstance(cond, Condition):
            raise BadParameter(f"atomic conditions must be Condition, not {cond!r}")
        if cond.revision is None:
            checks.append(Check(validate_key(cond.key), None))
        else:
            checks += cas_checks(validate_key(cond.key), cond.revision)
    clean: list[Put | Delete] = []
    seen: set[str] = set()
    for op in ops:
        if isinstance(op, Put):
            op = validate_put(op.key, op.value, op.expires)
        elif isinstance(op, Delete):
            op = Delete(validate_key(op.key))
        else:
            raise BadParameter(f"atomic ops must be Put or Delete, not {op!r}")
        if op.key in seen:
            raise BadParameter(f"key {op.key!r} appears in more than one op of one transaction")
        seen.add(op.key)
        clean.append(op)
    return checks, clean


def validate_after(after: object) -> int | None:
    if after is None:
        return None
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise BadParameter(f"watch after= must be a revision >= 0 or None, not {after!r}")
    return after


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``, or None when no
    such string exists (empty prefix). Code-point order, which is also UTF-8 byte order."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last == 0x10FFFF:
            continue
        nxt = last + 1
        if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be encoded; skip past them
            nxt = 0xE000
        return "".join(chars) + chr(nxt)
    return None


def compacted_error(revision: int) -> BadParameter:
    return BadParameter(f"revision {revision} has been compacted; re-list")


def closed_error() -> ConnectionProblem:
    return ConnectionProblem("the backend is closed")


class WriteVerbs:
    """``put``, ``create``, ``compare_and_swap``, ``delete`` and ``atomic`` of the ``Backend``
    protocol over one primitive, ``_write(checks, ops) -> revision`` (check and apply in one
    transaction), for the backends that store outside the process (SQLite, PostgreSQL).
    ``_check_key`` lets a store refuse keys it cannot hold (PostgreSQL: NUL, surrogates)."""

    async def _write(self, checks: Sequence[Check], ops: Sequence[Put | Delete]) -> int:
        raise NotImplementedError

    def _check_key(self, key: str) -> str:
        return key

    def _put_op(self, key: str, value: bytes, expires: float | None) -> Put:
        op = validate_put(key, value, expires)
        self._check_key(op.key)
        return op

    async def put(self, key: str, value: bytes, *, expires: float | None = None) -> Item:
        op = self._put_op(key, value, expires)
        return _written(op, await self._write([], [op]))

    async def create(self, key: str, value: bytes, *, expires: float | None = None) -> Item:
        op = self._put_op(key, value, expires)
        return _written(op, await self._write(create_checks(op.key), [op]))

    async def compare_and_swap(
        self, key: str, expected_revision: int, value: bytes, *, expires: float | None = None
    ) -> Item:
        op = self._put_op(key, value, expires)
        return _written(op, await self._write(cas_checks(op.key, expected_revision), [op]))

    async def delete(self, key: str, *, expected_revision: int | None = None) -> None:
        key = self._check_key(validate_key(key))
        await self._write(delete_checks(key, expected_revision), [Delete(key)])

    async def atomic(
        self, conditions: Sequence[Condition], ops: Sequence[Put | Delete]
    ) -> int:
        checks, clean = validate_atomic(conditions, ops)
        for item in (*checks, *clean):
            self._check_key(item.key)
        return await self._write(checks, clean)


def _written(op: Put, revision: int) -> Item:
    return Item(op.key, op.value, revision, op.expires)
