"""TOTP second factor with replay protection (limen.auth.credentials.otp)."""

from __future__ import annotations

import base64
import urllib.parse
from datetime import UTC, datetime

import pytest

from limen.auth.credentials import otp
from limen.auth.credentials.otp import (
    INVALID_REASON,
    NEVER_USED,
    REPLAYED_REASON,
    new_secret,
    provisioning_uri,
    totp_code,
    totp_step,
    verify_totp,
)
from limen.errors import AccessDenied, BadParameter

# RFC 6238 appendix B: ASCII "12345678901234567890", SHA1; codes cut to 6 digits.
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = datetime(2024, 5, 1, 14, 0, 10, tzinfo=UTC).timestamp()  # 10 s into a step
STEP = totp_step(NOW)


def code_at_step(step: int, secret: str = SECRET) -> str:
    return totp_code(secret, step * otp.PERIOD_SECONDS)


@pytest.mark.parametrize(
    ("when", "code"),
    [(59, "287082"), (1111111109, "081804"), (1111111111, "050471"),
     (1234567890, "005924"), (2000000000, "279037"), (20000000000, "353130")],
)
def test_codes_match_rfc_6238_vectors(when: int, code: str) -> None:
    assert totp_code(RFC_SECRET, when) == code
    assert verify_totp(RFC_SECRET, code, when, NEVER_USED) == when // 30


def test_new_secret_is_160_random_bits_in_base32() -> None:
    secret = new_secret()
    assert len(base64.b32decode(secret)) == 20
    assert new_secret() != secret
    otp.check_secret(secret)


def test_provisioning_uri_names_user_and_cluster() -> None:
    uri = urllib.parse.urlsplit(provisioning_uri(SECRET, "alice", "example-cluster"))
    query = urllib.parse.parse_qs(uri.query)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert urllib.parse.unquote(uri.path) == "/example-cluster:alice"
    assert query["secret"] == [SECRET]
    assert query["issuer"] == ["example-cluster"]


@pytest.mark.parametrize(
    ("code_step", "last_used", "accepted"),
    [
        (STEP, NEVER_USED, True),
        (STEP - 1, NEVER_USED, True),  # clock one step behind
        (STEP + 1, NEVER_USED, True),  # clock one step ahead
        (STEP - 2, NEVER_USED, False),
        (STEP + 2, NEVER_USED, False),
        (STEP - 1, STEP - 2, True),  # older than now but newer than the last used: fine once
    ],
)
def test_skew_window(code_step: int, last_used: int, accepted: bool) -> None:
    code = code_at_step(code_step)
    if accepted:
        assert verify_totp(SECRET, code, NOW, last_used) == code_step
    else:
        with pytest.raises(AccessDenied, match=f"^{INVALID_REASON}$"):
            verify_totp(SECRET, code, NOW, last_used)


def test_same_code_twice_is_a_replay() -> None:
    code = code_at_step(STEP)
    last = verify_totp(SECRET, code, NOW, NEVER_USED)
    with pytest.raises(AccessDenied, match=f"^{REPLAYED_REASON}$"):
        verify_totp(SECRET, code, NOW + 5, last)


def test_older_code_after_a_newer_one_is_refused() -> None:
    last = verify_totp(SECRET, code_at_step(STEP), NOW, NEVER_USED)
    with pytest.raises(AccessDenied, match=f"^{REPLAYED_REASON}$"):
        verify_totp(SECRET, code_at_step(STEP - 1), NOW, last)


def test_skewed_code_works_once_and_not_after_its_step_was_used() -> None:
    previous = code_at_step(STEP - 1)
    last = verify_totp(SECRET, previous, NOW, NEVER_USED)
    assert last == STEP - 1
    with pytest.raises(AccessDenied, match=REPLAYED_REASON):
        verify_totp(SECRET, previous, NOW, last)
    # The current code is still newer, so it works next; after that nothing older does.
    last = verify_totp(SECRET, code_at_step(STEP), NOW, last)
    assert last == STEP
    with pytest.raises(AccessDenied, match=REPLAYED_REASON):
        verify_totp(SECRET, previous, NOW, last)


def test_next_step_code_works_after_current_was_used() -> None:
    last = verify_totp(SECRET, code_at_step(STEP), NOW, NEVER_USED)
    assert verify_totp(SECRET, code_at_step(STEP + 1), NOW + 30, last) == STEP + 1


def test_code_of_another_secret_is_invalid() -> None:
    other = new_secret()
    with pytest.raises(AccessDenied, match=f"^{INVALID_REASON}$"):
        verify_totp(SECRET, code_at_step(STEP, other), NOW, NEVER_USED)


def test_spaces_in_the_code_are_ignored() -> None:
    code = code_at_step(STEP)
    assert verify_totp(SECRET, f"{code[:3]} {code[3:]}", NOW, NEVER_USED) == STEP


@pytest.mark.parametrize(
    "code", ["", "12345", "1234567", "abcdef", "12345a", "\uff11" * 6, None, 123456]
)
def test_malformed_codes_are_invalid(code: object) -> None:
    with pytest.raises(AccessDenied, match=f"^{INVALID_REASON}$"):
        verify_totp(SECRET, code, NOW, NEVER_USED)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "secret",
    ["", "not base32!", "JBSWY3DP", base64.b32encode(b"x" * 15).decode(), None],  # 15 B < 128 bits
)
def test_bad_secret_is_a_bad_parameter(secret: object) -> None:
    with pytest.raises(BadParameter):
        otp.check_secret(secret)  # type: ignore[arg-type]
    with pytest.raises(BadParameter):
        verify_totp(secret, "123456", NOW, NEVER_USED)  # type: ignore[arg-type]


def test_provisioning_uri_needs_user_and_issuer() -> None:
    with pytest.raises(BadParameter):
        provisioning_uri(SECRET, "", "cluster")
    with pytest.raises(BadParameter):
        provisioning_uri(SECRET, "alice", "")
