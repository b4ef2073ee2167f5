"""A logged-in user's second factors: list them, register a security key, remove one.

Called by the auth API (``limen.auth.http.mfa``) for ``lmsh mfa ls|add|rm`` and the web UI's
security key page, with the user taken from their certificate. Registration is two steps: the
options (a challenge bound to the user, purpose ``register``) and the key's answer, verified
and stored with compare-and-swap in the user's ``LocalCredentials``. Removing the last second
factor is refused while the cluster requires one (``second_factor: otp``).

A certificate alone does not change second factors (a stolen one would otherwise add the
thief's key and outlive its own expiry): adding or removing one needs a proof with a second
factor the user has already, the current one-time code (``{"otp": CODE}``) or a registered
key's answer to a ``confirm`` challenge (``{"webauthn": ANSWER}``, from
:meth:`UserKeys.confirm_begin`), checked like a login's (replay, counter) and spent with the
change. A user with no second factor yet needs none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from limen.auth.credentials import otp
from limen.auth.credentials.login import LocalCredentials
from limen.auth.credentials.webauthn import (
    MAX_KEYS,
    RelyingParty,
    WebAuthnRefused,
    authentication_options,
    challenge_of,
    check_key_name,
    registration_options,
    verify_assertion,
    verify_registration,
)
from limen.auth.credentials.webauthn_challenges import WebAuthnChallenges
from limen.backend.base import Backend, Item
from limen.errors import AccessDenied, BadParameter, CompareFailed, NotFound

__all__ = ["OTP_NAME", "UserKeys"]

OTP_NAME = "otp"
"""The name the authenticator app (TOTP) has in the list of second factors."""
CREDENTIALS_PREFIX = "/secrets/credentials/"


class UserKeys:
    def __init__(self, backend: Backend, clock: Callable[[], float],
                 challenges: WebAuthnChallenges) -> None:
        self.backend, self.clock, self.challenges = backend, clock, challenges

    async def _load(self, user: str) -> tuple[Item, LocalCredentials]:
        item = await self.backend.get(CREDENTIALS_PREFIX + user)
        if item is None:
            raise NotFound(f"{user} has no local credentials (signed up with a link?)")
        return item, LocalCredentials.from_dict(json.loads(item.value))

    async def _store(self, user: str, item: Item, creds: LocalCredentials) -> None:
        await self.backend.compare_and_swap(CREDENTIALS_PREFIX + user, item.revision,
                                            json.dumps(creds.to_dict()).encode())

    async def list(self, user: str) -> list[dict[str, Any]]:
        """The user's second factors: the authenticator app (``otp``) and security keys."""
        _item, creds = await self._load(user)
        listed = [{"name": OTP_NAME, "type": "totp", "added": None, "last_used": None}] \
            if creds.has_totp else []
        return listed + [key.listing() for key in creds.webauthn]

    async def confirm_begin(self, user: str, rp: RelyingParty) -> dict[str, Any]:
        """What a proof may use: ``otp`` (the user has the app) and ``webauthn`` (request
        options of a fresh ``confirm`` challenge for the user's keys, or None)."""
        _item, creds = await self._load(user)
        options = None
        if creds.webauthn:
            challenge = await self.challenges.issue(user, "confirm")
            options = authentication_options(rp, creds.webauthn, challenge)
        return {"otp": creds.has_totp, "webauthn": options}

    async def _spend_proof(self, user: str, proof: Mapping[str, Any] | None) -> bytes | None:
        """The challenge of a key's proof, spent now (once, before the change is decided)."""
        answer = (proof or {}).get("webauthn")
        if answer is None:
            return None
        challenge = challenge_of(answer)
        await self.challenges.spend(challenge, user, "confirm")
        return challenge

    def _proven(self, creds: LocalCredentials, proof: Mapping[str, Any] | None,
                challenge: bytes | None, rp: RelyingParty) -> LocalCredentials:
        """``creds`` after the proof (the code's step or the key's counter spent);
        ``WebAuthnRefused`` with the reason unless it proves a factor of the user's."""
        if not creds.has_second_factor:
            return creds
        now = self.clock()
        code, answer = (proof or {}).get("otp"), (proof or {}).get("webauthn")
        if isinstance(code, str) and code and creds.totp_secret:
            try:
                step = otp.verify_totp(creds.totp_secret, code, now, creds.totp_last_step)
            except AccessDenied as err:
                raise WebAuthnRefused(f"confirmation refused: {err}", "proof_bad_otp") from None
            return replace(creds, totp_last_step=step, updated=now)
        if isinstance(answer, Mapping) and challenge is not None and creds.webauthn:
            keys = verify_assertion(rp, creds.webauthn, answer, challenge, now)
            return replace(creds, webauthn=keys, updated=now)
        raise WebAuthnRefused("confirm the change with a second factor you have: the current "
                              "one-time code or a registered security key", "proof_missing")

    async def register_begin(self, user: str, name: str, rp: RelyingParty) -> dict[str, Any]:
        """The options of a new key named ``name`` (checked now, and again at the end)."""
        _item, creds = await self._load(user)
        check_key_name(name, [k.name for k in creds.webauthn])
        if len(creds.webauthn) >= MAX_KEYS:
            raise BadParameter(f"at most {MAX_KEYS} security keys per user")
        challenge = await self.challenges.issue(user, "register")
        return registration_options(rp, user, creds.webauthn, challenge)

    async def register(self, user: str, name: str, response: Mapping[str, Any],
                       rp: RelyingParty,
                       proof: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Verify the key's answer to the challenge of :meth:`register_begin` and store it,
        with the ``proof`` of a second factor the user has already."""
        challenge = challenge_of(response)
        await self.challenges.spend(challenge, user, "register")
        proof_challenge = await self._spend_proof(user, proof)
        for _ in range(5):
            item, creds = await self._load(user)
            creds = self._proven(creds, proof, proof_challenge, rp)
            check_key_name(name, [k.name for k in creds.webauthn])
            key = verify_registration(rp, response, challenge, name, self.clock())
            if any(k.credential_id == key.credential_id for k in creds.webauthn):
                raise WebAuthnRefused("this security key is already registered",
                                      "webauthn_duplicate")
            try:
                await self._store(user, item, replace(creds, webauthn=(*creds.webauthn, key),
                                                      updated=self.clock()))
            except CompareFailed:
                continue
            return key.listing()
        raise AccessDenied("too many concurrent changes of your second factors; try again")

    async def remove(self, user: str, name: str, rp: RelyingParty, *, required: bool,
                     proof: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Remove the second factor ``name`` (``otp``: the authenticator app), with the
        ``proof`` of one; refused when it is the last one and ``required``."""
        proof_challenge = await self._spend_proof(user, proof)
        for _ in range(5):
            item, creds = await self._load(user)
            creds = self._proven(creds, proof, proof_challenge, rp)
            if name == OTP_NAME and creds.has_totp:
                new = creds.with_totp_secret(None, self.clock())
                removed: dict[str, Any] = {"name": OTP_NAME, "type": "totp"}
            else:
                key = next((k for k in creds.webauthn if k.name == name), None)
                if key is None:
                    raise NotFound(f"{user} has no second factor named {name!r}")
                new = replace(creds, webauthn=tuple(k for k in creds.webauthn if k != key),
                              updated=self.clock())
                removed = {"name": name, "type": "webauthn"}
            if required and not new.has_second_factor:
                raise AccessDenied(f"{name!r} is your last second factor and this cluster "
                                   "requires one: add another first (lmsh mfa add)")
            try:
                await self._store(user, item, new)
            except CompareFailed:
                continue
            return removed
        raise AccessDenied("too many concurrent changes of your second factors; try again")
