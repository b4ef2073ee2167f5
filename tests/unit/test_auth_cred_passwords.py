"""Password hashing, verification and policy (limen.auth.credentials.passwords)."""

from __future__ import annotations

import time
from collections.abc import Callable

import argon2
import pytest

from limen.auth.credentials import passwords
from limen.auth.credentials.passwords import (
    DEFAULT_PARAMS,
    PasswordCheck,
    PasswordParams,
    PasswordPolicy,
    check_password_policy,
    hash_password,
    verify_password,
)
from limen.errors import BadParameter

FAST = PasswordParams(memory_kib=256, time_cost=1, parallelism=1)
GOOD = "correct horse battery"


def test_hash_then_verify_right_and_wrong_password() -> None:
    stored = hash_password(GOOD, FAST)
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, GOOD, FAST) == PasswordCheck(ok=True, needs_rehash=False)
    assert verify_password(stored, GOOD + "!", FAST) == PasswordCheck(ok=False)
    assert not verify_password(stored, "", FAST)


def test_each_hash_is_salted() -> None:
    assert hash_password(GOOD, FAST) != hash_password(GOOD, FAST)


def test_default_parameters_are_the_documented_ones() -> None:
    assert (DEFAULT_PARAMS.memory_kib, DEFAULT_PARAMS.time_cost, DEFAULT_PARAMS.parallelism) == (
        65536, 1, 1,
    )
    stored = hash_password(GOOD)
    params = argon2.extract_parameters(stored)
    assert (params.type, params.memory_cost, params.time_cost, params.parallelism) == (
        argon2.Type.ID, 65536, 1, 1,
    )
    assert verify_password(stored, GOOD).ok


def test_hash_made_with_other_parameters_verifies_and_asks_for_rehash() -> None:
    old = hash_password(GOOD, PasswordParams(memory_kib=128, time_cost=2))
    check = verify_password(old, GOOD, FAST)
    assert check.ok
    assert check.needs_rehash
    assert not verify_password(old, "wrong password!", FAST).needs_rehash


def test_rehash_skips_the_policy_for_a_legacy_password() -> None:
    legacy = passwords.rehash("short", FAST)  # set before the 12-character policy
    assert verify_password(legacy, "short", FAST).ok


def test_unicode_passwords_are_normalised() -> None:
    composed = "Am\u00e9lie-passphrase"
    decomposed = "Ame\u0301lie-passphrase"
    assert verify_password(hash_password(decomposed, FAST), composed, FAST).ok


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", "password must not be empty"),
        ("a" * 11, "password must be at least 12 characters long"),
        ("\u00e9" * 11, "password must be at least 12 characters long"),
        ("a" * 1025, "password must be at most 1024 bytes long"),
        ("\u00e9" * 513, "password must be at most 1024 bytes long"),  # 1026 bytes, 513 chars
        ("\ud800" * 12, "password must be valid Unicode text"),
        (b"bytes-password", "password must be a string"),
        (None, "password must be a string"),
    ],
)
def test_policy_rejects_with_one_sentence(password: object, message: str) -> None:
    with pytest.raises(BadParameter) as err:
        check_password_policy(password)  # type: ignore[arg-type]
    assert str(err.value) == message
    with pytest.raises(BadParameter):
        hash_password(password, FAST)  # type: ignore[arg-type]


@pytest.mark.parametrize("password", ["a" * 12, "\u00e9" * 512, "x" * 1024, "twelve chars"])
def test_policy_accepts(password: str) -> None:
    check_password_policy(password)
    assert verify_password(hash_password(password, FAST), password, FAST).ok


def test_custom_policy() -> None:
    check_password_policy("a" * 8, PasswordPolicy(min_length=8))
    with pytest.raises(BadParameter, match="at most 16 bytes"):
        check_password_policy("a" * 17, PasswordPolicy(min_length=8, max_bytes=16))
    with pytest.raises(BadParameter):
        PasswordPolicy(min_length=0)
    with pytest.raises(BadParameter):
        PasswordParams(time_cost=0)


@pytest.mark.parametrize(
    ("stored", "password"),
    [
        (None, GOOD),
        ("not-a-hash", GOOD),
        ("$argon2id$v=19$m=256,t=1,p=1$garbage", GOOD),
        ("valid", "a" * 5000),  # longer than any password the policy accepts
        ("valid", "\ud800" * 12),  # lone surrogates cannot be encoded
        ("valid", None),
    ],
)
def test_verify_never_raises_and_refuses_odd_inputs(stored: str | None, password: str) -> None:
    if stored == "valid":
        stored = hash_password(GOOD, FAST)
    assert verify_password(stored, password, FAST) == PasswordCheck(ok=False)


def _fastest(fn: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize(
    ("stored", "password"),
    [(None, GOOD), ("not-a-hash", GOOD), ("valid", "a" * 5000), ("valid", "\ud800" * 12)],
)
def test_refusals_without_a_usable_hash_cost_as_much_as_a_real_verify(
    stored: str | None, password: str
) -> None:
    # Timing must not tell an unknown user (or a user without a password) from a real one.
    params = PasswordParams(memory_kib=16 * 1024, time_cost=2)
    real = hash_password(GOOD, params)
    if stored == "valid":
        stored = real
    verify_password(None, GOOD, params)  # warm the dummy-hash cache
    real_cost = _fastest(lambda: verify_password(real, "wrong password!", params))
    odd_cost = _fastest(lambda: verify_password(stored, password, params))
    assert odd_cost > 0.3 * real_cost, (odd_cost, real_cost)


def test_dummy_hash_uses_the_configured_parameters() -> None:
    params = PasswordParams(memory_kib=512, time_cost=3)
    dummy = argon2.extract_parameters(passwords._dummy_hash(params))
    assert (dummy.memory_cost, dummy.time_cost, dummy.parallelism) == (512, 3, 1)
