"""TOTP second factor (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps) with replay protection.

Called by :mod:`limen.auth.credentials.login` at login, and by the auth server's sign-up handler
(``new_secret``, ``provisioning_uri``) whose answer ``lmsh signup`` prints for the user's
authenticator app. Pure functions: the time is passed in (``now``, Unix seconds) and the last
accepted step is kept by the caller in the user's credentials record.

A code is accepted for the current step and one step either side (clock skew), and only if
its step is later than the last step accepted for this user: a code works once, and after a
newer code has been used an older one no longer does.
"""

from __future__ import annotations

import hmac

import pyotp

from limen.errors import AccessDenied, BadParameter

__all__ = [
    "DIGITS",
    "INVALID_REASON",
    "NEVER_USED",
    "PERIOD_SECONDS",
    "REPLAYED_REASON",
    "SKEW_STEPS",
    "check_secret",
    "new_secret",
    "provisioning_uri",
    "totp_code",
    "totp_step",
    "verify_totp",
]

DIGITS = 6
"""Digits per code; 6 is what every authenticator app shows by default."""
PERIOD_SECONDS = 30
"""Length of one TOTP step."""
SKEW_STEPS = 1
"""Steps accepted either side of the current one, for clocks that are slightly off."""
NEVER_USED = -1
"""``last_used_step`` of a user who has never used a code: every real step is later."""

REPLAYED_REASON = "one-time code already used"
"""``AccessDenied`` message of ``verify_totp`` for a right code whose step was already used."""
INVALID_REASON = "invalid one-time code"
"""``AccessDenied`` message of ``verify_totp`` for a wrong or malformed code."""


def _totp(secret: str) -> pyotp.TOTP:
    """A ``pyotp.TOTP`` for ``secret``; ``BadParameter`` if it is not base32 of >= 128 bits."""
    if not isinstance(secret, str) or not secret:
        raise BadParameter("TOTP secret must be a non-empty base32 string")
    bad = BadParameter("TOTP secret must be base32 of at least 128 bits")
    try:  # pyotp decodes (and checks) the secret in its constructor
        totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD_SECONDS)
        key = totp.byte_secret()
    except ValueError:  # binascii.Error is a ValueError
        raise bad from None
    if len(key) < 16:
        raise bad
    return totp


def check_secret(secret: str) -> None:
    """Raise ``BadParameter`` unless ``secret`` is base32 of at least 128 bits."""
    _totp(secret)


def new_secret() -> str:
    """A fresh random TOTP secret: 160 bits (RFC 4226's recommendation) as 32 base32 chars."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, user: str, issuer: str) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app reads (usually from a QR code).

    ``issuer`` is the cluster name, so a user with accounts on several clusters can tell the
    entries apart.
    """
    if not user or not issuer:
        raise BadParameter("a TOTP provisioning URI needs a user name and an issuer")
    return _totp(secret).provisioning_uri(name=user, issuer_name=issuer)


def totp_step(now: float) -> int:
    """The RFC 6238 time step (counter) that contains ``now``."""
    return int(now // PERIOD_SECONDS)


def totp_code(secret: str, now: float) -> str:
    """The code an authenticator app shows at ``now`` (for tests and tooling)."""
    return _totp(secret).generate_otp(totp_step(now))


def verify_totp(secret: str, code: str, now: float, last_used_step: int) -> int:
    """Check ``code`` at ``now`` and return its step, which the caller stores as the new
    ``last_used_step``.

    Accepts the current step and ``SKEW_STEPS`` either side. Raises ``AccessDenied``:
    "one-time code already used" if the code is right but its step is not later than
    ``last_used_step`` (the same code twice, or an older code after a newer one), and
    "invalid one-time code" otherwise. Spaces in the code are ignored ("123 456").
    """
    totp = _totp(secret)
    typed = code.replace(" ", "") if isinstance(code, str) else ""
    if len(typed) != DIGITS or not typed.isascii() or not typed.isdigit():
        raise AccessDenied(INVALID_REASON)
    current = totp_step(now)
    fresh: int | None = None
    replayed = False
    # Compare every candidate (no early exit), newest first so the latest unused step wins.
    for step in range(current + SKEW_STEPS, current - SKEW_STEPS - 1, -1):
        if step < 0:
            continue
        matches = hmac.compare_digest(totp.generate_otp(step).encode(), typed.encode())
        if matches and step > last_used_step and fresh is None:
            fresh = step
        elif matches:
            replayed = True
    if fresh is not None:
        return fresh
    raise AccessDenied(REPLAYED_REASON if replayed else INVALID_REASON)
