"""Login lockout after repeated failures (limen.auth.credentials.lockout)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from limen.auth.credentials.lockout import (
    LockoutPolicy,
    LockoutState,
    check_not_locked,
    is_locked,
    record_failure,
    record_success,
)
from limen.errors import BadParameter, LimitExceeded

T0 = datetime(2024, 5, 1, 13, 50, 0, tzinfo=UTC).timestamp()
MIN = 60.0


def fail_at(*offsets_min: float, state: LockoutState | None = None) -> LockoutState:
    state = state or LockoutState()
    for offset in offsets_min:
        state = record_failure(state, T0 + offset * MIN)
    return state


@pytest.mark.parametrize(
    ("failures_min", "check_min", "locked"),
    [
        ((0, 1, 2, 3), 4, False),  # four failures: not yet
        ((0, 1, 2, 3, 4), 4, True),  # the fifth within ten minutes locks
        ((0, 2, 4, 6, 9.9), 10, True),  # all five inside the window
        ((0, 3, 6, 9, 12), 12, False),  # the first is 12 minutes old when the fifth comes
        ((0, 1, 2, 3, 10), 10, False),  # exactly ten minutes old no longer counts
        ((0, 1, 2, 3, 4), 18.99, True),  # locked for fifteen minutes from the fifth failure
        ((0, 1, 2, 3, 4), 19, False),  # ...and not a moment longer
    ],
)
def test_lockout_table(failures_min: tuple[float, ...], check_min: float, locked: bool) -> None:
    state = fail_at(*failures_min)
    assert is_locked(state, T0 + check_min * MIN) is locked


def test_locked_message_names_user_time_and_count() -> None:
    state = fail_at(0, 1, 2, 3, 4)
    assert state.locked_until == T0 + 19 * MIN
    with pytest.raises(LimitExceeded) as err:
        check_not_locked(state, T0 + 5 * MIN, "alice")
    assert str(err.value) == "user alice is locked until 14:09:00 UTC after 5 failed logins"
    check_not_locked(state, T0 + 19 * MIN, "alice")  # expired: no error
    check_not_locked(fail_at(0, 1), T0 + 2 * MIN, "alice")


def test_failures_during_a_lock_do_not_extend_it() -> None:
    state = fail_at(0, 1, 2, 3, 4)
    assert fail_at(10, 18, state=state) == state


def test_after_an_expired_lock_the_count_starts_over() -> None:
    state = fail_at(0, 1, 2, 3, 4, 19)
    assert state == LockoutState(failures=(T0 + 19 * MIN,), locked_until=None)
    assert not is_locked(fail_at(20, 21, 22, state=state), T0 + 22 * MIN)
    assert is_locked(fail_at(20, 21, 22, 23, state=state), T0 + 23 * MIN)


def test_success_clears_failures() -> None:
    state = record_success(fail_at(0, 1, 2, 3), T0 + 4 * MIN)
    assert state == LockoutState()
    assert not is_locked(fail_at(5, 6, 7, 8, state=state), T0 + 8 * MIN)


def test_success_does_not_lift_an_active_lock() -> None:
    locked = fail_at(0, 1, 2, 3, 4)
    assert record_success(locked, T0 + 5 * MIN) == locked
    assert record_success(locked, T0 + 19 * MIN) == LockoutState()


def test_stored_failures_stay_bounded() -> None:
    state = fail_at(*range(0, 200, 3))  # one failure every 3 minutes never locks
    assert state.locked_until is None
    assert len(state.failures) <= 4


def test_custom_policy() -> None:
    policy = LockoutPolicy(max_failures=3, window=MIN, lock_duration=30 * MIN)
    state = LockoutState()
    for second in (0, 20, 40):
        state = record_failure(state, T0 + second, policy)
    assert state.locked_until == T0 + 40 + 30 * MIN
    with pytest.raises(LimitExceeded, match="after 3 failed logins"):
        check_not_locked(state, T0 + 41, "bob")


@pytest.mark.parametrize(
    "kwargs", [{"max_failures": 0}, {"window": 0}, {"lock_duration": -1}]
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(BadParameter):
        LockoutPolicy(**kwargs)  # type: ignore[arg-type]
