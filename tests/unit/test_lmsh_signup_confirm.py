"""Two-step sign-up on the auth side (limen.auth.credentials.local_users.LocalUsers): the
link's TOTP secret is shown first and only a right code sets the password and TOTP and
consumes the link; a wrong code, a missing code or a weak password change nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pyotp
import pytest

from limen.auth.credentials import otp
from limen.auth.credentials.local_users import CREDENTIALS_PREFIX, SIGNUP_PREFIX, LocalUsers
from limen.auth.credentials.login import LocalCredentials
from limen.backend.memory import MemoryBackend
from limen.errors import AccessDenied, BadParameter

NOW = 1_700_000_000.0
PASSWORD = "a-long-enough-password"


def _exists(_user: str) -> None:
    return None


@pytest.fixture
async def users() -> AsyncIterator[LocalUsers]:
    backend = MemoryBackend(clock=lambda: NOW, sweep_interval=None)
    yield LocalUsers(backend, clock=lambda: NOW)
    await backend.close()


async def _stored_creds(users: LocalUsers, name: str) -> LocalCredentials | None:
    item = await users.backend.get(CREDENTIALS_PREFIX + name)
    return LocalCredentials.from_dict(json.loads(item.value)) if item else None


async def _snapshot(users: LocalUsers) -> list[tuple[str, bytes]]:
    return [(i.key, i.value) for i in await users.backend.list("/secrets/")]


async def test_begin_changes_no_user_and_returns_the_same_secret_again(
        users: LocalUsers) -> None:
    link = await users.invite("alice")
    first = await users.signup_begin(link, None, "otp", _exists)
    again = await users.signup_begin(link, PASSWORD, "otp", _exists)
    assert first.user == again.user == "alice"
    assert first.totp_secret
    assert first.totp_secret == again.totp_secret
    assert await _stored_creds(users, "alice") is None


async def test_wrong_or_missing_code_changes_nothing_and_the_link_still_works(
        users: LocalUsers) -> None:
    link = await users.invite("alice")
    secret = (await users.signup_begin(link, PASSWORD, "otp", _exists)).totp_secret
    assert secret
    before = await _snapshot(users)
    right = pyotp.TOTP(secret).at(NOW)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    with pytest.raises(AccessDenied, match=f"^{otp.INVALID_REASON}$"):
        await users.signup(link, PASSWORD, wrong, "otp", _exists)
    with pytest.raises(BadParameter, match="one-time code"):
        await users.signup(link, PASSWORD, None, "otp", _exists)
    assert await _snapshot(users) == before

    done = await users.signup(link, PASSWORD, right, "otp", _exists)

    assert (done.user, done.totp_secret) == ("alice", secret)
    creds = await _stored_creds(users, "alice")
    assert creds is not None
    assert creds.has_password
    assert creds.totp_secret == secret
    assert creds.totp_last_step == otp.totp_step(NOW)  # the confirming code is spent
    with pytest.raises(AccessDenied, match="already used"):
        await users.signup_begin(link, None, "otp", _exists)
    record = json.loads((await users.backend.list(SIGNUP_PREFIX))[0].value)
    assert record["used"] is True
    assert "totp_secret" not in record


async def test_finishing_without_begin_is_refused(users: LocalUsers) -> None:
    link = await users.invite("alice")
    with pytest.raises(BadParameter, match="no authenticator enrolment"):
        await users.signup(link, PASSWORD, "123456", "otp", _exists)
    assert await _stored_creds(users, "alice") is None


async def test_a_weak_password_is_refused_at_begin(users: LocalUsers) -> None:
    link = await users.invite("alice")
    with pytest.raises(BadParameter, match="password must be at least"):
        await users.signup_begin(link, "short", "otp", _exists)


async def test_without_second_factor_no_code_is_needed(users: LocalUsers) -> None:
    link = await users.invite("bob")
    assert (await users.signup_begin(link, PASSWORD, "off", _exists)).totp_secret is None
    done = await users.signup(link, PASSWORD, None, "off", _exists)
    creds = await _stored_creds(users, "bob")
    assert done.totp_secret is None
    assert creds is not None
    assert creds.totp_secret is None
