"""User names without credentials are locked exactly like real users (no user enumeration
through the lockout), in a bounded in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from limen.auth.credentials.lockout import LockoutPolicy, LockoutState, UnknownNameLockouts
from limen.auth.credentials.login import (
    AuthResult,
    LocalCredentials,
    authenticate,
    reject_unknown_user,
)
from limen.auth.credentials.passwords import PasswordParams, hash_password
from limen.errors import LimitExceeded

FAST = PasswordParams(memory_kib=256, time_cost=1)
T0 = datetime(2024, 5, 1, 13, 50, 10, tzinfo=UTC).timestamp()
WRONG = "wrong password!!"


def _known_attempts(count: int) -> list[tuple[bool, str, str]]:
    creds = LocalCredentials(password_hash=hash_password("correct horse battery", FAST))
    answers = []
    for i in range(count):
        result = authenticate(creds, WRONG, None, user="name", second_factor="off",
                              now=T0 + i, params=FAST)
        creds = result.creds
        answers.append((result.ok, result.reason, type(_raised(result)).__name__))
    return answers


def _unknown_attempts(count: int) -> list[tuple[bool, str, str]]:
    state = LockoutState()
    answers = []
    for i in range(count):
        result = reject_unknown_user(WRONG, user="name", second_factor="off", now=T0 + i,
                                     state=state, params=FAST)
        state = result.creds.lockout_state
        answers.append((result.ok, result.reason, type(_raised(result)).__name__))
    return answers


def _raised(result: AuthResult) -> Exception:
    try:
        result.raise_for_failure()
    except Exception as err:
        return err
    raise AssertionError("no refusal")


def test_the_sixth_attempt_answers_alike_for_known_and_unknown_names() -> None:
    known, unknown = _known_attempts(7), _unknown_attempts(7)
    assert known == unknown
    assert known[5][2] == "LimitExceeded"
    assert known[4][2] == "AccessDenied"
    assert "is locked until" in known[5][1]


def test_a_locked_unknown_name_is_recorded_as_such() -> None:
    state = LockoutState(failures=(T0,) * 5, locked_until=T0 + 900)
    result = reject_unknown_user(WRONG, user="ghost", second_factor="otp", now=T0 + 1,
                                 state=state, params=FAST)
    assert result.reason_internal == "unknown_user_locked"
    assert result.creds.lockout_state == state
    with pytest.raises(LimitExceeded):
        result.raise_for_failure()


def test_store_compare_and_swap() -> None:
    store = UnknownNameLockouts()
    first = LockoutState(failures=(T0,))
    assert store.replace("a", LockoutState(), first, T0)
    assert store.get("a") == first
    assert not store.replace("a", LockoutState(), LockoutState(failures=(T0 + 1,)), T0 + 1)
    assert store.get("a") == first
    assert store.replace("a", first, LockoutState(), T0 + 2)  # cleared: forgotten
    assert len(store) == 0


def test_store_is_bounded_and_drops_stale_names_first() -> None:
    policy = LockoutPolicy(window=60.0, lock_duration=60.0)
    store = UnknownNameLockouts(max_names=3, policy=policy)
    locked = LockoutState(failures=(T0,), locked_until=T0 + 1000)
    assert store.replace("locked", LockoutState(), locked, T0)
    assert store.replace("old", LockoutState(), LockoutState(failures=(T0,)), T0)
    assert store.replace("b", LockoutState(), LockoutState(failures=(T0 + 100,)), T0 + 100)
    assert store.replace("c", LockoutState(), LockoutState(failures=(T0 + 100,)), T0 + 100)
    assert len(store) == 3
    assert store.get("old") == LockoutState()  # its failure no longer counts: dropped first
    assert store.get("locked") == locked
    for i in range(5):
        store.replace(f"n{i}", LockoutState(), LockoutState(failures=(T0 + 101,)), T0 + 101)
    assert len(store) == 3
