"""Local users' secrets: sign-up links, passwords, TOTP enrolment and the login check.

The User resource (roles, traits; from Git, Kubernetes or the API) never holds a secret. Its
secrets live under auth's own keys, written with compare-and-swap so concurrent logins can
neither accept the same one-time code twice nor lose a failure count::

    /secrets/credentials/<user>     LocalCredentials (password hash, TOTP, lockout state)
    /secrets/signup/<sha256>        SignupToken (hash only, and the TOTP secret being
                                    enrolled); kept a day past the link's end (and after use,
                                    marked used) so a refusal can say which
    /secrets/lockout/unknown/<sha>  the lockout state of a name without credentials
                                    (``limen.auth.credentials.unknown_lockouts``)
    /secrets/webauthn/challenges/.. security key challenges
                                    (``limen.auth.credentials.webauthn_challenges``)

A sign-up may enrol a security key instead of the authenticator app, and a login may answer
with a security key instead of a one-time code (``webauthn_login_begin`` checks the password
and issues the challenge); a logged-in user's keys are managed by
``limen.auth.credentials.webauthn_keys``.

Nothing is kept in the process: several auth replicas on one backend decide every login,
sign-up and lockout alike.

Called by ``limen.auth.core``. Password hashing runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from limen.auth.credentials import otp
from limen.auth.credentials.login import (
    AuthResult,
    LocalCredentials,
    SecondFactor,
    WebAuthnAnswer,
    authenticate,
    reject_unknown_user,
)
from limen.auth.credentials.passwords import check_password_policy
from limen.auth.credentials.signup_tokens import (
    SignupToken,
    check_signup_token,
    mark_used,
    new_signup_token,
    signup_token_id,
    with_totp_secret,
)
from limen.auth.credentials.unknown_lockouts import StoredUnknownLockouts
from limen.auth.credentials.webauthn import (
    RelyingParty,
    WebAuthnCredential,
    WebAuthnRefused,
    authentication_options,
    challenge_of,
    check_key_name,
    registration_options,
    verify_registration,
)
from limen.auth.credentials.webauthn_challenges import WebAuthnChallenges
from limen.backend.base import Backend, Condition, Item, Put
from limen.errors import AccessDenied, BadParameter, CompareFailed

__all__ = ["LocalUsers", "SignupResult"]

CREDENTIALS_PREFIX = "/secrets/credentials/"
SIGNUP_PREFIX = "/secrets/signup/"
SIGNUP_RECORD_GRACE = 86400.0
"""Seconds a sign-up record outlives its link, to tell "expired" and "used" from "invalid"."""


class SignupResult:
    __slots__ = ("totp_secret", "user", "webauthn")

    def __init__(self, user: str, totp_secret: str | None,
                 webauthn: dict[str, Any] | None = None) -> None:
        self.user = user
        self.totp_secret = totp_secret
        self.webauthn = webauthn
        """The security key registration options (sign-up with ``mfa="webauthn"``)."""


class LocalUsers:
    def __init__(self, backend: Backend, clock: Callable[[], float]) -> None:
        self.backend = backend
        self.clock = clock
        self.unknown_lockouts = StoredUnknownLockouts(backend, clock)
        """Failures and locks of names without credentials (a login answers for them as for
        a real user: no user enumeration through the lockout), shared by every replica."""
        self.challenges = WebAuthnChallenges(backend, clock)

    async def invite(self, user: str, ttl_seconds: float = 3600.0) -> str:
        """A fresh one-time sign-up secret for ``user`` (valid ``ttl_seconds``, single use)."""
        secret, record = new_signup_token(user, now=self.clock(), ttl=ttl_seconds)
        await self.backend.create(
            SIGNUP_PREFIX + record.token_hash, json.dumps(record.to_dict()).encode(),
            expires=record.expires + SIGNUP_RECORD_GRACE,
        )
        return secret

    async def _usable_token(self, secret: str) -> tuple[str, Item, SignupToken]:
        """The stored record of an unused, unexpired link; ``AccessDenied`` otherwise."""
        if not isinstance(secret, str) or not secret or len(secret) > 128:
            raise AccessDenied("invalid sign-up link")
        key = SIGNUP_PREFIX + signup_token_id(secret)
        item = await self.backend.get(key)
        if item is None:
            raise AccessDenied("invalid sign-up link")
        record = SignupToken.from_dict(json.loads(item.value))
        check_signup_token(record, secret, self.clock())
        return key, item, record

    async def signup_begin(self, secret: str, password: str | None, second_factor: str,
                           user_exists: Callable[[str], object], *, mfa: str = "otp",
                           rp: RelyingParty | None = None) -> SignupResult:
        """First half of a sign-up: check the link (and the password's policy when given) and
        return the TOTP secret the user enrols in an authenticator app, or with ``mfa``
        "webauthn" the registration options of a security key (a fresh challenge of ``rp``
        each time). Nothing of the user changes and the link stays usable; asking again
        returns the same TOTP secret."""
        for _ in range(5):
            key, item, record = await self._usable_token(secret)
            await _maybe_await(user_exists(record.user))
            if password is not None:
                check_password_policy(password)
            if second_factor != "otp":
                return SignupResult(record.user, None)
            if mfa == "webauthn":
                if rp is None:
                    raise BadParameter("security keys need the proxy's public address")
                challenge = await self.challenges.issue(record.user, "signup")
                return SignupResult(record.user, None,
                                    registration_options(rp, record.user, (), challenge))
            if mfa != "otp":
                raise BadParameter("mfa must be 'otp' or 'webauthn'")
            if record.totp_secret:
                return SignupResult(record.user, record.totp_secret)
            pending = with_totp_secret(record, otp.new_secret())
            try:
                await self.backend.atomic(
                    [Condition(key, item.revision)],
                    [Put(key, json.dumps(pending.to_dict()).encode(),
                         expires=record.expires + SIGNUP_RECORD_GRACE)])
            except CompareFailed:
                continue  # another sign-up with this link wrote first: read its secret
            return SignupResult(record.user, pending.totp_secret)
        raise AccessDenied("too many concurrent sign-ups with this link; try again")

    async def signup(self, secret: str, password: str, otp_code: str | None, second_factor: str,
                     user_exists: Callable[[str], object], *,
                     webauthn: tuple[RelyingParty, Mapping[str, Any], str] | None = None,
                     ) -> SignupResult:
        """Second half: with the current code of the secret :meth:`signup_begin` gave (when
        TOTP is required), or with ``webauthn`` (relying party, the key's registration answer
        and its name), set the password and second factor of the link's user and consume the
        link, all in one transaction; a wrong code changes nothing and the link stays usable."""
        key, item, record = await self._usable_token(secret)
        await _maybe_await(user_exists(record.user))
        now = self.clock()
        totp_secret, step = None, otp.NEVER_USED
        keys: tuple[WebAuthnCredential, ...] = ()
        if second_factor == "otp" and webauthn is not None:
            rp, response, name = webauthn
            challenge = challenge_of(response)
            await self.challenges.spend(challenge, record.user, "signup")
            keys = (verify_registration(rp, response, challenge, check_key_name(name, ()),
                                        now),)
        elif second_factor == "otp":
            if not record.totp_secret:
                raise BadParameter("this sign-up has no authenticator enrolment yet: "
                                   "start it again with lmsh signup")
            if not otp_code:
                raise BadParameter("the sign-up needs the current one-time code of your "
                                   "authenticator app")
            step = otp.verify_totp(record.totp_secret, otp_code, now, otp.NEVER_USED)
            totp_secret = record.totp_secret
        cred_key = CREDENTIALS_PREFIX + record.user
        current = await self.backend.get(cred_key)
        creds = (LocalCredentials.from_dict(json.loads(current.value)) if current
                 else LocalCredentials.new(now))
        creds = await asyncio.to_thread(creds.with_password, password, now)
        # The confirming code is spent: the first login needs a later one (no replay).
        creds = replace(creds.with_totp_secret(totp_secret, now), totp_last_step=step,
                        webauthn=keys)
        try:
            await self.backend.atomic(
                [Condition(key, item.revision),
                 Condition(cred_key, current.revision if current else 0)],
                [Put(key, json.dumps(mark_used(record).to_dict()).encode(),
                     expires=record.expires + SIGNUP_RECORD_GRACE),
                 Put(cred_key, json.dumps(creds.to_dict()).encode())],
            )
        except CompareFailed:
            raise AccessDenied("sign-up link was already used") from None
        return SignupResult(record.user, totp_secret)

    async def authenticate(self, user: str, password: str, otp_code: str | None,
                           second_factor: str, *, known_user: bool,
                           webauthn: tuple[RelyingParty, Mapping[str, Any]] | None = None,
                           ) -> AuthResult:
        """Decide a login and persist the outcome (failures count towards the lockout).
        ``webauthn``: the relying party and a security key's answer to the challenge of
        :meth:`webauthn_login_begin`, instead of ``otp_code``; the challenge is spent first."""
        factor = _factor(second_factor)
        answer = None
        if webauthn is not None:
            rp, response = webauthn
            refused, challenge = None, b""
            try:
                challenge = challenge_of(response)
                await self.challenges.spend(challenge, user, "login")
            except WebAuthnRefused as err:
                refused = err.reason_internal
            answer = WebAuthnAnswer(rp, response, challenge, refused)

        def decide(creds: LocalCredentials, now: float) -> AuthResult:
            return authenticate(creds, password, otp_code, user=user, second_factor=factor,
                                now=now, webauthn=answer)

        return await self._decide(user, password, factor, known_user, decide,
                                  webauthn=answer is not None)

    async def webauthn_login_begin(self, user: str, password: str, second_factor: str,
                                   rp: RelyingParty, *, known_user: bool,
                                   ) -> tuple[AuthResult, dict[str, Any] | None]:
        """The first step of a login with a security key: check the password (a wrong one
        counts towards the lockout, a right one changes nothing) and, when right, the
        challenge for the user's keys (None when they have none)."""
        factor = _factor(second_factor)
        keys: list[Any] = []

        def decide(creds: LocalCredentials, now: float) -> AuthResult:
            result = authenticate(creds, password, None, user=user, second_factor="off",
                                  now=now)
            if result.ok:
                keys[:] = creds.webauthn
                return AuthResult(creds, True, "", "ok")  # the login is not done: no change
            return result._replace(reason=_webauthn_denied(factor, result.reason))

        result = await self._decide(user, password, factor, known_user, decide, webauthn=True,
                                    persist_success=False)
        if not result.ok or not keys:
            return result, None
        challenge = await self.challenges.issue(user, "login")
        return result, authentication_options(rp, keys, challenge)

    async def _decide(self, user: str, password: str, factor: SecondFactor, known_user: bool,
                      decide: Callable[[LocalCredentials, float], AuthResult], *,
                      webauthn: bool, persist_success: bool = True) -> AuthResult:
        key = CREDENTIALS_PREFIX + user
        for _ in range(5):
            item = await self.backend.get(key) if known_user else None
            if item is None:
                outcome = await self._reject_unknown(user, password, factor, webauthn)
                if outcome is None:
                    continue  # a concurrent login of the same name: decide again
                return outcome
            creds = LocalCredentials.from_dict(json.loads(item.value))
            now = self.clock()
            result = await asyncio.to_thread(decide, creds, now)
            if result.creds == creds or (result.ok and not persist_success):
                return result
            try:
                await self.backend.compare_and_swap(
                    key, item.revision, json.dumps(result.creds.to_dict()).encode())
            except CompareFailed:
                continue  # a concurrent login changed the record: decide again on the new one
            return result
        raise AccessDenied("too many concurrent logins for this user; try again")

    async def _reject_unknown(self, user: str, password: str, factor: SecondFactor,
                              webauthn: bool = False) -> AuthResult | None:
        """The refusal of a name without credentials, its lockout state updated; None when a
        concurrent login of the same name changed that state meanwhile."""
        state, revision = await self.unknown_lockouts.get(user)
        now = self.clock()
        result = await asyncio.to_thread(
            lambda: reject_unknown_user(password, user=user, second_factor=factor, now=now,
                                        state=state, webauthn=webauthn))
        new = result.creds.lockout_state
        if new != state and not await self.unknown_lockouts.replace(user, revision, new):
            return None
        return result

    async def forget(self, user: str) -> None:
        """Remove a deleted user's secrets."""
        if await self.backend.get(CREDENTIALS_PREFIX + user) is not None:
            await self.backend.delete(CREDENTIALS_PREFIX + user)

    async def has_password(self, user: str) -> bool:
        item = await self.backend.get(CREDENTIALS_PREFIX + user)
        return item is not None and LocalCredentials.from_dict(json.loads(item.value)).has_password


def _factor(second_factor: str) -> SecondFactor:
    if second_factor not in ("otp", "off"):
        raise BadParameter(f"invalid second_factor setting {second_factor!r}")
    return "otp" if second_factor == "otp" else "off"


def _webauthn_denied(factor: SecondFactor, reason: str) -> str:
    """The client's reason of a refused first step, as the whole login would say it."""
    plain = "invalid password"
    return "invalid password or security key" if factor == "otp" and reason == plain else reason


async def _maybe_await(value: object) -> None:
    if asyncio.iscoroutine(value):
        await value
