"""One-time sign-up tokens and the sign-up link that carries them.

Called by the auth server (``lmctl users add`` / ``users invite`` create a token; the proxy's
sign-up endpoint checks it, then marks it used) and by ``lmsh signup`` (``parse_signup_url``).

    lmctl users invite alice ──▶ auth: new_signup_token() ──▶ stores SignupToken under
                                       │                       signup_token_id(secret)
                                       ▼
       https://proxy:3080/web/signup/<secret>?ca_pin=sha256:<hex>  (printed once, never stored)
                                       │
    lmsh signup ──▶ proxy ──▶ auth /v1/signup/begin: check_signup_token(); with_totp_secret()
                              (a pending TOTP secret kept in the record; the link stays usable)
    lmsh signup ──▶ proxy ──▶ auth /v1/signup: check the code of that secret; mark_used(); set
                              password and TOTP, in one transaction

The secret is 32 random bytes (urlsafe base64, 43 characters). The stored record holds only
its SHA-256, so a dump of the backend yields no usable link; the same hash is the record's
storage key, found again from the secret the user presents. ``ca_pin`` is the SHA-256 of the
proxy CA's public key, which lets ``lmsh signup`` trust the proxy on first contact.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from limen.errors import AccessDenied, BadParameter

__all__ = [
    "MAX_SIGNUP_TOKEN_TTL",
    "SIGNUP_TOKEN_TTL",
    "SignupLink",
    "SignupToken",
    "build_signup_url",
    "check_signup_token",
    "mark_used",
    "new_signup_token",
    "parse_signup_url",
    "signup_token_id",
    "with_totp_secret",
]

SIGNUP_TOKEN_TTL = 3600.0
"""Default lifetime of a sign-up link, in seconds (Teleport's: one hour)."""
MAX_SIGNUP_TOKEN_TTL = 48 * 3600.0
"""Longest lifetime an administrator may ask for (Teleport's: 48 hours)."""

_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_PIN_RE = re.compile(r"sha256:[0-9a-f]{64}")
_PATH_PREFIX = "/web/signup/"


@dataclass(frozen=True)
class SignupToken:
    """The stored half of a sign-up token: no secret, only its hash."""

    token_hash: str = field(repr=False)
    """Hex SHA-256 of the secret; also the key the record is stored under."""
    user: str
    """The user this link lets choose a password."""
    created: float
    """Unix time the link was made."""
    expires: float
    """Unix time after which the link no longer works."""
    used: bool = False
    """Set once the link has been used; a used link never works again."""
    totp_secret: str | None = field(default=None, repr=False)
    """The TOTP secret shown to the user while signing up, not yet confirmed with a code; it
    becomes the user's only when the sign-up finishes with a right code."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form the auth server stores."""
        return {
            "token_hash": self.token_hash,
            "user": self.user,
            "created": self.created,
            "expires": self.expires,
            "used": self.used,
            **({"totp_secret": self.totp_secret} if self.totp_secret else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignupToken:
        """Read a stored record back; ``BadParameter`` names the first malformed field."""
        if not isinstance(data, Mapping):
            raise BadParameter("sign-up token record must be a mapping")
        token_hash = data.get("token_hash")
        if not isinstance(token_hash, str) or not re.fullmatch(r"[0-9a-f]{64}", token_hash):
            raise BadParameter("sign-up token record: token_hash must be 64 hex digits")
        user = data.get("user")
        if not isinstance(user, str) or not user:
            raise BadParameter("sign-up token record: user must be a non-empty string")
        times = {}
        for name in ("created", "expires"):
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BadParameter(f"sign-up token record: {name} must be a number")
            times[name] = float(value)
        used = data.get("used", False)
        if not isinstance(used, bool):
            raise BadParameter("sign-up token record: used must be true or false")
        totp_secret = data.get("totp_secret")
        if totp_secret is not None and (not isinstance(totp_secret, str) or not totp_secret):
            raise BadParameter("sign-up token record: totp_secret must be a non-empty string")
        return cls(token_hash, user, times["created"], times["expires"], used, totp_secret)


@dataclass(frozen=True)
class SignupLink:
    """A parsed sign-up link: where the proxy is, the secret, and the proxy CA's pin."""

    proxy: str
    """``host:port`` of the proxy's web address."""
    token: str = field(repr=False)
    """The sign-up secret."""
    ca_pin: str | None
    """``sha256:<hex>`` of the proxy CA's public key, or None when the link has no pin."""


def signup_token_id(secret: str) -> str:
    """The hex SHA-256 of ``secret``: the stored record's ``token_hash`` and storage key."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_signup_token(
    user: str, *, now: float, ttl: float = SIGNUP_TOKEN_TTL
) -> tuple[str, SignupToken]:
    """A fresh sign-up token for ``user``: the secret (put it in the link, show it once, never
    store it) and the record to store."""
    if not isinstance(user, str) or not user:
        raise BadParameter("a sign-up token needs a user name")
    if not math.isfinite(ttl) or not 0 < ttl <= MAX_SIGNUP_TOKEN_TTL:
        raise BadParameter(
            f"sign-up link lifetime must be between 0 and {MAX_SIGNUP_TOKEN_TTL / 3600:g} hours"
        )
    secret = secrets.token_urlsafe(32)
    record = SignupToken(
        token_hash=signup_token_id(secret), user=user, created=now, expires=now + ttl
    )
    return secret, record


def check_signup_token(record: SignupToken, secret: str, now: float) -> None:
    """Raise ``AccessDenied`` unless ``secret`` is ``record``'s secret, unused and unexpired.

    Reasons: "invalid sign-up link", "sign-up link was already used", "sign-up link has
    expired". The hashes are compared in constant time.
    """
    presented = signup_token_id(secret) if isinstance(secret, str) else ""
    if not hmac.compare_digest(presented.encode(), record.token_hash.encode()):
        raise AccessDenied("invalid sign-up link")
    if record.used:
        raise AccessDenied("sign-up link was already used")
    if now >= record.expires:
        raise AccessDenied("sign-up link has expired")


def mark_used(record: SignupToken) -> SignupToken:
    """The record after its link has been used; store it (or delete it) before answering.
    The pending TOTP secret is dropped: it now lives in the user's credentials only."""
    return replace(record, used=True, totp_secret=None)


def with_totp_secret(record: SignupToken, totp_secret: str) -> SignupToken:
    """The record holding the TOTP secret shown to the user, awaiting confirmation."""
    return replace(record, totp_secret=totp_secret)


def _check_proxy(proxy: str) -> None:
    bad = BadParameter(f"proxy address {proxy!r} must be host or host:port")
    if not isinstance(proxy, str) or not proxy or any(c in proxy for c in "/?#@ \t\r\n\\"):
        raise bad
    parts = urllib.parse.urlsplit(f"https://{proxy}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise bad from None
    if not parts.hostname:
        raise bad


def _check_pin(ca_pin: str) -> str:
    pin = ca_pin.lower() if isinstance(ca_pin, str) else ""
    if not _PIN_RE.fullmatch(pin):
        raise BadParameter("CA pin must be 'sha256:' followed by 64 hex digits")
    return pin


def build_signup_url(proxy: str, token: str, ca_pin: str | None = None) -> str:
    """``https://<proxy>/web/signup/<token>?ca_pin=sha256:<hex>`` (no query without a pin)."""
    _check_proxy(proxy)
    if not isinstance(token, str) or not _SECRET_RE.fullmatch(token):
        raise BadParameter("sign-up token must be 43 urlsafe base64 characters")
    url = f"https://{proxy}{_PATH_PREFIX}{token}"
    if ca_pin is not None:
        url += "?" + urllib.parse.urlencode({"ca_pin": _check_pin(ca_pin)}, safe=":")
    return url


def parse_signup_url(url: str) -> SignupLink:
    """Read a sign-up link back into proxy, token and CA pin; ``BadParameter`` if malformed."""
    bad = BadParameter(
        "sign-up link must look like https://HOST:PORT/web/signup/TOKEN?ca_pin=sha256:HEX"
    )
    if not isinstance(url, str):
        raise bad
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme != "https" or not parts.netloc or not parts.path.startswith(_PATH_PREFIX):
        raise bad
    _check_proxy(parts.netloc)
    token = parts.path[len(_PATH_PREFIX) :]
    if not _SECRET_RE.fullmatch(token):
        raise bad
    pins = urllib.parse.parse_qs(parts.query).get("ca_pin", [])
    if len(pins) > 1:
        raise BadParameter("sign-up link has more than one ca_pin")
    return SignupLink(proxy=parts.netloc, token=token, ca_pin=_check_pin(pins[0]) if pins else None)
