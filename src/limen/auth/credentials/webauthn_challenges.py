"""WebAuthn challenges kept by auth: random, single use, short-lived, bound to one user and
one purpose (``login``, ``register``, ``signup``, ``confirm``: the proof of a change to the
user's second factors).

    /secrets/webauthn/challenges/<sha256 of the challenge>   {user, purpose, expires, used}

A challenge is found again from the one a key's answer carries (its clientDataJSON), and is
spent (marked used, compare-and-swap) by its first presentation, whatever the outcome: a
replayed answer, one made for another user's challenge, for another purpose or after the
expiry is refused with its reason. The record outlives the challenge by a grace period so a
replay says "already used", then the backend drops it. Several auth replicas on one backend
agree. Called by ``limen.auth.credentials.local_users``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Literal

from limen.auth.credentials.webauthn import TIMEOUT_MS, WebAuthnRefused
from limen.backend.base import Backend, Condition, Put
from limen.errors import CompareFailed

__all__ = ["CHALLENGE_TTL", "PREFIX", "Purpose", "WebAuthnChallenges"]

PREFIX = "/secrets/webauthn/challenges/"
CHALLENGE_TTL = TIMEOUT_MS / 1000 + 30
"""Seconds a challenge may be answered: the key's timeout and a little slack."""
_GRACE = 600.0
Purpose = Literal["login", "register", "signup", "confirm"]


class WebAuthnChallenges:
    def __init__(self, backend: Backend, clock: Callable[[], float],
                 ttl: float = CHALLENGE_TTL) -> None:
        self.backend, self.clock, self.ttl = backend, clock, ttl

    async def issue(self, user: str, purpose: Purpose) -> bytes:
        """A fresh 32-byte challenge for ``user`` and ``purpose``, stored."""
        challenge = secrets.token_bytes(32)
        expires = self.clock() + self.ttl
        record = {"user": user, "purpose": purpose, "expires": expires, "used": False}
        await self.backend.create(_key(challenge), json.dumps(record).encode(),
                                  expires=expires + _GRACE)
        return challenge

    async def spend(self, challenge: bytes, user: str, purpose: Purpose) -> None:
        """Spend ``challenge`` for ``user`` and ``purpose``; ``WebAuthnRefused`` (reasons
        ``webauthn_challenge_unknown|used|other_user|purpose|expired``) unless it was issued
        for them, is unused and unexpired."""
        key = _key(challenge)
        for _ in range(5):
            item = await self.backend.get(key)
            if item is None:
                raise WebAuthnRefused("unknown or expired security key challenge: start again",
                                      "webauthn_challenge_unknown")
            record = json.loads(item.value)
            if record.get("used"):
                raise WebAuthnRefused("this security key challenge was already used",
                                      "webauthn_challenge_used")
            try:
                await self.backend.atomic(
                    [Condition(key, item.revision)],
                    [Put(key, json.dumps({**record, "used": True}).encode(),
                         expires=float(record["expires"]) + _GRACE)])
            except CompareFailed:
                continue
            if record.get("user") != user:
                raise WebAuthnRefused("this security key challenge was issued to another user",
                                      "webauthn_challenge_other_user")
            if record.get("purpose") != purpose:
                raise WebAuthnRefused("this security key challenge is for another step",
                                      "webauthn_challenge_purpose")
            if self.clock() >= float(record["expires"]):
                raise WebAuthnRefused("the security key challenge has expired: start again",
                                      "webauthn_challenge_expired")
            return
        raise WebAuthnRefused("too many concurrent uses of this challenge",
                              "webauthn_challenge_used")


def _key(challenge: bytes) -> str:
    return PREFIX + hashlib.sha256(challenge).hexdigest()
