"""Go-style durations (``8h``, ``1h30m``, ``500ms``) as Teleport's resources write them.

Kept apart from ``limen.api.validation`` (which loads the JSON Schemas) so that the command
lines and the RBAC engine can parse a ``--ttl`` without that cost. Pure; no I/O.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from limen.errors import BadParameter

__all__ = ["parse_duration"]

_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:h|ms|m|s))+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s)")
_UNIT_SECONDS = {"h": Decimal(3600), "m": Decimal(60), "s": Decimal(1), "ms": Decimal("0.001")}


def parse_duration(text: str) -> timedelta:
    """Parse a positive Go-style duration: ``8h``, ``30m``, ``1h30m``, ``1.5h``, ``90s``, ``500ms``.

    Raises :class:`BadParameter` for anything else (``8 hours``, ``8``, ``-1h``, ``0s``).
    """
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        raise BadParameter(
            f"{text!r} is not a valid duration (use a number and a unit: 8h, 30m, 1h30m, 90s)"
        )
    seconds = Decimal(0)
    try:
        for number, unit in _DURATION_PART.findall(text):
            seconds += Decimal(number) * _UNIT_SECONDS[unit]
        value = timedelta(microseconds=int(seconds * 1_000_000))
    except (OverflowError, InvalidOperation):
        raise BadParameter(f"{text!r} is too long a duration") from None
    if value <= timedelta(0):
        raise BadParameter(f"{text!r} is not a positive duration")
    return value
