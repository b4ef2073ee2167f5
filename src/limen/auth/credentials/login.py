"""A local user's secrets and login state, and the login decision over them.

Called by the auth server: it loads a ``LocalCredentials`` record from its backend (under its
own key: never in the User resource, never in Git), calls ``authenticate`` with what the user
typed, persists the returned record whatever the outcome (so failures count), and answers the
client with ``reason`` while the audit log gets ``reason_internal``. Sign-up uses
``with_password`` and ``with_totp_secret``; unknown user names go to ``reject_unknown_user``.
With ``second_factor`` "otp" (a second factor required), a verified WebAuthn assertion
(``WebAuthnAnswer``, ``limen.auth.credentials.webauthn``) stands in for the one-time code.

    authenticate: locked? ──yes──▶ refuse, record untouched ("locked")
                     │no
                     ▼
                  password ──▶ TOTP (when second_factor is "otp") ──▶ all good?
                     │                                                 │yes      │no
                     ▼                                                 ▼         ▼
             (dummy verify when no password is set)          clear failures,   record failure
                                                             store TOTP step,  (may lock)
                                                             rehash if needed

The client hears only "invalid password or one-time code" (or the lock message), never which
factor failed; ``reason_internal`` is one of ``REASONS``. A one-time code is consumed only by a
successful login, so a code typed with a mistyped password can be typed again with the right
one. Everything is pure but the password hashing (~100 ms): run it in a worker thread.

The caller must write the returned record back with compare-and-swap against the record it
read (the Backend's ``CompareFailed``), and on a lost race reload and decide again: otherwise
two concurrent logins could both accept the same one-time code, or lose a failure count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

from limen.auth.credentials import lockout, otp, passwords
from limen.auth.credentials.webauthn import (
    RelyingParty,
    WebAuthnCredential,
    WebAuthnRefused,
    verify_assertion,
)
from limen.errors import AccessDenied, BadParameter, LimenError, LimitExceeded

__all__ = [
    "REASONS",
    "AuthResult",
    "LocalCredentials",
    "SecondFactor",
    "WebAuthnAnswer",
    "authenticate",
    "reject_unknown_user",
]

SecondFactor = Literal["otp", "off"]

REASONS = frozenset(
    {"ok", "locked", "no_password_set", "bad_password", "no_otp_set", "bad_otp", "otp_replayed",
     "unknown_user", "unknown_user_locked", "no_webauthn_set", "bad_webauthn",
     "webauthn_unknown_key", "webauthn_counter", "webauthn_origin", "webauthn_uv_required",
     "webauthn_malformed", "webauthn_challenge_unknown", "webauthn_challenge_used",
     "webauthn_challenge_other_user", "webauthn_challenge_purpose",
     "webauthn_challenge_expired"}
)
"""Every ``reason_internal`` ``authenticate`` and ``reject_unknown_user`` give."""

_DENIED = {
    "otp": "invalid password or one-time code",
    "off": "invalid password",
}
_DENIED_WEBAUTHN = "invalid password or security key"


@dataclass(frozen=True)
class LocalCredentials:
    """A local user's password hash, TOTP secret and login state; no secret in its repr."""

    password_hash: str | None = field(default=None, repr=False)
    """Argon2id PHC string, or None until the user has signed up."""
    totp_secret: str | None = field(default=None, repr=False)
    """Base32 TOTP secret, or None when no authenticator is enrolled."""
    totp_last_step: int = otp.NEVER_USED
    """Step of the last one-time code accepted; older or equal steps are refused."""
    webauthn: tuple[WebAuthnCredential, ...] = field(default=(), repr=False)
    """Registered security keys (``limen.auth.credentials.webauthn``)."""
    failures: tuple[float, ...] = ()
    """Times of recent failed logins (see ``limen.auth.credentials.lockout``)."""
    locked_until: float | None = None
    """End of the current lock, or None."""
    created: float = 0.0
    """Unix time the record was made."""
    updated: float = 0.0
    """Unix time of the last change."""

    @classmethod
    def new(cls, now: float) -> LocalCredentials:
        """An empty record for a user who has been invited but has not signed up."""
        return cls(created=now, updated=now)

    @property
    def has_password(self) -> bool:
        """Whether the user has chosen a password (signed up)."""
        return self.password_hash is not None

    @property
    def has_totp(self) -> bool:
        """Whether an authenticator app is enrolled."""
        return self.totp_secret is not None

    @property
    def has_second_factor(self) -> bool:
        """Whether an authenticator app or a security key is enrolled."""
        return self.has_totp or bool(self.webauthn)

    @property
    def lockout_state(self) -> lockout.LockoutState:
        """The failures and lock, for the functions of ``limen.auth.credentials.lockout``."""
        return lockout.LockoutState(self.failures, self.locked_until)

    def with_lockout(self, state: lockout.LockoutState, now: float) -> LocalCredentials:
        """The record with ``state`` as its failures and lock."""
        return replace(self, failures=state.failures, locked_until=state.locked_until, updated=now)

    def with_password(
        self,
        password: str,
        now: float,
        params: passwords.PasswordParams = passwords.DEFAULT_PARAMS,
        policy: passwords.PasswordPolicy = passwords.DEFAULT_POLICY,
    ) -> LocalCredentials:
        """The record with a new password (checked against ``policy``; ``BadParameter``)."""
        return replace(
            self, password_hash=passwords.hash_password(password, params, policy), updated=now
        )

    def with_totp_secret(self, secret: str | None, now: float) -> LocalCredentials:
        """The record with a new (or no) authenticator; the replay marker starts over."""
        if secret is not None:
            otp.check_secret(secret)
        return replace(self, totp_secret=secret, totp_last_step=otp.NEVER_USED, updated=now)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form the auth server stores under its own backend key."""
        return {
            "password_hash": self.password_hash,
            "totp_secret": self.totp_secret,
            "totp_last_step": self.totp_last_step,
            # only when there are keys: a record without them reads on an auth replica that
            # predates security keys (a rolling upgrade)
            **({"webauthn": [key.to_dict() for key in self.webauthn]} if self.webauthn else {}),
            "failures": list(self.failures),
            "locked_until": self.locked_until,
            "created": self.created,
            "updated": self.updated,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalCredentials:
        """Read a stored record back; ``BadParameter`` names the first malformed field."""
        if not isinstance(data, Mapping):
            raise BadParameter("local credentials record must be a mapping")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise BadParameter(f"local credentials record has unknown field {unknown[0]!r}")
        step = data.get("totp_last_step", otp.NEVER_USED)
        if isinstance(step, bool) or not isinstance(step, int):
            raise BadParameter("local credentials record: totp_last_step must be an integer")
        failures = data.get("failures", [])
        if not isinstance(failures, list | tuple):
            raise BadParameter("local credentials record: failures must be a list of times")
        keys = data.get("webauthn", [])
        if not isinstance(keys, list | tuple):
            raise BadParameter("local credentials record: webauthn must be a list")
        return cls(
            password_hash=_optional_str(data, "password_hash"),
            totp_secret=_optional_str(data, "totp_secret"),
            totp_last_step=step,
            webauthn=tuple(WebAuthnCredential.from_dict(key) for key in keys),
            failures=tuple(_number(t, "failures") for t in failures),
            locked_until=(
                None if data.get("locked_until") is None
                else _number(data["locked_until"], "locked_until")
            ),
            created=_number(data.get("created", 0.0), "created"),
            updated=_number(data.get("updated", 0.0), "updated"),
        )


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise BadParameter(f"local credentials record: {name} must be a non-empty string or null")
    return value


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadParameter(f"local credentials record: {name} must hold numbers (Unix times)")
    return float(value)


class AuthResult(NamedTuple):
    """What ``authenticate`` decided. Persist ``creds`` whatever ``ok`` says."""

    creds: LocalCredentials
    """The record to store: failure counted, or failures cleared and TOTP step advanced."""
    ok: bool
    """Whether the user is authenticated."""
    reason: str
    """One sentence for the client; never says which factor failed. Empty when ok."""
    reason_internal: str
    """For the audit log only: one of ``REASONS``."""

    def raise_for_failure(self) -> None:
        """Raise ``LimitExceeded`` (locked) or ``AccessDenied`` (anything else) unless ok."""
        if self.ok:
            return
        locked = self.reason_internal in ("locked", "unknown_user_locked")
        raise (LimitExceeded if locked else AccessDenied)(self.reason)


class WebAuthnAnswer(NamedTuple):
    """A security key's answer at login, with the challenge auth issued for it."""

    rp: RelyingParty
    response: Mapping[str, Any]
    """What ``navigator.credentials.get`` (or lmsh's fido2 client) returned, as JSON."""
    challenge: bytes
    refused: str | None = None
    """The ``reason_internal`` of a challenge that could not be spent (replayed, another
    user's, expired), decided before: the login fails like any wrong factor."""


def _check_second_factor(second_factor: str) -> None:
    if second_factor not in _DENIED:
        raise BadParameter(f"second_factor must be 'otp' or 'off', not {second_factor!r}")


def authenticate(
    creds: LocalCredentials,
    password: str,
    otp_code: str | None,
    *,
    user: str,
    second_factor: SecondFactor,
    now: float,
    policy: lockout.LockoutPolicy = lockout.DEFAULT_LOCKOUT_POLICY,
    params: passwords.PasswordParams = passwords.DEFAULT_PARAMS,
    webauthn: WebAuthnAnswer | None = None,
) -> AuthResult:
    """Decide a login by ``user`` at ``now``: lockout, then password, then (when
    ``second_factor`` is "otp") the one-time code, or the security key's ``webauthn`` answer
    when one is given. See the module docstring for the flow."""
    _check_second_factor(second_factor)
    try:
        lockout.check_not_locked(creds.lockout_state, now, user)
    except LimitExceeded as err:
        return AuthResult(creds, False, str(err), "locked")

    check = passwords.verify_password(creds.password_hash, password, params)
    failure = None
    if not creds.has_password:
        failure = "no_password_set"
    elif not check.ok:
        failure = "bad_password"

    step, keys = creds.totp_last_step, creds.webauthn
    with_key = second_factor == "otp" and webauthn is not None
    if with_key and webauthn is not None:
        key_failure, keys = _check_webauthn(creds, webauthn, now)
        failure = failure or key_failure
    elif second_factor == "otp":
        otp_failure, step = _check_otp(creds, otp_code, now)
        failure = failure or otp_failure

    if failure is not None:
        state = lockout.record_failure(creds.lockout_state, now, policy)
        denied = _DENIED_WEBAUTHN if with_key else _DENIED[second_factor]
        return AuthResult(creds.with_lockout(state, now), False, denied, failure)

    new = creds.with_lockout(lockout.record_success(creds.lockout_state, now), now)
    new = replace(new, totp_last_step=step, webauthn=keys)
    if check.needs_rehash:
        new = replace(new, password_hash=passwords.rehash(password, params))
    return AuthResult(new, True, "", "ok")


def _check_otp(creds: LocalCredentials, code: str | None, now: float) -> tuple[str | None, int]:
    """(failure reason or None, step to store) for ``code``."""
    if creds.totp_secret is None:
        return "no_otp_set", creds.totp_last_step
    try:
        step = otp.verify_totp(creds.totp_secret, code or "", now, creds.totp_last_step)
    except AccessDenied as err:
        replayed = str(err) == otp.REPLAYED_REASON
        return ("otp_replayed" if replayed else "bad_otp"), creds.totp_last_step
    except LimenError:  # a stored secret that is not valid base32: refuse, do not crash
        return "bad_otp", creds.totp_last_step
    return None, step


def _check_webauthn(creds: LocalCredentials, answer: WebAuthnAnswer,
                    now: float) -> tuple[str | None, tuple[WebAuthnCredential, ...]]:
    """(failure reason or None, the keys to store: the used one with its new counter)."""
    if not creds.webauthn:
        return "no_webauthn_set", creds.webauthn
    if answer.refused is not None:
        return answer.refused, creds.webauthn
    try:
        return None, verify_assertion(answer.rp, creds.webauthn, answer.response,
                                      answer.challenge, now)
    except WebAuthnRefused as err:
        return err.reason_internal, creds.webauthn
    except (BadParameter, ValueError, TypeError, KeyError):  # a malformed stored or sent key
        return "bad_webauthn", creds.webauthn


def reject_unknown_user(
    password: str,
    *,
    user: str,
    second_factor: SecondFactor,
    now: float,
    state: lockout.LockoutState = lockout.LockoutState(),  # noqa: B008 - immutable
    policy: lockout.LockoutPolicy = lockout.DEFAULT_LOCKOUT_POLICY,
    params: passwords.PasswordParams = passwords.DEFAULT_PARAMS,
    webauthn: bool = False,
) -> AuthResult:
    """Refuse a login for a user name that has no credentials exactly as :func:`authenticate`
    refuses a wrong password (``webauthn``: as it refuses one with a security key): the same
    lockout (``state``: the name's failures so far, see ``lockout.UnknownNameLockouts``), the
    same Argon2 work, the same client reason. ``creds``
    carries the name's new lockout state only (``failures``, ``locked_until``); it is never
    stored as credentials."""
    _check_second_factor(second_factor)
    creds = LocalCredentials(failures=state.failures, locked_until=state.locked_until)
    try:
        lockout.check_not_locked(state, now, user)
    except LimitExceeded as err:
        return AuthResult(creds, False, str(err), "unknown_user_locked")
    passwords.verify_password(None, password, params)  # same work as a wrong password
    new = lockout.record_failure(state, now, policy)
    denied = _DENIED_WEBAUTHN if webauthn and second_factor == "otp" else _DENIED[second_factor]
    return AuthResult(creds.with_lockout(new, now), False, denied, "unknown_user")
