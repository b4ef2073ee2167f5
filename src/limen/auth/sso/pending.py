"""Single sign-on logins started and not yet finished, kept in auth's backend for 5 minutes.

A login's ``state`` (32 random bytes, URL-safe) is what the provider hands back with the code;
the backend keeps, under the SHA-256 of the state (so the store never holds it), what the
finish needs: the connector, the ``nonce`` and PKCE ``code_verifier`` sent with the
authorization request, the redirect URI (the client's loopback listener), the client's public
key the certificates will be issued for, and the requested lifetime. :meth:`PendingLogins.take`
deletes the record on the revision it read, so a state is used once across every auth replica:
a replay, an unknown or an expired state are refused alike. The start is not authenticated, so
at most ``MAX_PENDING`` logins wait at once, ``MAX_PER_ADDRESS`` of them started from one
address (as the proxy reports it). Used by :class:`limen.auth.sso.oidc.OIDCLogins`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass

from limen.auth.sso.errors import SSOFailure
from limen.backend.base import Backend
from limen.errors import CompareFailed, LimitExceeded, NotFound

__all__ = ["LIFETIME_SECONDS", "MAX_PENDING", "MAX_PER_ADDRESS", "PendingLogin",
           "PendingLogins", "pkce_challenge"]

PREFIX = "/sso/oidc/pending/"
LIFETIME_SECONDS = 300.0
MAX_PENDING = 1000
MAX_PER_ADDRESS = 20


def _random() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier`` (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _key(state: str) -> str:
    return PREFIX + hashlib.sha256(state.encode()).hexdigest()


@dataclass(frozen=True)
class PendingLogin:
    """What the finish of one login needs; ``expires`` is a Unix time of auth's clock."""

    connector: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    public_key: str
    ttl_seconds: int | None
    expires: float
    remote_addr: str = ""
    kind: str = "oidc"
    """The connector's kind (``oidc``, ``github``): a state is finished by its own kind."""
    web: bool = False
    """Started by the web UI (finished at the proxy's web callback), not by lmsh."""


class PendingLogins:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def begin(self, *, connector: str, redirect_uri: str, public_key: str,
                    ttl_seconds: int | None, now: float, remote_addr: str = "",
                    kind: str = "oidc", web: bool = False) -> tuple[str, PendingLogin]:
        """A new state and its record (stored)."""
        waiting = await self.backend.list(PREFIX)
        if len(waiting) >= MAX_PENDING:
            raise LimitExceeded("too many single sign-on logins are waiting; try again in a "
                                "few minutes")
        if remote_addr and sum(json.loads(i.value).get("remote_addr") == remote_addr
                               for i in waiting) >= MAX_PER_ADDRESS:
            raise LimitExceeded("too many single sign-on logins started from your address are "
                                "waiting; finish one, or start again in 5 minutes")
        state = _random()
        login = PendingLogin(connector, _random(), _random(), redirect_uri, public_key,
                             ttl_seconds, now + LIFETIME_SECONDS, remote_addr, kind, web)
        await self.backend.create(_key(state), json.dumps(asdict(login)).encode(),
                                  expires=now + LIFETIME_SECONDS)
        return state, login

    async def take(self, state: str, now: float, *, kind: str, web: bool = False
                   ) -> PendingLogin:
        """The record of ``state``, deleted: once only, only before it expires, and only
        by the finish of the connector kind (``kind``) and the client (lmsh, or the web UI
        with ``web``) that started it."""
        item = await self.backend.get(_key(state)) if state else None
        if item is None:
            raise SSOFailure("unknown_state", "this login is unknown, already used or expired; "
                             "start again")
        try:
            await self.backend.delete(item.key, expected_revision=item.revision)
        except (CompareFailed, NotFound):
            raise SSOFailure("unknown_state", "this login is unknown, already used or "
                             "expired; start again") from None
        login = PendingLogin(**json.loads(item.value))
        if now >= login.expires:
            raise SSOFailure("expired_state", "this login took longer than 5 minutes; start "
                             "again")
        if login.kind != kind:
            raise SSOFailure("wrong_kind", f"this login was started with a {login.kind} "
                             f"connector, not a {kind} one; start again")
        if login.web != web:
            raise SSOFailure("wrong_client", "this login was started "
                             + ("in the web UI, not by lmsh" if login.web else
                                "by lmsh, not in the web UI") + "; start again")
        return login
