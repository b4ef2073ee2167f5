"""Validity-window arithmetic shared by the SSH, X.509 and JWT signers and verifiers.

Every signer back-dates the start of validity by :data:`CLOCK_SKEW` so a peer whose clock is a
little behind still accepts a certificate issued a moment ago, and every verifier takes an
injectable ``now`` so tests can check expiry without waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from limen.errors import BadParameter

__all__ = ["CLOCK_SKEW", "check_ttl", "utc_now"]

CLOCK_SKEW = timedelta(minutes=1)
"""How far before the signing time a certificate's validity starts."""


def utc_now(now: datetime | None) -> datetime:
    """``now`` as aware UTC (the current time when ``None``); naive datetimes are refused."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise BadParameter("'now' must be a timezone-aware datetime")
    return now.astimezone(UTC)


def check_ttl(ttl: timedelta) -> timedelta:
    """``ttl`` if it is a positive timedelta; :class:`BadParameter` otherwise."""
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise BadParameter(f"certificate TTL must be a positive duration, got {ttl!r}")
    return ttl
