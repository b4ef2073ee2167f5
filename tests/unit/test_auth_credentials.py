"""The login decision over a local user's credentials (limen.auth.credentials.login)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import argon2
import pytest

from limen.auth.credentials import otp
from limen.auth.credentials.lockout import LockoutPolicy
from limen.auth.credentials.login import (
    REASONS,
    AuthResult,
    LocalCredentials,
    authenticate,
    reject_unknown_user,
)
from limen.auth.credentials.passwords import PasswordParams
from limen.errors import AccessDenied, BadParameter, LimitExceeded

FAST = PasswordParams(memory_kib=256, time_cost=1)
PASSWORD = "correct horse battery"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
T0 = datetime(2024, 5, 1, 13, 50, 10, tzinfo=UTC).timestamp()  # 10 s into a TOTP step
STEP = otp.totp_step(T0)
MIN = 60.0
DENIED = "invalid password or one-time code"


def code(step_offset: int = 0) -> str:
    return otp.totp_code(SECRET, (STEP + step_offset) * otp.PERIOD_SECONDS)


@pytest.fixture(scope="module")
def enrolled() -> LocalCredentials:
    creds = LocalCredentials.new(T0 - 86400).with_password(PASSWORD, T0 - 86400, FAST)
    return creds.with_totp_secret(SECRET, T0 - 86400)


def login(
    creds: LocalCredentials,
    password: str = PASSWORD,
    otp_code: str | None = None,
    now: float = T0,
    second_factor: Any = "otp",
    **kwargs: Any,
) -> AuthResult:
    if otp_code is None and second_factor == "otp":
        otp_code = otp.totp_code(SECRET, now)
    return authenticate(
        creds, password, otp_code, user="alice", second_factor=second_factor, now=now,
        params=FAST, **kwargs,
    )


@dataclass(frozen=True)
class Case:
    name: str
    password: str
    otp_code: str | None
    second_factor: str
    ok: bool
    reason: str
    internal: str


CASES = [
    Case("right password and code", PASSWORD, code(), "otp", True, "", "ok"),
    Case("code of the previous step (skew)", PASSWORD, code(-1), "otp", True, "", "ok"),
    Case("wrong password", "wrong password!!", code(), "otp", False, DENIED, "bad_password"),
    Case("wrong code", PASSWORD, "000000", "otp", False, DENIED, "bad_otp"),
    Case("code two steps old", PASSWORD, code(-2), "otp", False, DENIED, "bad_otp"),
    Case("empty code", PASSWORD, "", "otp", False, DENIED, "bad_otp"),
    Case("no code", PASSWORD, None, "otp", False, DENIED, "bad_otp"),
    Case("both wrong", "wrong password!!", "000000", "otp", False, DENIED, "bad_password"),
    Case("second factor off", PASSWORD, None, "off", True, "", "ok"),
    Case("off, wrong password", "nope nope nope", None, "off", False, "invalid password",
         "bad_password"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_login_table(enrolled: LocalCredentials, case: Case) -> None:
    result = authenticate(
        enrolled, case.password, case.otp_code, user="alice",
        second_factor=case.second_factor, now=T0, params=FAST,  # type: ignore[arg-type]
    )
    assert (result.ok, result.reason, result.reason_internal) == (
        case.ok, case.reason, case.internal,
    )
    assert result.reason_internal in REASONS
    assert result.creds.updated == T0
    if case.ok:
        assert result.creds.failures == ()
        expected_step = enrolled.totp_last_step if case.second_factor == "off" else (
            otp.verify_totp(SECRET, case.otp_code or "", T0, otp.NEVER_USED)
        )
        assert result.creds.totp_last_step == expected_step
    else:
        assert result.creds.failures == (T0,)  # the caller persists the failure
        assert result.creds.totp_last_step == enrolled.totp_last_step


def test_same_code_twice_is_refused_as_replay(enrolled: LocalCredentials) -> None:
    first = login(enrolled, otp_code=code())
    assert first.ok
    second = login(first.creds, otp_code=code(), now=T0 + 5)
    assert (second.ok, second.reason, second.reason_internal) == (False, DENIED, "otp_replayed")
    assert second.creds.failures == (T0 + 5,)


def test_older_code_after_a_newer_one_is_refused(enrolled: LocalCredentials) -> None:
    newer = login(enrolled, otp_code=code(+1))
    assert newer.ok
    older = login(newer.creds, otp_code=code(0), now=T0 + 1)
    assert older.reason_internal == "otp_replayed"


def test_skewed_code_is_accepted_once_and_not_after_its_step(enrolled: LocalCredentials) -> None:
    first = login(enrolled, otp_code=code(-1))
    assert first.ok
    assert first.creds.totp_last_step == STEP - 1
    assert login(first.creds, otp_code=code(-1), now=T0 + 1).reason_internal == "otp_replayed"
    current = login(first.creds, otp_code=code(0), now=T0 + 2)
    assert current.ok
    assert login(current.creds, otp_code=code(-1), now=T0 + 3).reason_internal == "otp_replayed"


def test_code_typed_with_a_wrong_password_is_not_consumed(enrolled: LocalCredentials) -> None:
    typo = login(enrolled, password="wrong password!!", otp_code=code())
    assert not typo.ok
    assert login(typo.creds, otp_code=code(), now=T0 + 3).ok


def fail(creds: LocalCredentials, *minutes: float) -> LocalCredentials:
    for minute in minutes:
        result = login(creds, password="wrong password!!", now=T0 + minute * MIN)
        assert not result.ok
        creds = result.creds
    return creds


def test_five_failures_in_ten_minutes_lock_even_the_right_password(
    enrolled: LocalCredentials,
) -> None:
    locked = fail(enrolled, 0, 1, 2, 3, 4)
    assert locked.locked_until == T0 + 19 * MIN
    result = login(locked, now=T0 + 5 * MIN)
    assert (result.ok, result.reason_internal) == (False, "locked")
    assert result.reason == "user alice is locked until 14:09:10 UTC after 5 failed logins"
    assert result.creds == locked  # refused before any check: nothing to persist
    with pytest.raises(LimitExceeded, match="is locked until"):
        result.raise_for_failure()


def test_lock_expires_after_fifteen_minutes(enrolled: LocalCredentials) -> None:
    locked = fail(enrolled, 0, 1, 2, 3, 4)
    assert login(locked, now=T0 + 19 * MIN - 1).reason_internal == "locked"
    after = login(locked, now=T0 + 19 * MIN)
    assert after.ok
    assert (after.creds.failures, after.creds.locked_until) == ((), None)


def test_failures_older_than_ten_minutes_do_not_count(enrolled: LocalCredentials) -> None:
    creds = fail(enrolled, 0, 3, 6, 9, 12)
    assert creds.locked_until is None
    assert login(creds, now=T0 + 12.5 * MIN).ok


def test_success_resets_the_failure_count(enrolled: LocalCredentials) -> None:
    creds = fail(enrolled, 0, 1, 2, 3)
    success = login(creds, now=T0 + 4 * MIN)
    assert success.ok
    assert success.creds.failures == ()
    assert fail(success.creds, 5, 6, 7, 8).locked_until is None


def test_custom_lockout_policy(enrolled: LocalCredentials) -> None:
    policy = LockoutPolicy(max_failures=2, window=MIN, lock_duration=MIN)
    creds = enrolled
    for second in (0, 1):
        creds = login(creds, password="wrong password!!", now=T0 + second, policy=policy).creds
    assert login(creds, now=T0 + 2, policy=policy).reason_internal == "locked"
    assert login(creds, now=T0 + 61, policy=policy).ok


def test_user_without_password_is_refused_and_counted() -> None:
    invited = LocalCredentials.new(T0).with_totp_secret(SECRET, T0)
    result = login(invited, password="", now=T0 + 1)
    assert (result.ok, result.reason, result.reason_internal) == (False, DENIED, "no_password_set")
    assert result.creds.failures == (T0 + 1,)


def test_otp_required_but_not_enrolled(enrolled: LocalCredentials) -> None:
    no_totp = enrolled.with_totp_secret(None, T0)
    result = login(no_totp)
    assert (result.ok, result.reason_internal) == (False, "no_otp_set")
    assert login(no_totp, second_factor="off").ok


def test_second_factor_off_ignores_the_code(enrolled: LocalCredentials) -> None:
    result = login(enrolled, otp_code="garbage", second_factor="off")
    assert result.ok
    assert result.creds.totp_last_step == enrolled.totp_last_step


def test_unknown_second_factor_is_a_bad_parameter(enrolled: LocalCredentials) -> None:
    with pytest.raises(BadParameter, match="second_factor"):
        login(enrolled, second_factor="webauthn")


def test_corrupt_totp_secret_refuses_instead_of_crashing(enrolled: LocalCredentials) -> None:
    corrupt = replace(enrolled, totp_secret="not base32!")
    assert login(corrupt, otp_code="123456").reason_internal == "bad_otp"


def test_success_rehashes_a_hash_made_with_old_parameters(enrolled: LocalCredentials) -> None:
    stronger = PasswordParams(memory_kib=512, time_cost=2)
    result = authenticate(
        enrolled, PASSWORD, code(), user="alice", second_factor="otp", now=T0, params=stronger
    )
    assert result.ok
    assert result.creds.password_hash != enrolled.password_hash
    new = argon2.extract_parameters(result.creds.password_hash or "")
    assert (new.memory_cost, new.time_cost) == (512, 2)
    again = authenticate(
        result.creds, PASSWORD, code(+1), user="alice", second_factor="otp", now=T0 + 1,
        params=stronger,
    )
    assert again.ok
    assert again.creds.password_hash == result.creds.password_hash  # no further rehash


def test_unknown_user_gets_the_same_answer_as_a_wrong_password(
    enrolled: LocalCredentials,
) -> None:
    unknown = reject_unknown_user(PASSWORD, user="nobody", second_factor="otp", now=T0,
                                  params=FAST)
    wrong = login(enrolled, password="wrong password!!")
    assert (unknown.ok, unknown.reason, unknown.reason_internal) == (False, wrong.reason,
                                                                      "unknown_user")
    assert reject_unknown_user("x", user="nobody", second_factor="off", now=T0,
                               params=FAST).reason == "invalid password"
    with pytest.raises(AccessDenied, match=f"^{DENIED}$"):
        unknown.raise_for_failure()


def test_result_unpacks_and_success_does_not_raise(enrolled: LocalCredentials) -> None:
    creds, ok, reason, internal = login(enrolled)
    assert (ok, reason, internal) == (True, "", "ok")
    assert creds.totp_last_step == STEP
    login(enrolled).raise_for_failure()


def test_with_password_applies_the_policy() -> None:
    with pytest.raises(BadParameter, match="at least 12 characters"):
        LocalCredentials.new(T0).with_password("short", T0, FAST)


def test_with_totp_secret_checks_the_secret_and_resets_the_replay_marker(
    enrolled: LocalCredentials,
) -> None:
    used = login(enrolled).creds
    assert used.totp_last_step == STEP
    assert used.with_totp_secret(otp.new_secret(), T0).totp_last_step == otp.NEVER_USED
    with pytest.raises(BadParameter):
        enrolled.with_totp_secret("not base32!", T0)


def test_dict_round_trip_through_json(enrolled: LocalCredentials) -> None:
    creds = fail(enrolled, 0, 1, 2, 3, 4)
    creds = replace(creds, totp_last_step=STEP)
    assert LocalCredentials.from_dict(json.loads(json.dumps(creds.to_dict()))) == creds
    assert LocalCredentials.from_dict({}) == LocalCredentials()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"password": "x"}, "unknown field 'password'"),
        ({"password_hash": 5}, "password_hash"),
        ({"totp_secret": ""}, "totp_secret"),
        ({"totp_last_step": "7"}, "totp_last_step"),
        ({"totp_last_step": True}, "totp_last_step"),
        ({"failures": "1,2"}, "failures"),
        ({"failures": ["1"]}, "failures"),
        ({"locked_until": "later"}, "locked_until"),
        ({"created": None}, "created"),
    ],
)
def test_from_dict_rejects_malformed_records(data: dict[str, Any], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        LocalCredentials.from_dict(data)


def test_reprs_hold_no_secrets(enrolled: LocalCredentials) -> None:
    result = login(enrolled)
    hash_ = enrolled.password_hash or ""
    for text in (repr(enrolled), str(enrolled), repr(result), str(result)):
        assert SECRET not in text
        assert hash_ not in text
        assert "$argon2" not in text
        assert PASSWORD not in text
    assert "totp_last_step" in repr(enrolled)
