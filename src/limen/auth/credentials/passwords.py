"""Password hashing and the password policy for local users (Argon2id via argon2-cffi).

Called by :mod:`limen.auth.credentials.login` (``authenticate`` verifies, ``with_password`` hashes)
and through it by the auth server's login, sign-up and password-change handlers. Pure CPU
work, no I/O: one hash or verify costs ~100 ms of one core, so the auth server runs these
calls in a worker thread (``asyncio.to_thread``), never on the event loop.

Parameters (``DEFAULT_PARAMS``), measured on this kind of machine (2 cores, idle), one verify:

    memory 64 MiB, time 3, parallelism 1   ~215 ms   too slow for a login server here
    memory 64 MiB, time 2, parallelism 1   ~160 ms   over the 150 ms budget
    memory 64 MiB, time 1, parallelism 1   90-110 ms chosen
    memory 46 MiB, time 1, parallelism 1   ~65 ms    OWASP's first recommendation

About half of each call is the kernel handing out 64 MiB of fresh pages, so every extra pass
adds ~55 ms; a second one does not fit the budget. The chosen set is OWASP's first
recommendation (46 MiB, one pass) with more memory, the parameter that hurts GPU and ASIC
guessing most. Parallelism 1 keeps
one login on one core and the latency the same on a 1-CPU container. Every stored hash
carries its parameters, so raising ``DEFAULT_PARAMS`` later is safe: ``verify_password``
reports ``needs_rehash`` and the next successful login re-hashes.

Passwords are NFKC-normalised before hashing and verifying (NIST SP 800-63B 5.1.1.2), so a
password typed on a system that composes accents differently still matches.

Unknown users (and users who have not chosen a password yet) are answered by verifying the
password against a dummy hash made with the same parameters: the response takes as long as
for a real user, so timing does not reveal which user names exist.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import unicodedata
from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from limen.errors import BadParameter

__all__ = [
    "DEFAULT_PARAMS",
    "DEFAULT_POLICY",
    "PasswordCheck",
    "PasswordParams",
    "PasswordPolicy",
    "check_password_policy",
    "dummy_verify",
    "hash_password",
    "rehash",
    "verify_password",
]


@dataclass(frozen=True)
class PasswordParams:
    """Argon2id cost parameters for new hashes (verification reads them from the hash)."""

    memory_kib: int = 64 * 1024
    """Memory per hash in KiB; the main defence against GPU and ASIC guessing."""
    time_cost: int = 1
    """Number of passes over the memory."""
    parallelism: int = 1
    """Lanes (threads) per hash; 1 keeps one login on one core."""

    def __post_init__(self) -> None:
        if self.time_cost < 1 or self.parallelism < 1 or self.memory_kib < 8 * self.parallelism:
            raise BadParameter(
                "Argon2 parameters need time_cost >= 1, parallelism >= 1 and "
                "memory_kib >= 8 * parallelism"
            )


DEFAULT_PARAMS = PasswordParams()


@dataclass(frozen=True)
class PasswordPolicy:
    """What a new password must satisfy; checked when a password is set, not at login."""

    min_length: int = 12
    """Minimum length in characters after NFKC normalisation (Teleport's and PCI DSS 8.3.6's 12)."""
    max_bytes: int = 1024
    """Maximum length in UTF-8 bytes as typed, so a request cannot make auth hash megabytes."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_length <= self.max_bytes:
            raise BadParameter("password policy needs 1 <= min_length <= max_bytes")


DEFAULT_POLICY = PasswordPolicy()


@dataclass(frozen=True)
class PasswordCheck:
    """The result of ``verify_password``: ``ok``, and whether the stored hash should be redone."""

    ok: bool
    needs_rehash: bool = False

    def __bool__(self) -> bool:
        return self.ok


def _encode(password: str, max_bytes: int) -> bytes:
    """NFKC-normalised UTF-8 bytes of ``password``; ``BadParameter`` if it is not a string,
    is over ``max_bytes`` as typed, or is not valid Unicode text (lone surrogates)."""
    if not isinstance(password, str):
        raise BadParameter("password must be a string")
    too_long = BadParameter(f"password must be at most {max_bytes} bytes long")
    if len(password) > max_bytes:  # every character is at least one byte: skip encoding
        raise too_long
    try:
        typed = password.encode("utf-8")
    except UnicodeEncodeError:
        raise BadParameter("password must be valid Unicode text") from None
    if len(typed) > max_bytes:
        raise too_long
    return unicodedata.normalize("NFKC", password).encode("utf-8")


def check_password_policy(password: str, policy: PasswordPolicy = DEFAULT_POLICY) -> None:
    """Raise ``BadParameter`` with one sentence if ``password`` may not be set as a password."""
    if password == "":
        raise BadParameter("password must not be empty")
    encoded = _encode(password, policy.max_bytes)
    if len(encoded.decode("utf-8")) < policy.min_length:
        raise BadParameter(f"password must be at least {policy.min_length} characters long")


@functools.lru_cache(maxsize=8)
def _hasher(params: PasswordParams) -> argon2.PasswordHasher:
    return argon2.PasswordHasher(
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=32,
        salt_len=16,
        type=argon2.Type.ID,
    )


@functools.lru_cache(maxsize=8)
def _dummy_hash(params: PasswordParams) -> str:
    """A hash of a random password nobody knows, with ``params``; made once per process."""
    return _hasher(params).hash(secrets.token_urlsafe(32))


_NO_LIMIT = 1 << 62


def rehash(password: str, params: PasswordParams = DEFAULT_PARAMS) -> str:
    """Hash without the policy check: only for re-hashing a password that just verified
    (``needs_rehash``), which may predate the current policy."""
    return _hasher(params).hash(_encode(password, _NO_LIMIT))


def hash_password(
    password: str,
    params: PasswordParams = DEFAULT_PARAMS,
    policy: PasswordPolicy = DEFAULT_POLICY,
) -> str:
    """Check ``password`` against ``policy`` and return its Argon2id hash (PHC string)."""
    check_password_policy(password, policy)
    return rehash(password, params)


def verify_password(
    stored_hash: str | None,
    password: str,
    params: PasswordParams = DEFAULT_PARAMS,
    max_bytes: int = DEFAULT_POLICY.max_bytes,
) -> PasswordCheck:
    """Whether ``password`` matches ``stored_hash``; never raises for a wrong or odd input.

    ``stored_hash=None`` (unknown user, or no password chosen yet), an unreadable hash and a
    password the policy could never have accepted (over ``max_bytes``, not valid Unicode) are
    answered after a dummy verify, so they take as long as a real mismatch. The comparison
    inside Argon2 is constant-time. ``needs_rehash`` is set on a match whose hash was made
    with other parameters than ``params``.
    """
    try:
        encoded = _encode(password, max_bytes)
    except BadParameter:
        stored_hash, encoded = None, b""
    if stored_hash is None:
        dummy_verify(encoded, params)
        return PasswordCheck(ok=False)
    hasher = _hasher(params)
    try:
        hasher.verify(stored_hash, encoded)
    except InvalidHashError:
        dummy_verify(encoded, params)
        return PasswordCheck(ok=False)
    except VerificationError:
        return PasswordCheck(ok=False)
    return PasswordCheck(ok=True, needs_rehash=hasher.check_needs_rehash(stored_hash))


def dummy_verify(password: str | bytes, params: PasswordParams = DEFAULT_PARAMS) -> None:
    """Spend the time of one real verify with ``params`` and learn nothing (always fails)."""
    with contextlib.suppress(VerificationError, InvalidHashError, UnicodeEncodeError):
        _hasher(params).verify(_dummy_hash(params), password)
